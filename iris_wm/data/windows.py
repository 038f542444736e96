"""Windows of T consecutive steps from a store, the train/validation split, and the typed batch.

A window never crosses an episode boundary: the steps past the end of its episode (``pad="right"``) or
before its start (``pad="left"``) are padding, zero-filled and marked ``mask=False``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from iris_wm.data.store import StepStore

Pad = Literal["right", "left"]


@dataclass
class StepBatch:
    """A batch of windows. Observations are frames ``uint8 (B, T, 3, H, W)`` or tokens ``int64 (B, T, K)``."""

    observations: torch.Tensor
    actions: torch.Tensor  # (B, T) int64, or (B, T, *box shape) float32 for continuous actions
    rewards: torch.Tensor  # (B, T) float32
    terminated: torch.Tensor  # (B, T) bool
    truncated: torch.Tensor  # (B, T) bool
    mask: torch.Tensor  # (B, T) bool: True for real steps, False for padding
    rows: torch.Tensor  # (B, T) int64 global row in the store, -1 for padding
    states: torch.Tensor | None = None  # (B, T, size) float32 where the store has a state column

    def __len__(self) -> int:
        return self.actions.shape[0]


def split_episodes(store: StepStore, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions of training and validation episodes.

    Each episode's side is decided by a hash of ``(seed, episode id)``, so the split of the episodes already
    stored never changes when more are appended. At least one episode goes to each side when there are two
    or more and ``0 < val_fraction < 1``.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}.")
    positions = np.arange(store.num_episodes)
    draws = np.array([_unit_hash(seed, int(e)) for e in store.episode_ids])
    is_val = draws < val_fraction
    if val_fraction > 0 and store.num_episodes >= 2:
        if not is_val.any():
            is_val[np.argmin(draws)] = True
        if is_val.all():
            is_val[np.argmax(draws)] = False
    return positions[~is_val], positions[is_val]


def _unit_hash(seed: int, episode: int) -> float:
    digest = hashlib.blake2b(f"{seed}:{episode}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


class WindowDataset(Dataset):
    """Map-style dataset of windows of ``T`` steps; item ``i`` is anchored at the i-th step of the episodes.

    With ``pad="right"`` the window starts at its anchor step; with ``pad="left"`` it ends there. With
    ``complete=True`` only the anchors whose whole window lies inside the episode are kept. Fetch
    batches through ``__getitems__`` (the DataLoader does so): one vectorised gather per batch.
    """

    def __init__(
        self, store: StepStore, episodes: np.ndarray, sequence_length: int, pad: Pad = "right", complete: bool = False
    ):
        if sequence_length < 1:
            raise ValueError(f"sequence_length must be at least 1, got {sequence_length}.")
        if pad not in ("right", "left"):
            raise ValueError(f"pad must be 'right' or 'left', got {pad!r}.")
        self.store = store
        self.sequence_length = sequence_length
        self.pad = pad
        episodes = np.asarray(episodes, dtype=np.int64)
        starts, lengths = store.episode_starts[episodes], store.episode_lengths[episodes]
        # Every step of the chosen episodes, with the first and one-past-last row of its episode.
        self.first = np.repeat(starts, lengths)
        self.end = np.repeat(starts + lengths, lengths)
        self.anchors = self.first + np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        if complete:
            # Only windows that lie wholly inside their episode (no padding): the agent's burn-in needs them.
            inside = (
                (self.anchors + sequence_length <= self.end)
                if pad == "right"
                else (self.anchors - sequence_length + 1 >= self.first)
            )
            self.first, self.end, self.anchors = self.first[inside], self.end[inside], self.anchors[inside]

    def __len__(self) -> int:
        return len(self.anchors)

    def __getitem__(self, index: int) -> StepBatch:
        return self.__getitems__([index])

    def __getitems__(self, indices) -> StepBatch:
        idx = np.asarray(indices, dtype=np.int64)
        offsets = np.arange(self.sequence_length)
        if self.pad == "right":
            rows = self.anchors[idx, None] + offsets  # (B, T)
        else:
            rows = self.anchors[idx, None] - offsets[::-1]
        valid = (rows >= self.first[idx, None]) & (rows < self.end[idx, None])
        safe = np.where(valid, rows, self.anchors[idx, None])
        obs = self.store.observations(safe)
        obs[~valid] = 0
        cols = self.store.columns
        observations = torch.from_numpy(obs)
        if observations.dtype != torch.uint8:
            observations = observations.long()  # token ids: int16 on disk, int64 for embeddings

        def padded(column: np.ndarray) -> torch.Tensor:  # zero at the padded steps, whatever the column's shape
            values = column[safe]
            return torch.from_numpy(np.where(valid.reshape(*valid.shape, *[1] * (values.ndim - 2)), values, 0))

        return StepBatch(
            observations=observations,
            actions=padded(cols.action),
            rewards=torch.from_numpy(np.where(valid, cols.reward[safe], 0).astype(np.float32)),
            terminated=torch.from_numpy(valid & cols.terminated[safe]),
            truncated=torch.from_numpy(valid & cols.truncated[safe]),
            mask=torch.from_numpy(valid),
            rows=torch.from_numpy(np.where(valid, rows, -1)),
            states=None if cols.state is None else padded(cols.state),
        )


def collate_batch(batch: StepBatch) -> StepBatch:
    """The dataset already returns whole batches; the DataLoader's collate step has nothing left to do."""
    return batch


def start_windows(
    store: StepStore, steps: int, episodes: np.ndarray | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every window of ``steps`` real steps inside an episode of ``store`` (of ``episodes``, positions, when
    given), as imagination starts from them: observations ``(N, steps, ...)`` and the ``steps - 1`` actions
    taken between them ``(N, steps - 1)``. Raises when no episode is that long."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}.")
    positions = np.arange(store.num_episodes) if episodes is None else np.asarray(episodes)
    firsts = [
        np.arange(store.episode_starts[p], store.episode_starts[p] + store.episode_lengths[p] - steps + 1)
        for p in positions
        if store.episode_lengths[p] >= steps
    ]
    if not firsts:
        raise ValueError(f"No episode of {store.root} has {steps} steps: start from fewer, or collect longer ones.")
    rows = np.concatenate(firsts)[:, None] + np.arange(steps)
    observations = torch.from_numpy(np.ascontiguousarray(store.observations(rows)))
    return observations, torch.from_numpy(store.columns.action[rows[:, :-1]].astype(np.int64))
