"""The world model's reward and episode-end predictions on held-out steps, scored the way it is used.

The validation loop scores every position of every window, so most steps are judged with a short context (the
first step of a window with none). Here each held-out step is scored once, with the context the model reads in
imagination: the ``context_steps`` steps that end at it, or every step since its episode began when there are fewer.
A Breakout life ends some 6 steps after the ball has left the screen, so the end is only predictable with context.

Two decisions are scored for each rare class (a positive reward, a negative one, an episode end):

- **argmax**: the class with the highest probability, as the validation loop does;
- **threshold**: the class when its probability reaches a decision threshold. F1 on a rare class rewards a
  threshold below 0.5 (for a calibrated model the F1-optimal threshold is half the best F1). The threshold is
  *cross-fitted*: the held-out episodes are split in two halves, each half's steps are decided with the threshold
  that maximises F1 on the other half, and the counts are pooled, so no step is judged by a threshold chosen on it.
  ``threshold`` is the one chosen on all held-out steps, the one to use on new data.

Intervals are 95% percentile bootstraps over episodes (the decisions held fixed), as in :mod:`rollouts`.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from iris_wm.data.store import TokenStore
from iris_wm.data.windows import WindowDataset
from iris_wm.evaluate.rollouts import episode_resamples, interval
from sequence_model.rewards import symexp

THRESHOLDS = np.round(np.arange(0.01, 1.0, 0.01), 2)
"""Candidate decision thresholds."""


@dataclass
class StepEvents:
    """One row per held-out step."""

    reward_probabilities: np.ndarray  # (N, 3) probability of a negative, zero and positive reward
    end_probability: np.ndarray  # (N,) probability that the episode ends at the step
    reward_class: np.ndarray  # (N,) 0 negative, 1 zero, 2 positive
    ended: np.ndarray  # (N,) bool
    episodes: np.ndarray  # (N,) episode position of the step
    context: np.ndarray  # (N,) steps the model read, the scored one included


def reward_sign_probabilities(world_model, reward_logits: torch.Tensor) -> torch.Tensor:
    """``(..., 3)`` probabilities of a negative, zero and positive reward from the reward head's logits: the
    softmax of a ``sign`` head; for a ``twohot`` head, the mass of the bins whose reward rounds to each sign."""
    probabilities = reward_logits.float().softmax(-1)
    if world_model.config.reward == "sign":
        return probabilities
    values = symexp(world_model.reward_bins.float())
    sign = torch.where(values <= -0.5, 0, torch.where(values >= 0.5, 2, 1))
    masses = torch.zeros(*probabilities.shape[:-1], 3, dtype=probabilities.dtype, device=probabilities.device)
    return masses.index_add_(-1, sign.to(probabilities.device), probabilities)


@torch.no_grad()
def step_events(
    world_model, tokens: TokenStore, episodes: np.ndarray, batch_size: int = 64, bf16: bool = False
) -> StepEvents:
    """Score every step of ``episodes`` (positions in ``tokens``) once, with up to ``context_steps`` steps of context.

    A step with at least ``context_steps - 1`` steps before it in its episode is the last step of a window that ends
    there; an earlier one is read at its place in the window that starts with its episode (the model is causal, so
    what follows it in that window does not matter). ``bf16`` runs the model under bf16 autocast.
    """
    episodes = np.sort(np.asarray(episodes, dtype=np.int64))
    context = world_model.config.context_steps
    windows = WindowDataset(tokens, episodes, context, pad="right")
    rows, first = windows.anchors, windows.first
    starts = np.maximum(first, rows - context + 1)
    read = rows - starts
    index = np.searchsorted(rows, starts)  # the window anchored at each start (anchors ascend: episodes sorted)
    reward_parts, end_parts = [], []
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()
    for begin in range(0, len(rows), batch_size):
        chunk = slice(begin, begin + batch_size)
        batch = windows.__getitems__(index[chunk])
        with autocast:
            vectors = batch.actions if world_model.config.continuous else None
            states = batch.states if world_model.config.state_dim else None  # read exactly, beside their tokens
            values = None if states is None else world_model.state_codec.position_values(states.float())
            ids = world_model.interleave(world_model.observation_ids(batch.observations, states), batch.actions)
            out = world_model(ids, actions=vectors, values=values)
        at = torch.arange(len(batch)), torch.from_numpy(read[chunk])
        reward_parts.append(reward_sign_probabilities(world_model, out.reward_logits[at]))
        end_parts.append(out.termination_logits[at].float().softmax(-1)[:, 1])
    columns = tokens.columns
    owner = np.repeat(episodes, tokens.episode_lengths[episodes])
    return StepEvents(
        reward_probabilities=torch.cat(reward_parts).numpy().astype(np.float64),
        end_probability=torch.cat(end_parts).numpy().astype(np.float64),
        reward_class=(np.sign(columns.reward[rows]) + 1).astype(np.int64),
        ended=columns.terminated[rows].astype(bool),
        episodes=owner,
        context=read + 1,
    )


def _counts(decided: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """``(..., 3)`` true positives, false positives and false negatives over the last axis of the steps."""
    return np.stack(
        [(decided & truth).sum(-1), (decided & ~truth).sum(-1), (~decided & truth).sum(-1)], axis=-1
    ).astype(np.float64)


def f1_score(counts: np.ndarray) -> np.ndarray:
    """F1 from ``(..., 3)`` true positive, false positive, false negative counts (0 where nothing is positive)."""
    tp, fp, fn = counts[..., 0], counts[..., 1], counts[..., 2]
    return np.where(tp > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)


def best_threshold(probability: np.ndarray, truth: np.ndarray) -> float:
    """The candidate threshold (:data:`THRESHOLDS`) with the highest F1 of ``probability >= threshold`` against
    ``truth``; the lowest such on ties."""
    decided = probability[None, :] >= THRESHOLDS[:, None]  # (thresholds, N)
    return float(THRESHOLDS[int(np.argmax(f1_score(_counts(decided, truth[None, :]))))])


def cross_fitted(
    probability: np.ndarray, truth: np.ndarray, episodes: np.ndarray, seed: int = 0
) -> tuple[np.ndarray, list[float]]:
    """Decisions for every step with a threshold chosen on the other half of the episodes (halves drawn with
    ``seed``), and the two thresholds."""
    unique = np.unique(episodes)
    order = np.random.default_rng(seed).permutation(len(unique))
    half = np.zeros(len(unique), dtype=np.int64)
    half[order[1::2]] = 1
    fold = half[np.searchsorted(unique, episodes)]
    decided = np.zeros_like(truth, dtype=bool)
    thresholds = []
    for k in (0, 1):
        chosen = best_threshold(probability[fold != k], truth[fold != k])
        thresholds.append(chosen)
        decided[fold == k] = probability[fold == k] >= chosen
    return decided, thresholds


def event_figures(events: StepEvents, seed: int = 0, draws: int = 1000) -> dict[str, float | list[float]]:
    """Per rare class (``reward/positive``, ``reward/negative``, ``end``): precision, recall and F1 of the argmax and
    of the cross-fitted threshold, with bootstrap intervals for F1, the threshold chosen on all steps, the class's
    steps (``support``) and the majority-class F1 (0: the class is rare). Classes with no step are left out."""
    weights, clusters = episode_resamples(events.episodes, draws, np.random.default_rng(seed))  # (draws, episodes)
    n = weights.shape[1]
    argmax_reward = events.reward_probabilities.argmax(-1)
    classes = {
        "reward/positive": (events.reward_probabilities[:, 2], events.reward_class == 2, argmax_reward == 2),
        "reward/negative": (events.reward_probabilities[:, 0], events.reward_class == 0, argmax_reward == 0),
        "end": (events.end_probability, events.ended, events.end_probability > 0.5),
    }
    figures: dict[str, float | list[float]] = {"steps": float(len(events.ended)), "episodes": float(n)}
    for name, (probability, truth, by_argmax) in classes.items():
        if not truth.any():
            continue
        by_threshold, fold_thresholds = cross_fitted(probability, truth, events.episodes, seed)
        figures[f"{name}/support"] = float(truth.sum())
        figures[f"{name}/majority_f1"] = 0.0 if truth.mean() <= 0.5 else float(2 * truth.mean() / (1 + truth.mean()))
        figures[f"{name}/threshold"] = best_threshold(probability, truth)
        figures[f"{name}/fold_thresholds"] = fold_thresholds
        for rule, decided in (("argmax", by_argmax), ("threshold", by_threshold)):
            by_episode = np.zeros((n, 3))  # true positives, false positives, false negatives of each episode
            np.add.at(by_episode, clusters, np.stack([decided & truth, decided & ~truth, ~decided & truth], -1))
            counts = by_episode.sum(0)
            tp, fp, fn = counts
            figures[f"{name}/{rule}/precision"] = float(tp / (tp + fp)) if tp + fp > 0 else 0.0
            figures[f"{name}/{rule}/recall"] = float(tp / (tp + fn)) if tp + fn > 0 else 0.0
            figures[f"{name}/{rule}/f1"] = float(f1_score(counts))
            boot = f1_score(weights @ by_episode)
            figures[f"{name}/{rule}/f1_ci"] = interval(boot)
    return figures
