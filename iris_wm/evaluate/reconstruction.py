"""How well a tokenizer reconstructs held-out frames, judged where it matters: on the pixels that move.

On Breakout well under 1% of a frame changes from one step to the next (the ball, the paddle, a brick, the score),
so whole-frame PSNR rewards drawing the static screen and says little about the game. Beside it this measures:

- the *dynamic* pixels of a frame: those where some channel differs by more than ``DYNAMIC_LEVELS`` from the
  previous frame of the same episode; PSNR and L1 pooled over them;
- two baselines on the same frames and pixels: the mean training frame (a tokenizer that knows nothing of the
  frame), and the previous frame (which is wrong exactly on the dynamic pixels);
- token stability: of the grid cells whose pixels did not change since the previous frame, the share whose token
  changed anyway (flicker the world model must learn to predict), beside the share of cells whose pixels changed.
"""

from __future__ import annotations

import numpy as np
import torch

from iris_wm.evaluate.rollouts import dynamic_pixels, pooled_psnr


@torch.no_grad()
def reconstruction_figures(
    tokenizer, store, episodes: np.ndarray, mean_frame: np.ndarray, max_pairs: int = 2048, chunk: int = 256
) -> dict[str, float]:
    """Figures over up to ``max_pairs`` (previous, current) frame pairs of the held-out ``episodes`` (positions in
    ``store``), evenly spaced. ``mean_frame`` is the per-pixel mean training frame ``(3, H, W)`` (uint8 or float)."""
    rows = np.concatenate([store.episode_starts[p] + np.arange(1, store.episode_lengths[p]) for p in episodes])
    if len(rows) == 0:
        raise ValueError("No held-out episode has two frames: nothing to measure reconstruction on.")
    rows = rows[np.linspace(0, len(rows) - 1, min(max_pairs, len(rows))).round().astype(int)]
    mean = torch.as_tensor(mean_frame).float()
    sums: dict[str, float] = {}
    grid = tokenizer.config.grid
    for start in range(0, len(rows), chunk):
        part = rows[start : start + chunk]
        current = torch.from_numpy(store.observations(part))
        previous = torch.from_numpy(store.observations(part - 1))
        tokens, previous_tokens = tokenizer.encode(current), tokenizer.encode(previous)
        reconstruction = tokenizer.decode(tokens).float()
        truth = current.float()
        dynamic = dynamic_pixels(current, previous)
        for name, guess in (
            ("tokenizer", reconstruction),
            ("mean_frame", mean.expand_as(truth)),
            ("previous_frame", previous.float()),
        ):
            error = guess - truth
            _add(sums, f"{name}/sse", error.pow(2).sum())
            _add(sums, f"{name}/abs", error.abs().sum())
            _add(sums, f"{name}/dynamic_sse", (error.pow(2) * dynamic).sum())
            _add(sums, f"{name}/dynamic_abs", (error.abs() * dynamic).sum())
        _add(sums, "values", truth.numel())
        _add(sums, "dynamic_values", dynamic.sum())
        # Per grid cell: did its pixels change, did its token change.
        cell_changed = torch.nn.functional.max_pool2d(dynamic[:, :1], truth.shape[-1] // grid).flatten(1) > 0
        token_changed = tokens != previous_tokens
        _add(sums, "cells", cell_changed.numel())
        _add(sums, "cells_changed", cell_changed.sum())
        _add(sums, "cells_static", (~cell_changed).sum())
        _add(sums, "tokens_changed", token_changed.sum())
        _add(sums, "tokens_changed_static", (token_changed & ~cell_changed).sum())
    figures = {"pairs": float(len(rows)), "dynamic_fraction": sums["dynamic_values"] / sums["values"]}
    for name in ("tokenizer", "mean_frame", "previous_frame"):
        figures[f"{name}/psnr"] = float(pooled_psnr(sums[f"{name}/sse"], sums["values"]))
        figures[f"{name}/l1"] = sums[f"{name}/abs"] / sums["values"]
        figures[f"{name}/dynamic_psnr"] = float(pooled_psnr(sums[f"{name}/dynamic_sse"], sums["dynamic_values"]))
        figures[f"{name}/dynamic_l1"] = sums[f"{name}/dynamic_abs"] / max(sums["dynamic_values"], 1.0)
    figures["tokens/changed"] = sums["tokens_changed"] / sums["cells"]
    figures["tokens/changed_where_pixels_static"] = sums["tokens_changed_static"] / max(sums["cells_static"], 1.0)
    figures["cells/pixels_changed"] = sums["cells_changed"] / sums["cells"]
    return figures


def _add(sums: dict[str, float], key: str, value) -> None:
    sums[key] = sums.get(key, 0.0) + float(value)
