"""Imagined vs real rollouts of many held-out windows, per horizon, with the copy-the-last-frame baseline and
bootstrap intervals.

Every window starts from ``burn_in`` real steps and then follows the real actions for ``horizon`` imagined steps.
At each horizon ``h`` the imagined frame is compared with the real one, and so is the baseline that copies the
last real frame (and its tokens) of the context. Pixel figures are PSNRs pooled over the pixels counted: the
whole frame, and the *dynamic* pixels, those whose real value at ``h`` differs from the last real context frame
by more than ``DYNAMIC_LEVELS`` in some channel (on Breakout well under 1% of the screen: the ball, the paddle,
the score). Copying the last frame is wrong on every dynamic pixel by construction, so there the question is
how much better than that the world model does.

Intervals are 95% percentile bootstraps that resample *episodes* (a cluster bootstrap): windows cut from one
episode are not independent.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from iris_wm.data.store import TokenStore
from iris_wm.data.windows import split_episodes
from iris_wm.runtime.errors import ConfigError

DYNAMIC_LEVELS = 10
"""A pixel is dynamic at a horizon when some channel moved by more than this many levels (of 255) since the last
real frame of the context."""


def pick_windows(
    tokens: TokenStore, length: int, count: int, val_fraction: float, split_seed: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """First rows and episode positions of up to ``count`` distinct held-out windows of ``length`` steps, drawn
    uniformly among all the windows that fit inside a validation episode."""
    _, val = split_episodes(tokens, val_fraction, split_seed)
    drawn = windows_in(tokens, val, length, count, rng)
    if drawn is None:
        longest = int(tokens.episode_lengths[val].max()) if len(val) else 0
        raise ConfigError(
            f"No validation episode has the {length} steps that burn_in + horizon need (longest: {longest}). "
            "Lower --horizon or --burn_in, or collect more data."
        )
    return drawn


def windows_in(
    store, episodes: np.ndarray, length: int, count: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray] | None:
    """First rows and episode positions of up to ``count`` distinct windows of ``length`` steps, drawn uniformly
    among all the windows that fit inside the ``episodes`` (positions in the store); None where none fits."""
    spans = np.maximum(store.episode_lengths[episodes] - length + 1, 0)  # windows per episode
    if spans.sum() == 0:
        return None
    chosen = np.sort(rng.choice(int(spans.sum()), size=min(count, int(spans.sum())), replace=False))
    owner = np.searchsorted(np.cumsum(spans), chosen, side="right")  # index into episodes of each window
    offsets = chosen - np.r_[0, np.cumsum(spans)][owner]
    chosen_episodes = episodes[owner]
    return store.episode_starts[chosen_episodes] + offsets, chosen_episodes


@dataclass
class RolloutErrors:
    """Per window ``(N, H)``: sums whose ratios give each figure (so they pool and bootstrap exactly)."""

    token_hits: np.ndarray  # tokens equal to the real ones (of K)
    copy_token_hits: np.ndarray  # the last context frame's tokens equal to the real ones
    imagined_sse: np.ndarray  # squared error of the imagined frame, all pixels and channels
    copy_sse: np.ndarray  # of the last real context frame
    tokenizer_sse: np.ndarray  # of the tokenizer's reconstruction of the real tokens
    dynamic_imagined_sse: np.ndarray  # over the dynamic pixels only
    dynamic_copy_sse: np.ndarray
    dynamic_values: np.ndarray  # how many values (pixels x channels) are dynamic
    values_per_frame: int
    tokens_per_frame: int
    disagreement: dict[str, np.ndarray] | None = None  # an ensemble's per window and horizon: tokens, reward, end


SUMS = (
    "token_hits",
    "copy_token_hits",
    "imagined_sse",
    "copy_sse",
    "tokenizer_sse",
    "dynamic_imagined_sse",
    "dynamic_copy_sse",
    "dynamic_values",
)


def dynamic_pixels(frames: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``1.0`` where some channel of ``frames (B, 3, H, W)`` differs from ``reference`` by more than
    ``DYNAMIC_LEVELS``, for every channel of that pixel (same shape, float), else ``0.0``."""
    moved = ((frames.int() - reference.int()).abs() > DYNAMIC_LEVELS).any(1, keepdim=True)
    return moved.expand_as(frames).float()


