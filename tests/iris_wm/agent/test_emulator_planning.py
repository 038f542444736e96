"""The emulator as a perfect model: a sequence's score equals what the real (wrapped) environment earns playing it
from the same state, a lost life ending it with the penalty, and scoring leaves the real environment where it was;
with the agent, its critic reads each played sequence as a step-by-step loop does and its actor proposes its own
actions; `iris-wm evaluate --planner.model emulator` plans with it, with and without an agent."""

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from iris_wm.agent.actor_critic import ActorCritic, ActorCriticConfig
from iris_wm.agent.emulator_planning import EmulatorReturns, encode_distinct
from iris_wm.agent.planning import PlannerConfig
from iris_wm.envs.atari import EnvConfig, env_snapshot, make_env, restore_env
from iris_wm.evaluate.play import evaluate
from iris_wm.runtime.errors import ConfigError

ENV = dataclasses.replace(EnvConfig.evaluation(), max_episode_steps=None)


def test_a_sequences_score_is_what_the_real_environment_earns_playing_it():
    env = make_env(ENV)
    env.reset(seed=3)
    for _ in range(3):
        env.step(1)  # FIRE: the ball is in play
    scorer = EmulatorReturns(ENV, gamma=0.97, end_penalty=2.0)
    scorer.set_context([env])
    rng = np.random.default_rng(0)
    sequences = torch.from_numpy(rng.integers(0, 4, (1, 24, 40)))
    scored = scorer(sequences)[0]
    before = env_snapshot(env)
    lives = env.unwrapped.ale.lives()
    real, ended = [], 0
    for plan in sequences[0].tolist():
        restore_env(env, before)
        total = 0.0
        for t, action in enumerate(plan):
            _, reward, terminated, _, info = env.step(action)
            total += 0.97**t * reward
            if terminated or info["lives"] < lives:
                total -= 0.97**t * 2.0
                ended += 1
                break
        real.append(total)
    assert scored.tolist() == pytest.approx(real, abs=1e-5)
    assert 0 < ended < 24 and max(real) > 0  # the sequences both score bricks and lose lives
    restore_env(env, before)
    scorer.set_context([env])
    assert torch.equal(scorer(sequences)[0], scored)  # scoring left the real emulator's state as it was
    with pytest.raises(ConfigError, match="only Atari"):
        EmulatorReturns(EnvConfig(suite="point-mass"))


def test_evaluate_plans_with_the_emulator_without_an_agent(tmp_path):
    env = dataclasses.replace(ENV, max_episode_steps=40)
    plan = PlannerConfig(model="emulator", samples=6, elites=2, horizon=4, iterations=2, prior_samples=0)
    result = evaluate(str(tmp_path / "mpc.json"), None, env, episodes=2, num_envs=2, seed=7, planner=plan)
    assert result["policy"] == "mpc:emulator" and result["lengths"] == [40, 40]
    assert result["planner"]["model"] == "emulator"


class Quadrants:
    """A stand-in tokenizer: a frame's 4 tokens are its quadrants' mean brightness in 4 levels."""

    def encode(self, frames):
        q = frames.float().unflatten(2, (2, 32)).unflatten(4, (2, 32)).mean((1, 3, 5)).flatten(1)
        return (q * 4).long().clamp(0, 3)  # Breakout's frames are dark: spread the low levels


def _actor_critic():
    torch.manual_seed(0)
    config = ActorCriticConfig(num_actions=4, observation="tokens", vocab_size=4, tokens_per_frame=4, lstm_dim=8)
    ac = ActorCritic(dataclasses.replace(config, encoder_dim=16)).eval()
    with torch.no_grad():
        ac.critic.weight.normal_(std=1.0)
    return ac


