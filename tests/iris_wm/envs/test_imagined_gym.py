"""Imagination behind gymnasium's API: a restart equals a fresh prime, gymnasium's checker passes, and the vector
env's next-step autoreset behaves as gymnasium 1.x's does."""

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from helpers import tiny
from iris_wm.envs.imagination import ImaginationConfig, ImaginationEnv
from iris_wm.envs.imagined_gym import ImaginationGymEnv, ImaginationVectorEnv
from sequence_model.world_model import WorldModel
from tokenizer.model import Tokenizer

K, V, A, C = 4, 16, 3, 5
GREEDY = ImaginationConfig(temperature=0.0)
SAMPLED = ImaginationConfig.iris()  # every outcome sampled: episodes end at random, some reach the horizon


@pytest.fixture(scope="module")
def world_model():
    torch.manual_seed(0)
    return WorldModel(tiny.world_model_config(V, K, A, C, dropout=0.0)).eval()


@pytest.fixture(scope="module")
def tokenizer():
    torch.manual_seed(1)
    return Tokenizer(tiny.tokenizer_config(V)).eval()


def _starts(n=6, steps=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, V, (n, steps, K), generator=g), torch.randint(0, A, (n, steps - 1), generator=g)


def test_a_restart_equals_a_fresh_prime_for_every_row(world_model):
    starts, actions = _starts(3, steps=2)
    env = ImaginationEnv(world_model, config=GREEDY)
    env.reset(starts[:2], actions[:2])
    env.step(torch.tensor([1, 2]))
    continuing = (env.observations[0, -2:].clone(), env.actions[0, -1:].clone())
    env.restart(torch.tensor([False, True]), starts[2:], actions[2:])
    moves = [torch.tensor([0, 1]), torch.tensor([2, 2]), torch.tensor([1, 0])]
    together = [env.step(a) for a in moves]
    for row, (obs, act) in enumerate([continuing, (starts[2], actions[2])]):
        alone = ImaginationEnv(world_model, config=GREEDY)
        alone.reset(obs[None], act[None])
        for step, a in zip(together, moves, strict=True):
            single = alone.step(a[row : row + 1])
            assert torch.equal(single.tokens[0], step.tokens[row])
            assert torch.allclose(single.reward[0], step.reward[row], atol=1e-6)
            assert bool(single.terminated[0]) == bool(step.terminated[row])


@pytest.mark.parametrize("observation", ["tokens", "frames"])
def test_gymnasiums_checker_passes(world_model, tokenizer, observation):
    starts, actions = _starts()
    env = ImaginationGymEnv(world_model, starts, actions, tokenizer, observation, horizon=5, config=SAMPLED)
    check_env(env, skip_render_check=True)
    obs, info = env.reset(seed=3)
    assert env.observation_space.contains(obs) and 0 <= info["start"] < len(starts)


def test_the_same_seed_gives_the_same_episode(world_model):
    starts, actions = _starts()
    env = ImaginationGymEnv(world_model, starts, actions, horizon=10, config=SAMPLED)
    runs = []
    for _ in range(2):
        obs, _ = env.reset(seed=11)
        trace = [obs]
        for a in [0, 1, 2, 1, 0]:
            obs, reward, terminated, truncated, _ = env.step(a)
            trace += [obs, reward, terminated, truncated]
            if terminated or truncated:
                break
        runs.append(trace)
    assert all(np.array_equal(x, y) for x, y in zip(*runs, strict=True))


def test_the_vector_env_autoresets_on_the_next_step_as_gymnasium_does(world_model):
    starts, actions = _starts(8, steps=2)
    horizon, n = 6, 4
    env = ImaginationVectorEnv(world_model, starts, n, actions, horizon=horizon, config=SAMPLED)
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs) and obs.shape == (n, K)
    assert np.array_equal(obs, starts[info["start"], -1].numpy())
    ended, elapsed, episodes, truncations = np.zeros(n, bool), np.zeros(n, int), 0, 0
    env.action_space.seed(0)
    for _ in range(1000):
        obs, rewards, terminated, truncated, info = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs)
        if ended.any():
            # The envs that ended at the previous step start again: their first observation, nothing else.
            assert np.array_equal(info["_start"], ended)
            assert np.array_equal(obs[ended], starts[info["start"][ended], -1].numpy())
            assert not rewards[ended].any() and not terminated[ended].any() and not truncated[ended].any()
        else:
            assert "_start" not in info
        elapsed = np.where(ended, 0, elapsed + 1)
        assert np.array_equal(truncated, ~terminated & (elapsed >= horizon))
        assert not (terminated & truncated).any()
        ended = terminated | truncated
        episodes += int(ended.sum())
        truncations += int(truncated.sum())
    assert episodes > 50 and 0 < truncations < episodes, (episodes, truncations)


def test_bad_arguments_are_refused(world_model):
    starts, actions = _starts()
    with pytest.raises(ValueError, match="tokens per frame"):
        ImaginationGymEnv(world_model, starts[:, :, :2], actions)
    with pytest.raises(ValueError, match="start_actions must be"):
        ImaginationGymEnv(world_model, starts, actions[:, :0][:2])
    with pytest.raises(ValueError, match="pass the tokenizer"):
        ImaginationGymEnv(world_model, starts, actions, observation="frames")
    with pytest.raises(ValueError, match="num_envs must be at least 1"):
        ImaginationVectorEnv(world_model, starts, 0, actions)
    env = ImaginationVectorEnv(world_model, starts, 2, actions)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"expected 2 action\(s\) in \[0, 3\)"):
        env.step([0, 3])
