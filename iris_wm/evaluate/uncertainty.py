"""Does an ensemble know when it is unsure? (issue 18, part 2)

A window is ``burn_in`` real steps that prime the imagination, then ``horizon`` steps imagined greedily with the
window's real actions; its error is the share of tokens of the imagined frame at the last step that differ from the
real ones. Its disagreement is measured two ways:

- **real**: the members read the window's real steps (teacher forcing, every member's full forward pass over
  chunks of its context) and the mutual information of their predictions of each real token of the ``horizon``
  frames that are imagined is averaged: how unsure the ensemble is about what the imagination has to predict;
- **imagined**: the mean over the imagined steps of the members' token disagreement
  (:class:`~iris_wm.envs.imagination.Disagreement`), all that a planner or a safety check has at run time. An
  imagination drifts back towards what the model knows, so this one sees less of a window that is new to it.

Two figures for each:

- **out of distribution**: held-out windows of the game the members were trained on against windows of another
  game passed through the same tokenizer (its actions taken modulo the trained game's); the AUROC of the
  disagreement as a score of "the other game" (Mann-Whitney: the chance that a random other-game window is scored
  above a random own-game window, ties counted half);
- **error ranking**: over the own-game windows, the Spearman rank correlation of the disagreement with the error.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import rankdata, spearmanr

from iris_wm.data.store import TokenStore
from iris_wm.envs.imagination import ImaginationConfig, ImaginationEnv
from iris_wm.evaluate.rollouts import pick_windows, windows_in
from iris_wm.runtime.errors import ConfigError
from sequence_model.ensemble import mutual_information


def auroc(negatives: np.ndarray, positives: np.ndarray) -> float:
    """The chance that a random positive scores above a random negative (ties half): Mann-Whitney's U / (n m)."""
    ranks = rankdata(np.r_[negatives, positives])
    n, m = len(negatives), len(positives)
    return float((ranks[n:].sum() - m * (m + 1) / 2) / (n * m))


def window_rows(store: TokenStore, length: int, count: int, held_out: bool, seed: int) -> np.ndarray:
    """``(N, length)`` rows of up to ``count`` windows inside one episode: held-out episodes' (the split the
    training used), or any episode's (a store of another game)."""
    rng = np.random.default_rng(seed)
    if held_out:
        first, _ = pick_windows(store, length, count, 0.1, 0, rng)
    else:
        drawn = windows_in(store, np.arange(len(store.episode_lengths)), length, count, rng)
        if drawn is None:
            raise ConfigError(f"No episode of {store.root} has the {length} steps a window needs: collect more.")
        first = drawn[0]
    return np.asarray(first)[:, None] + np.arange(length)


@torch.no_grad()
def real_disagreement(ensemble, tokens: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """``(B,)``: the members' mutual information about each next real token of ``tokens (B, L, K)`` (with the
    ``actions (B, L)`` between), averaged over the window; read in chunks of the context, one step shared."""
    first = ensemble.members[0]
    steps, offset = tokens.shape[1], first.target_offset
    total, count, start = torch.zeros(tokens.shape[0], device=tokens.device), 0, 0
    while start < steps - 1:
        end = min(start + first.config.context_steps, steps)
        ids = first.interleave(tokens[:, start:end], actions[:, start:end])
        positions = torch.arange(ids.shape[1], device=ids.device)
        used = first.predicts_observation(positions) & (positions + offset < ids.shape[1])
        logits = torch.stack([member(ids).observation_logits[:, used] for member in ensemble.members])
        information = mutual_information(logits)
        total, count = total + information.sum(1), count + information.shape[1]
        start = end - 1
    return total / count


@torch.no_grad()
def window_disagreement(
    ensemble, store: TokenStore, rows: np.ndarray, burn_in: int, num_actions: int, batch: int = 64
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per window: the disagreement about its real steps, the mean token disagreement over its imagined steps, and
    the share of wrong tokens at the last."""
    env = ImaginationEnv(ensemble, config=ImaginationConfig(temperature=0.0))
    horizon = rows.shape[1] - burn_in
    real, disagreement, error = [], [], []
    for start in range(0, len(rows), batch):
        chunk = rows[start : start + batch]
        tokens = torch.from_numpy(np.stack([store.observations(r) for r in chunk])).long().to(env.device)
        actions = torch.from_numpy(np.asarray(store.columns.action[chunk])).long().to(env.device) % num_actions
        later = slice(burn_in - 1, None)  # the last real step read, then the steps the imagination predicts
        real.append(real_disagreement(ensemble, tokens[:, later], actions[:, later]).cpu().numpy())
        env.reset(tokens[:, :burn_in], actions[:, : burn_in - 1])
        total = torch.zeros(len(chunk), device=env.device)
        for t in range(horizon):
            step = env.step(actions[:, burn_in - 1 + t])
            total += step.disagreement.tokens.float()
        disagreement.append((total / horizon).cpu().numpy())
        error.append((step.tokens != tokens[:, -1]).float().mean(1).cpu().numpy())
    return np.concatenate(real), np.concatenate(disagreement), np.concatenate(error)


def uncertainty_report(
    ensemble, own: TokenStore, other: TokenStore, windows: int = 256, burn_in: int = 4, horizon: int = 10, seed: int = 0
) -> dict:
    """The two figures of the module's docstring, with the per-window values."""
    if not hasattr(ensemble, "members"):
        raise ConfigError("An uncertainty report needs an ensemble of world models (iris-wm ensemble builds one).")
    if other.spec.shape != own.spec.shape:
        raise ConfigError(
            f"{other.root} has frames of {other.spec.shape} tokens, {own.root} {own.spec.shape}: encode the other "
            "game with the same tokenizer."
        )
    digests = [store.manifest["settings"].get("tokenizer_digest") for store in (own, other)]
    if None not in digests and digests[0] != digests[1]:
        raise ConfigError(
            f"{other.root} was encoded by another tokenizer than {own.root}: its token ids would mean other codes. "
            "Encode the other game's episodes with the tokenizer of the trained game."
        )
    length, actions = burn_in + horizon, ensemble.config.num_actions
    own_rows, other_rows = (
        window_rows(own, length, windows, True, seed),
        window_rows(other, length, windows, False, seed),
    )
    own_real, own_imagined, own_error = window_disagreement(ensemble, own, own_rows, burn_in, actions)
    other_real, other_imagined, _ = window_disagreement(ensemble, other, other_rows, burn_in, actions)
    figures = {}
    for name, mine, theirs in (("real", own_real, other_real), ("imagined", own_imagined, other_imagined)):
        figures[name] = {
            "auroc_other_game": auroc(mine, theirs),
            "spearman_with_error": float(spearmanr(mine, own_error).statistic),
            "mean": {"own": float(mine.mean()), "other": float(theirs.mean())},
        }
    return {
        "members": ensemble.size,
        "windows": {"own": len(own_rows), "other": len(other_rows)},
        "burn_in": burn_in,
        "horizon": horizon,
        **figures,
        "mean_token_error_at_horizon": float(own_error.mean()),
        "per_window": {
            "own_real": own_real.tolist(),
            "own_imagined": own_imagined.tolist(),
            "own_error": own_error.tolist(),
            "other_real": other_real.tolist(),
            "other_imagined": other_imagined.tolist(),
        },
    }