def test_each_distinct_frame_is_encoded_once_and_every_frame_gets_its_own_tokens():
    seen = []

    class Counting(Quadrants):
        def encode(self, frames):
            seen.append(len(frames))
            return super().encode(frames)

    rng = np.random.default_rng(0)
    quadrants = np.array([[0, 0, 0, 0], [1, 0, 0, 0], [0, 1, 1, 0], [1, 1, 1, 1], [0, 0, 0, 1]], np.uint8)
    distinct = quadrants.reshape(5, 1, 2, 1, 2, 1).repeat(3, 1).repeat(32, 3).repeat(32, 5).reshape(5, 3, 64, 64)
    order = rng.integers(0, 5, 40)
    order[:5] = np.arange(5)
    frames = distinct[order]
    tokens = encode_distinct(Counting(), frames, torch.device("cpu"))
    assert seen == [5]
    assert torch.equal(tokens, Quadrants().encode(torch.from_numpy(frames)))
    assert len(set(map(tuple, tokens.tolist()))) == 5  # the frames' tokens differ, so a mix-up would show


@pytest.mark.parametrize("policy_prior", [0.0, 0.6])
def test_with_the_agent_the_critic_reads_each_played_sequence_and_the_actor_proposes(policy_prior):
    ac, tokenizer = _actor_critic(), Quadrants()
    env = make_env(ENV)
    frame, _ = env.reset(seed=3)
    for _ in range(3):
        frame, *_ = env.step(1)
    current = tokenizer.encode(torch.from_numpy(frame[None]))
    recurrent = (torch.randn(1, 8), torch.randn(1, 8))
    scorer = EmulatorReturns(ENV, 0.9, 1.0, actor_critic=ac, tokenizer=tokenizer, policy_prior=policy_prior)
    scorer.set_context([env], current, recurrent)
    sequences = torch.from_numpy(np.random.default_rng(1).integers(0, 4, (1, 12, 40)))
    with torch.no_grad():
        scored = scorer(sequences)[0]
        before = env_snapshot(env)
        lives, survived = env.unwrapped.ale.lives(), 0
        for n, plan in enumerate(sequences[0].tolist()):
            restore_env(env, before)
            state, tokens, total = recurrent, current, 0.0
            for t, action in enumerate(plan):
                out = ac(tokens, state)
                state = out.state
                total += 0.9**t * policy_prior * float(out.logits.log_softmax(-1)[0, action])
                obs, reward, terminated, _, info = env.step(action)
                total += 0.9**t * reward
                if terminated or info["lives"] < lives:
                    total -= 0.9**t
                    break
                tokens = tokenizer.encode(torch.from_numpy(obs[None]))
            else:
                total += 0.9**40 * float(ac(tokens, state).value)
                survived += 1
            assert scored[n].item() == pytest.approx(total, abs=1e-4)
    assert 0 < survived < 12
    with torch.no_grad():
        ac.actor.bias.copy_(torch.tensor([0.0, 0.0, 30.0, 0.0]))  # the actor always moves right
    restore_env(env, before)
    scorer.set_context([env], current, recurrent)
    prior = scorer.prior(3, 5, torch.Generator().manual_seed(0))
    assert prior.shape == (1, 3, 5) and bool((prior == 2).all())


def test_evaluate_plans_with_the_emulator_and_the_agent(tmp_path, monkeypatch):
    ac = _actor_critic()
    loaded = SimpleNamespace(actor_critic=ac, tokenizer=Quadrants(), world_model=torch.nn.Linear(1, 1))
    monkeypatch.setattr("iris_wm.evaluate.play.load_agent", lambda *a, **k: loaded)
    env = dataclasses.replace(ENV, max_episode_steps=12)
    plan = PlannerConfig(model="emulator", samples=4, elites=2, horizon=3, iterations=1, prior_samples=2)
    result = evaluate(str(tmp_path / "mpc.json"), "agent.ckpt", env, episodes=2, num_envs=2, seed=7, planner=plan)
    assert result["policy"] == "mpc:emulator:agent.ckpt" and result["lengths"] == [12, 12]
