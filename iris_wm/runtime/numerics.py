"""The one rule for a loss that is not a finite number: training stops there, no checkpoint is written after it,
and the message says which loss, at which step, what was kept and what to change."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

DEFAULT_FIX = "Lower the learning rate or clip the gradients, then resume."


class NonFiniteLoss(FloatingPointError):
    """A training loss became NaN or infinite."""


def check_finite(
    losses: Sequence[torch.Tensor | float], what: str, first_step: int, kept: str, fix: str = DEFAULT_FIX
) -> None:
    """Raise :class:`NonFiniteLoss` at the first non-finite value of ``losses`` (those of steps ``first_step``,
    ``first_step + 1``, ...). The values are read back to the host in one transfer, so a caller can check a
    whole stretch of steps at once (the online loop per epoch, the scaling sweep per stretch) or every step
    before its backward pass (the Lightning stages)."""
    if not len(losses):
        return
    values = torch.stack([torch.as_tensor(v).detach().float().reshape(()) for v in losses]).tolist()
    for i, value in enumerate(values):
        if not math.isfinite(value):
            raise NonFiniteLoss(f"The {what} loss became {value} at step {first_step + i}; {kept}. {fix}")
