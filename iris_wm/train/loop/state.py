"""The online loop's files: one atomic checkpoint of the whole run, and a per-epoch metrics log."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch

from iris_wm.runtime.files import torch_bytes, write_atomic


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
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(
            f"The checkpoint {path} cannot be read ({type(error).__name__}: {error}). It was not "
            "written by `iris-wm run`, or it is damaged: move it away to start the run again."
        ) from error
    if not isinstance(state, dict) or state.get("format") != 1:
        raise ValueError(f"{path} is not an `iris-wm run` checkpoint (format 1).")
    return state


class LoopLog:
    """``metrics.jsonl``, one line per finished epoch (and TensorBoard scalars when it is installed)."""

    def __init__(self, out: Path):
        self.path = Path(out) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._board = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._board = SummaryWriter(str(Path(out) / "tensorboard"))
        except ImportError:  # tensorboard is an optional extra (pip install iris-wm[tensorboard])
            pass

    def rows(self) -> list[dict]:
        if not self.path.exists():
            return []
        rows = []
        for line in self.path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a torn last line from a crash mid-write
        return rows

    def truncate(self, epoch: int) -> None:
        """Keep the rows of epochs up to ``epoch`` (those after the checkpoint are redone on resume)."""
        kept = [row for row in self.rows() if row["epoch"] <= epoch]
        write_atomic(self.path, "".join(json.dumps(row) + "\n" for row in kept).encode())

    def write(self, row: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
        if self._board is not None:
            for key, value in row.items():
                if key != "epoch" and isinstance(value, (int, float)) and math.isfinite(value):
                    self._board.add_scalar(key, value, row["epoch"])
            self._board.flush()
