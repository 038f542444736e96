"""kill -9 during collection, then the same command again: the store ends exactly as an uninterrupted run's."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from iris_wm.data.store import EpisodeStore

REPO = Path(__file__).resolve().parents[2]
ARGS = ["--steps", "400", "--flush_steps", "60", "--env.max_episode_steps", "30", "--seed", "7"]


def _collect(out, fault=None, *extra):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if fault:
        env["IRIS_WM_FAULT"] = fault
    return subprocess.run(
        [sys.executable, "-m", "iris_wm.cli", "collect", "--out", str(out), *ARGS, *extra],
        env=env,
        capture_output=True,
        text=True,
        cwd=REPO,
    )


def _assert_same_store(a: EpisodeStore, b: EpisodeStore, steps: int | None = None) -> None:
    """The first ``steps`` rows (all by default) hold the same frames, actions, rewards and flags."""
    rows = np.arange(steps if steps is not None else b.num_steps)
    np.testing.assert_array_equal(a.observations(rows), b.observations(rows))
    for column in ("action", "reward", "terminated", "truncated"):
        np.testing.assert_array_equal(getattr(a.columns, column)[rows], getattr(b.columns, column)[rows])


def test_collection_killed_mid_run_resumes_to_the_uninterrupted_store(tmp_path):
    assert _collect(tmp_path / "ref").returncode == 0
    crashed = tmp_path / "crashed"
    assert _collect(crashed, fault="collect:250").returncode == -9
    partial = EpisodeStore.open(crashed)
    assert 0 < partial.num_steps < 400, "the crash left the flushed episodes, and only those"
    assert _collect(crashed).returncode == 0
    a, b = EpisodeStore.open(crashed), EpisodeStore.open(tmp_path / "ref")
    assert (a.num_steps, a.num_episodes) == (b.num_steps, b.num_episodes) == (400, b.num_episodes)
    np.testing.assert_array_equal(a.episode_lengths, b.episode_lengths)
    _assert_same_store(a, b)


def test_parallel_collection_killed_in_a_share_or_in_the_merge_resumes_to_the_uninterrupted_store(tmp_path):
    workers = ("--workers", "2")
    ref = tmp_path / "ref"
    assert _collect(ref, None, *workers).returncode == 0
    b = EpisodeStore.open(ref)
    assert b.num_steps == 400 and not list(tmp_path.glob("ref.part*"))
    # The first share is exactly what a serial collection with the same seed stores first.
    serial = tmp_path / "serial"
    assert (
        subprocess.run(
            [
                sys.executable,
                "-m",
                "iris_wm.cli",
                "collect",
                "--out",
                str(serial),
                *[a if a != "400" else "200" for a in ARGS],
            ],
            cwd=REPO,
        ).returncode
        == 0
    )
    _assert_same_store(b, EpisodeStore.open(serial), 200)
    # Killed inside both shares (every worker reaches its step 150), then mid-merge after the second share's
    # first appended chunk: each rerun ends in the uninterrupted store.
    for name, fault, code in (("share", "collect:150", 2), ("merge", "collect-merge:1:0", -9)):
        crashed = tmp_path / name
        assert _collect(crashed, fault, *workers).returncode == code
        assert _collect(crashed, None, *workers).returncode == 0
        a = EpisodeStore.open(crashed)
        assert a.num_steps == 400 and not list(tmp_path.glob(f"{name}.part*"))
        np.testing.assert_array_equal(a.episode_lengths, b.episode_lengths)
        _assert_same_store(a, b)
    # A rerun that would split the steps otherwise is refused while a plan is unfinished.
    assert _collect(tmp_path / "mixed", "collect:150", *workers).returncode == 2
    refused = _collect(tmp_path / "mixed", None, "--workers", "3")
    assert refused.returncode != 0 and "unfinished parallel collection" in refused.stderr
