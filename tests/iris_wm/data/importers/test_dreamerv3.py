"""`iris-wm import dreamerv3`: both forms of DreamerV3 data, written by the test from known transitions, come back
bitwise after the documented offsets; an episode split across replay chunks is reassembled; malformed input is
refused with nothing written; a killed import resumes to the uninterrupted store."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers.control import conditioning_after_training, point_mass_store, tokens_of
from iris_wm.data.importers.dreamerv3 import DreamerOptions, plan_dreamerv3
from iris_wm.data.importers.writer import SourceError, write_import
from iris_wm.data.store import EpisodeStore

SIZE = 16
ZERO = "0" * 22


def transitions(lengths, seed=0, discrete=True, terminal=None):
    """Per episode: T + 1 observations, the T actions taken (one-hot of 3, or 2-D in [-1, 1]) and their rewards."""
    rng = np.random.default_rng(seed)
    out = []
    for i, T in enumerate(lengths):
        actions = np.eye(3, dtype=np.float32)[rng.integers(0, 3, T)] if discrete else rng.uniform(-1, 1, (T, 2))
        out.append(
            dict(
                image=rng.integers(0, 256, (T + 1, SIZE, SIZE, 3), dtype=np.uint8),
                position=rng.normal(size=(T + 1, 2)).astype(np.float32),
                velocity=rng.normal(size=(T + 1, 1)).astype(np.float32),
                action=actions.astype(np.float32),
                reward=rng.normal(size=T).astype(np.float32),
                terminal=bool(i % 2 == 0) if terminal is None else terminal,
            )
        )
    return out


def torch_rows(e):
    """dreamerv3-torch: row t holds o_t with the action and reward that led to it (row 0: zeros)."""
    T = len(e["action"])
    first, end = np.zeros(T + 1, bool), np.zeros(T + 1, bool)
    first[0], end[-1] = True, e["terminal"]
    return dict(
        image=e["image"],
        position=e["position"],
        velocity=e["velocity"],
        action=np.concatenate([np.zeros_like(e["action"][:1]), e["action"]]),
        reward=np.concatenate([[0.0], e["reward"]]).astype(np.float32),
        is_first=first,
        is_terminal=end,
        discount=(1.0 - end).astype(np.float32),
    )


def chunk_rows(e, rng):
    """danijar/dreamerv3: row t holds o_t, the reward on arriving there and the action chosen at it."""
    T = len(e["action"])
    first, last, terminal = np.zeros(T + 1, bool), np.zeros(T + 1, bool), np.zeros(T + 1, bool)
    first[0], last[-1], terminal[-1] = True, True, e["terminal"]
    final = np.clip(rng.normal(size=e["action"][:1].shape), -1, 1).astype(np.float32)  # chosen, never taken
    return dict(
        image=e["image"],
        position=e["position"],
        velocity=e["velocity"],
        action=np.concatenate([e["action"], final]),
        reward=np.concatenate([[0.0], e["reward"]]).astype(np.float32),
        is_first=first,
        is_last=last,
        is_terminal=terminal,
    )


def write_episodes(folder: Path, episodes):
    folder.mkdir(parents=True)
    for i, e in enumerate(episodes):
        rows = torch_rows(e)
        np.savez_compressed(folder / f"20240101T0000{i:02d}-{i:032x}-{len(rows['reward'])}.npz", **rows)
    return folder


def write_chunks(folder: Path, episodes, size=7, seed=0):
    """One worker's stream of episodes cut into chunks of ``size`` rows, each naming its successor."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    parts = [chunk_rows(e, rng) for e in episodes]
    stream = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    n = len(stream["reward"])
    bounds = list(range(0, n, size))
    ids = [f"{i + 1:022d}" for i in range(len(bounds))]
    for i, a in enumerate(bounds):
        succ = ids[i + 1] if i + 1 < len(ids) else ZERO
        chunk = {k: v[a : a + size] for k, v in stream.items()}
        np.savez_compressed(folder / f"20240101T000000F{i:06d}-{ids[i]}-{succ}-{len(chunk['reward'])}.npz", **chunk)
    return folder


