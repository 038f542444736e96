"""kill -9 during collection, then the same command again: the store ends exactly as an uninterrupted run's."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from iris_wm.data.store import EpisodeStore

REPO = Path(__file__).resolve().parents[2]
ARGS = ["--steps", "400", "--flush_steps", "60", "--env.max_episode_steps", "30", "--seed", "7"]


def _collect(out, fault=None):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if fault:
        env["IRIS_WM_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "iris_wm.cli", "collect", "--out", str(out), *ARGS], env=env,
                          capture_output=True, text=True, cwd=REPO)  # fmt: skip


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
    rows = np.arange(a.num_steps)
    np.testing.assert_array_equal(a.observations(rows), b.observations(rows))
    for column in ("action", "reward", "terminated", "truncated"):
        np.testing.assert_array_equal(getattr(a.columns, column), getattr(b.columns, column))
