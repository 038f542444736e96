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


def _dmc_or_skip():
    """Skip, saying why, where dm_control or headless MuJoCo rendering (EGL) is missing."""
    import pytest

    try:
        from iris_wm.envs.dmc import DMCEnv

        DMCEnv("reacher-easy", size=16).reset(seed=0)
    except Exception as err:  # noqa: BLE001  (any failure to render is a reason to skip, named)
        pytest.skip(f"dm_control cannot render headless here ({type(err).__name__}: {err}); make installs Mesa's EGL")


def test_the_dmc_suite_collects_a_mujoco_task_with_frames_states_and_box_actions(tmp_path):
    _dmc_or_skip()
    env = EnvConfig(suite="dmc", task="reacher-easy", size=32, max_episode_steps=40)
    summary = collect(tmp_path / "dmc", 60, env, seed=1, flush_steps=40, progress=False)
    store = EpisodeStore.open(tmp_path / "dmc")
    assert summary.total_steps == 60 and store.episode_lengths.tolist() == [40, 20]
    assert store.action_space == ActionSpace.box([-1, -1], [1, 1]) and store.fps == 25.0  # 0.02 s x action repeat 2
    assert store.state.names[:2] == ("position.0", "position.1") and store.state.size == 6
    frames = store.observations(np.arange(60))
    assert frames.shape == (60, 3, 32, 32) and np.abs(np.diff(frames.astype(int), axis=0)).mean() > 0.1  # it moves
    assert store.manifest["settings"]["env"]["task"] == "reacher-easy"


def test_bad_dmc_settings_are_refused_with_the_fix():
    import pytest

    from iris_wm.runtime.errors import ConfigError

    with pytest.raises(ConfigError, match="needs a task"):
        EnvConfig(suite="dmc")
    with pytest.raises(ConfigError, match="needs --env.suite dmc"):
        EnvConfig(task="reacher-easy")
    _dmc_or_skip()
    from iris_wm.envs.dmc import split_task

    with pytest.raises(ConfigError, match="reacher-easy"):
        split_task("reacher-eazy")
