"""The emulator as a perfect model: a sequence's score equals what the real (wrapped) environment earns playing it
from the same state, a lost life ending it with the penalty, and scoring leaves the real environment where it was;
`iris-wm evaluate --planner.model emulator` plans with it."""

import dataclasses

import numpy as np
import pytest
import torch

from iris_wm.agent.emulator_planning import EmulatorReturns
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
