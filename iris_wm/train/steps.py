"""The optimiser loop outside Lightning's Trainer: the online loop's training phases and the scaling sweep's
trunks and branches run their steps through :func:`optimizer_steps`, under the one non-finite-loss rule."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import nullcontext

import torch

from iris_wm.runtime.numerics import DEFAULT_FIX, check_finite


def optimizer_steps(
    loss_fn: Callable[[object], tuple[torch.Tensor, dict[str, torch.Tensor]]],
    next_batch: Callable[[int], object],
    optimizer: torch.optim.Optimizer,
    count: int,
    *,
    what: str,
    first_step: int,
    kept: str,
    fix: str = DEFAULT_FIX,
    scheduler=None,
    max_grad_norm: float | None = None,
    params: Iterable[torch.Tensor] | None = None,
    autocast: Callable[[], object] = nullcontext,
    backward: Callable[[torch.Tensor], None] = torch.Tensor.backward,
    before_step: Callable[[int], None] | None = None,
    after_step: Callable[[int], None] | None = None,
) -> dict[str, list[torch.Tensor]]:
    """``count`` optimiser steps; returns every step's ``loss`` and metrics, detached and on the device.

    Step ``i`` calls ``before_step(i)``, takes ``next_batch(i)``, computes ``loss_fn(batch) -> (loss, metrics)``
    under ``autocast()``, back-propagates with ``backward`` (Fabric's, say), clips the gradient norm of ``params``
    (default: the optimiser's) to ``max_grad_norm``, steps the optimiser and ``scheduler``, and calls
    ``after_step(i)``. The losses are read back to the host once, at the end: a non-finite one raises
    :class:`~iris_wm.runtime.numerics.NonFiniteLoss` naming ``what``, its step (counted from ``first_step``), what
    was ``kept`` and the ``fix``, before the caller can save anything.
    """
    if max_grad_norm is not None:
        params = list(params) if params is not None else [p for g in optimizer.param_groups for p in g["params"]]
    history: dict[str, list[torch.Tensor]] = {}
    for i in range(count):
        if before_step is not None:
            before_step(i)
        batch = next_batch(i)
        with autocast():
            loss, metrics = loss_fn(batch)
        optimizer.zero_grad(set_to_none=True)
        backward(loss)
        if max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if after_step is not None:
            after_step(i)
        for key, value in {"loss": loss, **metrics}.items():
            history.setdefault(key, []).append(value.detach().float())
    check_finite(history.get("loss", []), what, first_step, kept, fix)
    return history
