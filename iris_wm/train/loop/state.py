"""The online loop's files: one atomic checkpoint of the whole run, and a per-epoch metrics log."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch

from iris_wm.envs.atari import restore_env
from iris_wm.runtime.errors import ConfigError
from iris_wm.runtime.files import archive_problem, plain_json, torch_bytes, write_atomic
from iris_wm.runtime.rng import set_global_rng_state

RUN_KEYS = {
    "format",
    "config",
    "epoch",
    "steps",
    "store_shards",
    "modules",
    "optimizers",
    "schedulers",
    "rng",
    "env",
    "obs",
    "episode",
    "policy_state",
    "tokens",
    "tokens_version",
}
"""What a checkpoint of the online loop holds."""


class RunStateError(ConfigError):
    """The online loop's checkpoint is missing where it must exist, or cannot be read."""


def checkpoint_path(out: Path) -> Path:
    return Path(out) / "checkpoints" / "last.ckpt"


def save_checkpoint(out: Path, state: dict) -> Path:
    """Replace the run's checkpoint atomically (:func:`~iris_wm.runtime.files.write_atomic`): a crash at any point
    leaves the previous checkpoint or the new one, never a torn file."""
    path = checkpoint_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        write_atomic(path, torch_bytes(state))
    except OSError as error:
        raise OSError(
            f"Could not write the checkpoint {path} ({error.strerror}); the previous checkpoint is kept. "
            "Free disk space or make the folder writable, then rerun the same command to resume."
        ) from error
    return path


def load_checkpoint(out: Path) -> dict | None:
    """The run's last state, or None for a new run. Read with ``weights_only=True``: never unpickles code."""
    path = checkpoint_path(out)
    if not path.exists():
        return None
    problem = archive_problem(path)
    try:
        state = None if problem else torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # the unpickler's errors have no common base
        problem = f"{type(error).__name__}: {error}"
    if problem is None and (not isinstance(state, dict) or state.get("format") != 1 or RUN_KEYS - state.keys()):
        missing = sorted(RUN_KEYS - state.keys()) if isinstance(state, dict) else "all"
        problem = f"not a checkpoint of the online loop (format 1; missing {missing})"
    if problem:
        raise RunStateError(
            f"The run's checkpoint {path} cannot be read ({problem}); it was not unpickled, so nothing in it ran, "
            "and nothing of the run was changed. Restore it from a backup, or start a new run in another "
            "--run.out (the episodes in its store can be trained on by the stages)."
        )
    return state


def resume(loop, saved: dict) -> None:
    """Put the online ``loop`` (just built) in the state ``saved``; refuse a checkpoint of other settings. Rank 0
    rolls the store back to the checkpoint's shards; the other ranks of a data-parallel run take their own random
    state from it."""
    mine, theirs = plain_json(loop.config), dict(saved["config"])
    mine.pop("epochs"), theirs.pop("epochs")
    if mine != theirs:
        changed = sorted(k for k in mine if mine[k] != theirs.get(k))
        raise ConfigError(
            f"{loop.out} holds a run with other settings ({', '.join(changed)} differ): resume it "
            "with its own config (only epochs may change) or choose another --out."
        )
    dropped = loop.store.rollback(saved["store_shards"]) if loop.ranks.zero else 0
    if dropped:
        print(f"iris-wm run: rolled back {dropped} shard(s) appended after the last checkpoint.")
    for name in loop.modules:
        loop._trainable(name).load_state_dict(saved["modules"][name])
        loop.optimizers[name].load_state_dict(saved["optimizers"][name])
        if loop.schedulers[name] is not None:
            loop.schedulers[name].load_state_dict(saved["schedulers"][name])
    loop.epoch, loop.steps = saved["epoch"], dict(saved["steps"])
    set_global_rng_state(saved["rng"])
    loop.policy.generator.set_state(saved["rng"]["policy"])
    loop.sampler.bit_generator.state = saved["rng"]["sampler"]
    restore_env(loop.env, saved["env"])
    loop.obs = saved["obs"].numpy().copy()
    for key, value in saved["episode"].items():
        setattr(loop.episode, key, list(value.numpy()))
    loop.policy.state = saved["policy_state"]
    loop.tokens, loop.tokens_version = saved["tokens"].numpy().copy(), saved["tokens_version"]
    if not loop.ranks.zero:
        mine = saved["ranks"][loop.ranks.rank - 1]
        set_global_rng_state(mine)
        loop.sampler.bit_generator.state = mine["sampler"]
        return
    loop.log.truncate(loop.epoch)
    print(f"iris-wm run: resumed {loop.out} after epoch {loop.epoch}.")


def start_without_checkpoint(loop) -> None:
    """A new run, or one that crashed in its first epoch after appending its episodes and before its first
    checkpoint (each epoch appends at most one shard, then checkpoints, then logs): that shard is rolled back
    and collected again, identically. Anything more proves that checkpoints were written and one is now
    missing: then nothing is touched, and the run is refused. (Rank 0's work under data parallelism.)"""
    if not loop.ranks.zero:
        return
    shards, logged = len(loop.store.manifest["shards"]), len(loop.log.rows())
    if shards > 1 or logged:
        raise ConfigError(
            f"{loop.out} holds a run that checkpointed ({shards} shard(s) of episodes in "
            f"{loop.store.root}, {logged} epoch(s) in {loop.log.path}) but {checkpoint_path(loop.out)} is "
            "missing, so it cannot be resumed exactly; nothing was changed. Restore the checkpoint (a backup, "
            "or the file moved away), or start a new run in another --run.out."
        )
    if loop.store.rollback(0):
        print(f"iris-wm run: {loop.out} crashed in its first epoch; its uncommitted episodes are collected again.")
    loop.log.truncate(0)


class LoopLog:
    """``metrics.jsonl``, one line per finished epoch (and TensorBoard scalars when it is installed)."""

    def __init__(self, out: Path):
        self.out, self.path = Path(out), Path(out) / "metrics.jsonl"
        self._board = None  # the TensorBoard writer, made at the first row (nothing is written before)

    def _tensorboard(self):
        if self._board is None:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._board = SummaryWriter(str(self.out / "tensorboard"))
            except ImportError:  # tensorboard is an optional extra (pip install iris-wm[tensorboard])
                self._board = False
        return self._board

    def rows(self) -> list[dict]:
        if not self.path.exists():
            return []
        rows, lines = [], self.path.read_text().splitlines()
        for number, line in enumerate(lines, 1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                if number == len(lines):
                    break  # a torn last line from a crash mid-write: that epoch is redone
                row = None
            if not (isinstance(row, dict) and isinstance(row.get("epoch"), int)):
                raise RunStateError(
                    f"{self.path}, line {number}, is not an epoch's metrics (a JSON object with its epoch): the file "
                    "was edited or damaged, and nothing was changed. Repair or remove that line, then rerun."
                )
            rows.append(row)
        return rows

    def truncate(self, epoch: int) -> None:
        """Keep the rows of epochs up to ``epoch`` (those after the checkpoint are redone on resume)."""
        kept = [row for row in self.rows() if row["epoch"] <= epoch]
        write_atomic(self.path, "".join(json.dumps(row) + "\n" for row in kept).encode())

    def write(self, row: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
        board = self._tensorboard()
        if board:
            for key, value in row.items():
                if key != "epoch" and isinstance(value, (int, float)) and math.isfinite(value):
                    board.add_scalar(key, value, row["epoch"])
            board.flush()