def assert_stored(store: EpisodeStore, episodes, discrete=True):
    assert store.num_episodes == len(episodes)
    assert store.num_steps == sum(len(e["action"]) for e in episodes)
    for i, e in enumerate(episodes):
        got = store.episode(i)
        assert np.array_equal(got.observations, e["image"][:-1].transpose(0, 3, 1, 2))
        want = e["action"].argmax(1) if discrete else e["action"]
        assert np.array_equal(got.actions, want.astype(got.actions.dtype))
        assert np.array_equal(got.rewards, e["reward"])
        if store.state is not None:
            assert np.array_equal(got.states, np.concatenate([e["position"], e["velocity"]], 1)[:-1])
        assert bool(got.terminated[-1]) == e["terminal"] and bool(got.truncated[-1]) != e["terminal"]


def test_episode_files_import_bitwise_after_the_offsets(tmp_path):
    episodes = transitions([5, 9, 3])
    src = write_episodes(tmp_path / "src", episodes)
    plan = plan_dreamerv3(src, DreamerOptions(state_keys=("position", "velocity")))
    summary = write_import(tmp_path / "store", plan, progress=False)
    store = EpisodeStore.open(tmp_path / "store")
    assert summary.episodes == 3 and summary.steps == 17 and not summary.skipped
    assert store.action_space.is_discrete and store.action_space.n == 3
    assert store.state.names == ("position.0", "position.1", "velocity.0")
    assert store.manifest["settings"]["source"]["form"] == "episodes"
    assert_stored(store, episodes)
    assert write_import(tmp_path / "store", plan, progress=False).episodes == 0  # done: nothing added


def test_replay_chunks_reassemble_episodes_across_chunk_boundaries(tmp_path):
    episodes = transitions([5, 11, 2, 8], seed=1, discrete=False)
    src = write_chunks(tmp_path / "src", episodes, size=7)
    assert len(list(src.glob("*.npz"))) == 5  # 30 rows: every episode but the first crosses a boundary
    plan = plan_dreamerv3(src, DreamerOptions(state_keys=("position", "velocity")))
    write_import(tmp_path / "store", plan, progress=False)
    store = EpisodeStore.open(tmp_path / "store")
    assert store.action_space.shape == (2,) and store.action_space.low == (-1.0, -1.0)
    assert_stored(store, episodes, discrete=False)
    # A chain whose first chunk is gone starts inside an episode: those rows are reported, never half-imported.
    (sorted(src.glob("*.npz"))[0]).unlink()
    plan = plan_dreamerv3(src, DreamerOptions(state_keys=("position", "velocity")))
    # (chunk 0 held episode 0 and the first row of episode 1: the other 11 rows of episode 1 are reported)
    assert len(plan.episodes) == 2 and "11 rows before the chain's first is_first" in plan.skipped[0]


def _nothing_written(tmp_path, src, match, **options):
    with pytest.raises(SourceError, match=match):
        write_import(tmp_path / "out", plan_dreamerv3(src, DreamerOptions(**options)), progress=False)
    assert not (tmp_path / "out").exists()


def test_malformed_sources_are_refused_with_the_fix_and_nothing_written(tmp_path):
    episodes = transitions([4, 4], discrete=False)
    src = write_episodes(tmp_path / "nan", episodes)
    rows = dict(np.load(next(src.glob("*.npz"))))
    rows["action"][2, 1] = np.nan
    np.savez(next(src.glob("*.npz")), **rows)
    _nothing_written(tmp_path, src, r"row 2: the action is not finite")
    _nothing_written(
        tmp_path,
        write_episodes(tmp_path / "bounds", transitions([4], discrete=False)),
        r"--action-low",
        action_low=-0.5,
        action_high=0.5,
    )
    sizes = write_episodes(tmp_path / "sizes", episodes)
    rows = dict(np.load(sorted(sizes.glob("*.npz"))[1]))
    rows["position"] = np.zeros((5, 3), np.float32)
    np.savez(sorted(sizes.glob("*.npz"))[1], **rows)
    _nothing_written(tmp_path, sizes, "mixes states of", state_keys=("position",))
    _nothing_written(
        tmp_path, write_episodes(tmp_path / "keys", episodes), r"no 'joints' among its keys", state_keys=("joints",)
    )
    (tmp_path / "empty").mkdir()
    _nothing_written(tmp_path, tmp_path / "empty", "not a folder of .npz files")
    _nothing_written(tmp_path, write_episodes(tmp_path / "onehot", episodes), "not one-hot", actions="discrete")


