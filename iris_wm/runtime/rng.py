"""The process's global random state (torch's CPU generator and every CUDA generator), captured and restored so
that a resumed run draws exactly the numbers the uninterrupted one would have (dropout, sampling in imagination).
"""

from __future__ import annotations

import torch


def global_rng_state() -> dict:
    """``{"torch": ..., "cuda": [...]}``: tensors only, so it fits a checkpoint read with ``weights_only=True``."""
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_global_rng_state(state: dict) -> None:
    """Restore what :func:`global_rng_state` captured."""
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])