def _sse(a: torch.Tensor, b: torch.Tensor, where: torch.Tensor | None = None) -> torch.Tensor:
    error = (a.float() - b.float()).pow(2)
    if where is not None:
        error = error * where
    return error.flatten(1).sum(1)


@torch.no_grad()
def rollout_errors(
    agent,
    real_tokens: torch.Tensor,
    real_frames: torch.Tensor,
    actions: torch.Tensor,
    burn_in: int,
    temperature: float,
    generator: torch.Generator,
    chunk: int = 64,
) -> tuple[RolloutErrors, torch.Tensor]:
    """Imagine every window (``real_tokens (N, L, K)``, ``real_frames (N, L, 3, H, W)``, ``actions (N, L)``) from its
    first ``burn_in`` steps, ``chunk`` windows at a time; return the errors and the imagined frames of the first
    chunk ``(n, L - burn_in, 3, H, W)`` for pictures."""
    from iris_wm.envs.imagination import ImaginationConfig

    N, L, K = real_tokens.shape
    horizon = L - burn_in
    sums: dict[str, list[torch.Tensor]] = {name: [] for name in SUMS}
    pictures, disagreements = None, []
    for start in range(0, N, chunk):
        rows = slice(start, start + chunk)
        tok, frames, act = real_tokens[rows], real_frames[rows], actions[rows]
        env = agent.imagination(ImaginationConfig(temperature=temperature), generator)
        env.reset(tok[:, :burn_in], act[:, : burn_in - 1])
        last_tokens, last_frame = tok[:, burn_in - 1], frames[:, burn_in - 1]
        per_h: dict[str, list[torch.Tensor]] = {name: [] for name in sums}
        imagined_frames, spread = [], []
        for h in range(horizon):
            step = env.step(act[:, burn_in - 1 + h])
            truth_tokens, truth = tok[:, burn_in + h], frames[:, burn_in + h]
            imagined = agent.tokenizer.decode(step.tokens)
            dynamic = dynamic_pixels(truth, last_frame)
            per_h["token_hits"].append((step.tokens == truth_tokens).sum(1).float())
            per_h["copy_token_hits"].append((last_tokens == truth_tokens).sum(1).float())
            per_h["imagined_sse"].append(_sse(imagined, truth))
            per_h["copy_sse"].append(_sse(last_frame, truth))
            per_h["tokenizer_sse"].append(_sse(agent.tokenizer.decode(truth_tokens), truth))
            per_h["dynamic_imagined_sse"].append(_sse(imagined, truth, dynamic))
            per_h["dynamic_copy_sse"].append(_sse(last_frame, truth, dynamic))
            per_h["dynamic_values"].append(dynamic.flatten(1).sum(1))
            d = getattr(step, "disagreement", None)  # an ensemble's
            if d is not None:
                spread.append(torch.stack([d.tokens.float(), d.reward.float(), d.end.float()], 1).cpu())
            if pictures is None:
                imagined_frames.append(imagined)
        for name, values in per_h.items():
            sums[name].append(torch.stack(values, 1))
        if spread:
            disagreements.append(torch.stack(spread, 1))  # (n, H, 3)
        if pictures is None:
            pictures = torch.stack(imagined_frames, 1)
    arrays = {name: torch.cat(values).double().numpy() for name, values in sums.items()}
    spread = None
    if disagreements:
        stacked = torch.cat(disagreements).numpy()
        spread = {name: stacked[..., i] for i, name in enumerate(("tokens", "reward", "end"))}
    values = real_frames[0, 0].numel()
    errors = RolloutErrors(**arrays, values_per_frame=values, tokens_per_frame=K, disagreement=spread)
    return errors, pictures


def pooled_psnr(sse, count):
    """PSNR in dB of squared errors ``sse`` pooled over ``count`` values of 0-255 (arrays or numbers; capped at 100 dB
    for an exact match)."""
    mse = sse / np.maximum(count, 1)
    return 10 * np.log10(255.0**2 / np.maximum(mse, 255.0**2 * 1e-10))