def test_a_killed_import_resumes_to_the_uninterrupted_store(tmp_path):
    episodes = transitions([4, 6, 3, 5, 2], seed=2)
    src = write_chunks(tmp_path / "src", episodes, size=6)
    script = (
        "import sys; from iris_wm.data.importers.dreamerv3 import plan_dreamerv3;"
        "from iris_wm.data.importers.writer import write_import;"
        "write_import(sys.argv[2], plan_dreamerv3(sys.argv[1]), flush_steps=4, progress=False)"
    )
    run = [sys.executable, "-c", script, str(src), str(tmp_path / "killed")]
    killed = subprocess.run(run, env={**os.environ, "IRIS_WM_FAULT": "import:3"}, capture_output=True)
    assert killed.returncode != 0 and 0 < EpisodeStore.open(tmp_path / "killed").num_episodes < 5
    subprocess.run(run, check=True, capture_output=True)
    write_import(tmp_path / "whole", plan_dreamerv3(src), progress=False)
    killed, whole = EpisodeStore.open(tmp_path / "killed"), EpisodeStore.open(tmp_path / "whole")
    assert killed.num_episodes == whole.num_episodes == 5
    for name in ("action", "reward", "terminated", "truncated", "episode"):
        assert np.array_equal(getattr(killed.columns, name), getattr(whole.columns, name)), name
    assert np.array_equal(killed.observations(np.arange(20)), whole.observations(np.arange(20)))
    assert_stored(whole, episodes)


def test_the_command_imports_a_folder_and_names_what_it_left(tmp_path, capsys):
    from iris_wm.cli.main import main

    episodes = transitions([3, 4])
    src = write_episodes(tmp_path / "src", episodes)
    main(["import", "dreamerv3", str(src), "--out", str(tmp_path / "s"), "--source.state_keys", "[position, velocity]"])
    assert "added 7 steps in 2 episodes" in capsys.readouterr().out
    assert_stored(EpisodeStore.open(tmp_path / "s"), episodes)
    with pytest.raises(SystemExit):
        main(["import", "tdmpc", str(src), "--out", str(tmp_path / "t")])
    assert "needs a format first, one of lerobot, dreamerv3, tdmpc2" in capsys.readouterr().err


def test_an_imported_dataset_trains_a_world_model_that_uses_its_actions(tmp_path):
    """The point mass's random-force episodes saved as dreamerv3-torch files, imported: the store equals the source
    bitwise, and a world model trained on it reads its actions (held-out CE with true actions < permuted)."""
    source = point_mass_store(tmp_path / "episodes", episodes=240, length=16, seed=0)
    folder = tmp_path / "dreamer"
    folder.mkdir()
    for i in range(source.num_episodes):
        e = source.episode(i)
        frames = e.observations.transpose(0, 2, 3, 1)
        T = len(e)
        rows = torch_rows(
            dict(
                image=np.concatenate([frames, frames[-1:]]),  # the final observation is not stored: any frame does
                position=np.concatenate([e.states, e.states[-1:]]),
                velocity=np.zeros((T + 1, 1), np.float32),
                action=e.actions,
                reward=e.rewards,
                terminal=bool(e.terminated[-1]),
            )
        )
        np.savez(folder / f"20240101T000000-{i:032x}-{T + 1}.npz", **rows)
    write_import(
        tmp_path / "imported", plan_dreamerv3(folder, DreamerOptions(state_keys=("position",))), progress=False
    )
    imported = EpisodeStore.open(tmp_path / "imported")
    for name in ("action", "reward", "state", "truncated", "terminated"):
        assert np.array_equal(getattr(imported.columns, name), getattr(source.columns, name)), name
    rows = np.arange(source.num_steps)
    assert np.array_equal(imported.observations(rows), source.observations(rows))
    figures = conditioning_after_training(tokens_of(imported, tmp_path / "tokens"))
    assert figures["reduction"] >= 0.05 and figures["difference_ci"][0] > 0, figures
