"""Real windows mixed with synthetic ones (imagined episodes exported by ``iris-wm imagine --export``) in a fixed
proportion: the training set of a stage given ``--data.synthetic_root`` and ``--data.synthetic_fraction``.

Item ``i`` of the mix is synthetic when ``floor((i + 1) f) > floor(i f)``, so every run of consecutive items holds
the fraction ``f`` of synthetic ones to within one item, and the mix is a plain map-style dataset that the
resumable sampler shuffles like any other. Its length is the smallest that serves every real window once; the
synthetic windows are served in turn, repeating when there are fewer than the mix asks for.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from iris_wm.data.store import StepStore, StoreError, TokenStore
from iris_wm.data.windows import StepBatch, WindowDataset


class SyntheticStoreError(StoreError, ValueError):
    """A synthetic store that cannot be mixed with the real one."""


def synthetic_block(store: StepStore) -> dict:
    """The ``synthetic`` provenance block of an exported store; refuses a store without one."""
    block = store.manifest["settings"].get("synthetic")
    if not isinstance(block, dict):
        raise SyntheticStoreError(
            f"{store.root} holds real episodes (its manifest has no 'synthetic' block), so it cannot be the synthetic "
            "store: pass a store written by `iris-wm imagine --export`, or train on the real store alone."
        )
    return block


def check_mixable(real: StepStore, synthetic: StepStore) -> None:
    """Refuse a synthetic store whose steps do not mean what the real store's do: another observation kind or
    shape, another action set, or tokens of another tokenizer."""
    synthetic_block(synthetic)
    problems = []
    if type(real) is not type(synthetic):
        problems.append(f"it holds {synthetic.kind}, the real store {real.kind}")
    elif synthetic.spec != real.spec:
        problems.append(f"its observations are {synthetic.spec}, the real store's {real.spec}")
    if synthetic.num_actions != real.num_actions:
        problems.append(f"it has {synthetic.num_actions} actions, the real store {real.num_actions}")
    if isinstance(real, TokenStore) and isinstance(synthetic, TokenStore):
        ours, theirs = (
            real.manifest["settings"].get("tokenizer_digest"),
            synthetic.manifest["settings"].get("tokenizer_digest"),
        )
        if ours != theirs:
            problems.append(
                f"its tokens come from another tokenizer (digest {str(theirs)[:12]}, the real store's {str(ours)[:12]})"
            )
    if problems:
        raise SyntheticStoreError(
            f"The synthetic store {synthetic.root} cannot be mixed with {real.root}: {'; '.join(problems)}. Export "
            "synthetic episodes with the world model and tokenizer of the real store (iris-wm imagine --export)."
        )


def _synthetic_count(index: np.ndarray, fraction: float) -> np.ndarray:
    """How many of the items before ``index`` are synthetic."""
    return np.floor(index * fraction + 1e-9).astype(np.int64)


class MixedWindows(torch.utils.data.Dataset):
    """``real`` and ``synthetic`` windows, the fraction ``fraction`` of the items synthetic."""

    def __init__(self, real: WindowDataset, synthetic: WindowDataset, fraction: float):
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"The synthetic fraction must lie in (0, 1), got {fraction}.")
        if len(real) == 0 or len(synthetic) == 0:
            which = "synthetic" if len(synthetic) == 0 else "real"
            raise SyntheticStoreError(
                f"The {which} store has no training windows of {real.sequence_length} steps: export longer "
                "episodes (a larger --horizon) or use shorter windows."
            )
        self.real, self.synthetic, self.fraction = real, synthetic, fraction
        self.length = math.ceil(len(real) / (1.0 - fraction))
        self.row_offset = real.store.num_steps

    def __len__(self) -> int:
        return self.length

    def is_synthetic(self, indices) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64)
        return _synthetic_count(idx + 1, self.fraction) > _synthetic_count(idx, self.fraction)

    def __getitem__(self, index: int) -> StepBatch:
        return self.__getitems__([index])

    def __getitems__(self, indices) -> StepBatch:
        """One batch in the order of ``indices``; the rows of synthetic windows count on past the real store's."""
        idx = np.asarray(indices, dtype=np.int64)
        synthetic = self.is_synthetic(idx)
        before = _synthetic_count(idx, self.fraction)
        parts, order = [], []
        if (~synthetic).any():
            parts.append(self.real.__getitems__((idx - before)[~synthetic] % len(self.real)))
            order.append(np.flatnonzero(~synthetic))
        if synthetic.any():
            batch = self.synthetic.__getitems__(before[synthetic] % len(self.synthetic))
            batch.rows = torch.where(batch.rows >= 0, batch.rows + self.row_offset, batch.rows)
            parts.append(batch)
            order.append(np.flatnonzero(synthetic))
        back = torch.from_numpy(np.argsort(np.concatenate(order), kind="stable"))
        fields = StepBatch.__dataclass_fields__
        return StepBatch(
            **{
                name: None if getattr(parts[0], name) is None else torch.cat([getattr(p, name) for p in parts])[back]
                for name in fields
            }
        )