FIGURES = {
    # name: (numerator, denominator or a per-window constant, transform)
    "token_accuracy": ("token_hits", "tokens_per_frame", None),
    "copy_token_accuracy": ("copy_token_hits", "tokens_per_frame", None),
    "frame_psnr": ("imagined_sse", "values_per_frame", pooled_psnr),
    "copy_frame_psnr": ("copy_sse", "values_per_frame", pooled_psnr),
    "tokenizer_psnr": ("tokenizer_sse", "values_per_frame", pooled_psnr),
    "dynamic_psnr": ("dynamic_imagined_sse", "dynamic_values", pooled_psnr),
    "copy_dynamic_psnr": ("dynamic_copy_sse", "dynamic_values", pooled_psnr),
}

GAINS = {
    "token_accuracy_gain": ("token_accuracy", "copy_token_accuracy"),
    "frame_psnr_gain": ("frame_psnr", "copy_frame_psnr"),
    "dynamic_psnr_gain": ("dynamic_psnr", "copy_dynamic_psnr"),
}
"""Imagination minus the copy-last baseline, with a *paired* interval: both are computed on the same resampled
episodes, so the interval of the difference is narrower than the two intervals side by side suggest."""


def episode_resamples(episodes: np.ndarray, draws: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A cluster bootstrap over episodes: ``(draws, E)`` how often each of the ``E`` distinct episodes is drawn in each
    resample, and the index in ``0 .. E - 1`` of each item's episode (so ``counts[:, index]`` weighs the items)."""
    index = np.unique(episodes, return_inverse=True)[1]
    n = index.max() + 1
    counts = np.stack([np.bincount(r, minlength=n) for r in rng.integers(0, n, (draws, n))])
    return counts, index


def interval(resampled: np.ndarray) -> list[float]:
    """The 95% percentile interval of bootstrap values."""
    return [float(np.percentile(resampled, 2.5)), float(np.percentile(resampled, 97.5))]


def summarize(
    errors: RolloutErrors, episodes: np.ndarray, horizons: list[int], draws: int = 1000, seed: int = 0
) -> list[dict]:
    """Per horizon (1-based), every figure of :data:`FIGURES` pooled over the windows and every gain of :data:`GAINS`,
    each with a 95% cluster-bootstrap interval over episodes."""
    counts, clusters = episode_resamples(episodes, draws, np.random.default_rng(seed))
    n_clusters = counts.shape[1]
    weights = counts[:, clusters]  # (draws, N)
    rows = []
    for h in horizons:
        row = {"horizon": h, "windows": len(episodes), "episodes": int(n_clusters)}
        resampled = {}
        for name, (num, den, transform) in FIGURES.items():
            top = getattr(errors, num)[:, h - 1]
            bottom = getattr(errors, den)
            bottom = bottom[:, h - 1] if isinstance(bottom, np.ndarray) else np.full_like(top, bottom)
            point = top.sum() / max(bottom.sum(), 1) if transform is None else transform(top.sum(), bottom.sum())
            boot_top, boot_bottom = weights @ top, weights @ bottom
            boot = boot_top / np.maximum(boot_bottom, 1) if transform is None else transform(boot_top, boot_bottom)
            row[name] = float(point)
            row[f"{name}_ci"] = interval(boot)
            resampled[name] = boot
        for name, (figure, baseline) in GAINS.items():
            difference = resampled[figure] - resampled[baseline]
            row[name] = row[figure] - row[baseline]
            row[f"{name}_ci"] = interval(difference)
        row["dynamic_fraction"] = float(errors.dynamic_values[:, h - 1].sum() / (errors.values_per_frame * len(top)))
        rows.append(row)
    return rows


TABLE_COLUMNS = (
    ("token_accuracy", 3),
    ("copy_token_accuracy", 3),
    ("frame_psnr", 2),
    ("copy_frame_psnr", 2),
    ("dynamic_psnr", 2),
    ("copy_dynamic_psnr", 2),
    ("tokenizer_psnr", 2),
)
"""The figures of a per-horizon row in the order tables show them, with their decimals."""


def table_cells(row: dict) -> list[str]:
    """A per-horizon row's figures as ``value [low, high]`` strings, in the order of :data:`TABLE_COLUMNS`."""
    cells = []
    for name, digits in TABLE_COLUMNS:
        low, high = row[f"{name}_ci"]
        cells.append(f"{row[name]:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]")
    return cells
