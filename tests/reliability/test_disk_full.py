"""A full disk, simulated for real with RLIMIT_FSIZE (writes past the limit fail with EFBIG), and a read-only
output folder (permission bits, enforced by dropping root): a clear error, and the store and the last
checkpoint stay as they were."""

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from iris_wm.data.store import EpisodeStore

REPO = Path(__file__).resolve().parents[2]

# Both scripts start from a store with one 20-step episode and a checkpoint of zeros, then try to write more.
SETUP = textwrap.dedent("""
    import os, resource, signal, sys
    import torch
    sys.path.insert(0, "tests")
    from helpers.counting import counting_episode
    from iris_wm.data.store import EpisodeStore, StoreError
    from iris_wm.train.loop.state import save_checkpoint

    root = sys.argv[1]
    store = EpisodeStore.create(root + "/store", EpisodeStore.frame_spec(8), 4, {"env": "counting"})
    store.append([counting_episode(0, 20, size=8)])
    save_checkpoint(root + "/run", {"format": 1, "weights": torch.zeros(10)})
""")

SCRIPT = SETUP + textwrap.dedent("""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write with EFBIG instead of killing the process
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))
    try:
        store.append([counting_episode(1, 500, size=8)])
    except StoreError as error:
        print("STORE:", error)
    try:
        save_checkpoint(root + "/run", {"format": 1, "weights": torch.zeros(100_000)})
    except OSError as error:
        print("CHECKPOINT:", error)
""")

READ_ONLY = SETUP + textwrap.dedent("""
    # Python's own files may not be readable by nobody: import what the command line needs first.
    import contextlib, io, jsonargparse
    import iris_wm.data.collect
    from iris_wm.cli.main import main
    for folder, _, _ in os.walk(root):
        os.chmod(folder, 0o555)
    if os.geteuid() == 0:
        os.setuid(65534)  # permission bits do not stop root; the user nobody is stopped by them
    spec, ones = EpisodeStore.frame_spec(8), {"format": 1, "weights": torch.ones(10)}
    for name, write in (("STORE", lambda: store.append([counting_episode(1, 30, size=8)])),
                        ("NEW STORE", lambda: EpisodeStore.create(root + "/other", spec, 4, {})),
                        ("CHECKPOINT", lambda: save_checkpoint(root + "/run", ones))):
        try:
            write()
            print(name + ": written")
        except (StoreError, OSError) as error:
            print(name + ":", error)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            main(["collect", "--out", root + "/store", "--steps", "60", "--env.max_episode_steps", "10"])
        except SystemExit as exit:
            print("CLI EXIT:", exit.code)
    print("CLI:", err.getvalue().splitlines()[0])
""")


def _nothing_lost(root: Path) -> EpisodeStore:
    """The store still holds exactly the first episode (every checksum verified) and the checkpoint its zeros."""
    import torch

    from iris_wm.train.loop.state import checkpoint_path

    store = EpisodeStore.open(root / "store")
    assert (store.num_episodes, store.num_steps) == (1, 20)
    # A stand-in state, not a whole run's: read as it was written (load_checkpoint would refuse it as no run's).
    state = torch.load(checkpoint_path(root / "run"), weights_only=True)
    assert torch.equal(state["weights"], torch.zeros(10))
    return store


def test_a_read_only_output_folder_gives_a_clear_error_and_loses_nothing():
    import os
    import shutil
    import tempfile

    import pytest

    root = Path(tempfile.mkdtemp(prefix="iris-wm-read-only-"))  # not under pytest's 0700 folder: nobody must enter
    root.chmod(0o755)
    try:
        done = subprocess.run([sys.executable, "-c", READ_ONLY, str(root)], capture_output=True, text=True, cwd=REPO)
        if "Operation not permitted" in done.stderr and "setuid" in done.stderr:
            pytest.skip("running as root without the right to drop to another user, read-only folders cannot be made")
        assert done.returncode == 0, done.stderr[-2000:]
        lines = dict(line.split(": ", 1) for line in done.stdout.splitlines() if ": " in line)
        assert "Permission denied" in lines["STORE"] and "The store is unchanged" in lines["STORE"]
        assert "make it writable" in lines["STORE"]
        assert "Cannot create the store folder" in lines["NEW STORE"] and "folder you can write" in lines["NEW STORE"]
        assert "the previous checkpoint is kept" in lines["CHECKPOINT"] and "writable" in lines["CHECKPOINT"]
        # The command line refuses a read-only store before any work, in one line.
        assert lines["CLI EXIT"] == "2" and f"{root}/store" in lines["CLI"] and "not writable" in lines["CLI"]
        _nothing_lost(root)
    finally:
        for folder, _, _ in os.walk(root):
            Path(folder).chmod(0o755)
        shutil.rmtree(root)


def test_an_unwritable_output_folder_gives_a_clear_error():
    import pytest

    from iris_wm.data.store import StoreError

    # /proc accepts no new folders, even for root (for whom permission bits do not stop writes).
    with pytest.raises(StoreError, match="Cannot create the store folder /proc/iris-wm-test.*folder you can write"):
        EpisodeStore.create("/proc/iris-wm-test/store", EpisodeStore.frame_spec(8), 4, {})


def test_a_full_disk_gives_a_clear_error_and_loses_nothing(tmp_path):
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    store_line = next(line for line in done.stdout.splitlines() if line.startswith("STORE:"))
    assert "File too large" in store_line and "The store is unchanged" in store_line and "free disk space" in store_line
    checkpoint_line = next(line for line in done.stdout.splitlines() if line.startswith("CHECKPOINT:"))
    assert "the previous checkpoint is kept" in checkpoint_line and "Free disk space" in checkpoint_line
    store = _nothing_lost(tmp_path)
    assert not [p.name for p in (tmp_path / "store").rglob(".tmp-*")], "no temporary file is left behind"
    np.testing.assert_array_equal(store.columns.action, np.arange(20) % 4)
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == ["last.ckpt"], "no temporary file is left"
