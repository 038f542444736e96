"""`iris-wm evaluate --record`: the episodes played, kept as an episode store that replays exactly."""

import json

import numpy as np
import pytest

from iris_wm.data.store import EpisodeStore
from iris_wm.envs.atari import EnvConfig, make_env
from iris_wm.evaluate.play import evaluate
from iris_wm.runtime.errors import ConfigError

ENV = EnvConfig(suite="point-mass", max_episode_steps=12)


def _replay(env_config: EnvConfig, seed: int, actions: np.ndarray):
    env = make_env(env_config)
    obs, info = env.reset(seed=seed)
    frames, states, rewards, ends = [obs], [info["state"]], [], []
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        frames.append(obs), states.append(info["state"]), rewards.append(reward), ends.append((terminated, truncated))
    env.close()
    return np.stack(frames[:-1]), np.stack(states[:-1]), np.array(rewards, np.float32), ends


def test_recorded_episodes_replay_exactly_and_sum_to_the_returns(tmp_path):
    record = tmp_path / "played"
    result = evaluate(str(tmp_path / "random.json"), None, ENV, episodes=3, num_envs=2, seed=5, record=str(record))
    store = EpisodeStore.open(record)
    assert store.num_episodes == 3 and store.state is not None and not store.action_space.is_discrete
    assert not (tmp_path / "played.partial").exists()
    assert store.manifest["settings"]["recorded"]["policy"] == "random"
    assert json.loads((tmp_path / "random.json").read_text())["record"] == str(record)
    starts = {make_env(ENV).reset(seed=5 + i)[0].tobytes(): i for i in range(3)}
    seen = []
    for position in range(3):
        episode = store.episode(position)
        index = starts[episode.observations[0].tobytes()]  # which seed this one was (they end in their own order)
        seen.append(index)
        frames, states, rewards, ends = _replay(ENV, 5 + index, episode.actions)
        np.testing.assert_array_equal(episode.observations, frames)
        np.testing.assert_array_equal(episode.states, states)
        np.testing.assert_array_equal(episode.rewards, rewards)
        assert [(bool(t), bool(u)) for t, u in zip(episode.terminated, episode.truncated, strict=True)] == ends
        assert float(episode.rewards.sum()) == pytest.approx(result["returns"][index])
        assert len(episode) == result["lengths"][index]
    assert sorted(seen) == [0, 1, 2]


def test_record_refuses_a_folder_that_holds_data_and_restarts_an_interrupted_one(tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="exists already: the episodes played go into a new store"):
        evaluate(str(tmp_path / "r.json"), None, ENV, episodes=1, num_envs=1, record=str(taken))
    assert (taken / "notes.txt").read_text() == "keep me"
    stale = tmp_path / "fresh.partial"
    stale.mkdir()
    (stale / "junk").write_text("from an evaluation that was killed")
    evaluate(str(tmp_path / "r.json"), None, ENV, episodes=1, num_envs=1, record=str(tmp_path / "fresh"))
    assert EpisodeStore.open(tmp_path / "fresh").num_episodes == 1 and not stale.exists()
