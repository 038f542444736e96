"""`iris-wm collect --env.suite point-mass`: continuous actions, states and fps into a schema-v2 store, resumable
reproducible like an Atari collection; Atari settings are what they were before the suites."""

import numpy as np

from iris_wm.data.collect import collect
from iris_wm.data.spaces import ActionSpace
from iris_wm.data.store import EpisodeStore
from iris_wm.envs.atari import EnvConfig


def test_the_point_mass_suite_fills_a_store_with_box_actions_states_and_fps(tmp_path):
    env = EnvConfig(suite="point-mass", size=16, max_episode_steps=30)
    collect(tmp_path / "a", 170, env, seed=3, flush_steps=40, progress=False)
    again = collect(tmp_path / "a", 170, env, seed=3, flush_steps=40, progress=False)  # done already: adds nothing
    assert again.steps_added == 0
    collect(tmp_path / "b", 170, env, seed=3, flush_steps=40, progress=False)
    a, b = EpisodeStore.open(tmp_path / "a"), EpisodeStore.open(tmp_path / "b")
    assert a.action_space == ActionSpace.box([-1, -1], [1, 1]) and a.state.names == ("x", "y", "vx", "vy")
    assert a.fps == 20 and a.manifest["settings"]["env"]["game"] == "point-mass"
    assert a.num_steps == b.num_steps >= 170
    for name in ("action", "state", "reward", "truncated"):
        assert np.array_equal(getattr(a.columns, name), getattr(b.columns, name)), name
    assert set(a.episode_lengths[:-1]) == {30}  # every whole episode runs to the cap
    # The state recorded with each frame is the one drawn in it (the mass's pixel)
    frames, states = a.observations(np.arange(5)), a.columns.state[:5]
    for frame, (x, y, _, _) in zip(frames, states, strict=True):
        assert frame[0, min(int(y * 16), 15), min(int(x * 16), 15)] == 255


def test_atari_settings_do_not_name_the_suite():
    assert "suite" not in EnvConfig().to_dict() and EnvConfig().max_episode_steps == 27_000
    assert EnvConfig(suite="point-mass").max_episode_steps == 50
