"""What the world model's validation reports beside its losses: confusion counts of the reward sign and of the
episode end, per class precision, recall and F1 with the majority-class baseline, and bits per frame."""

from __future__ import annotations

import math

import torch


def confusion(true: torch.Tensor, predicted: torch.Tensor, mask: torch.Tensor, classes: int) -> torch.Tensor:
    """``(classes, classes)`` counts of the masked steps by true class (rows) and predicted class (columns)."""
    index = (true.long() * classes + predicted.long()).reshape(-1)
    counts = torch.bincount(index, weights=mask.reshape(-1).float(), minlength=classes * classes)
    return counts.view(classes, classes)


def classification_figures(confusion_counts: torch.Tensor, names: tuple[str, ...]) -> dict[str, float]:
    """Per class precision, recall and F1 of a confusion matrix, and the F1 of always predicting the majority class
    (``majority_f1/<class>``: 0 for every other class)."""
    counts = confusion_counts.double()
    true, predicted, hits = counts.sum(1), counts.sum(0), counts.diagonal()
    majority = int(true.argmax())
    figures = {}
    for i, name in enumerate(names):
        precision = float(hits[i] / predicted[i]) if predicted[i] > 0 else 0.0
        recall = float(hits[i] / true[i]) if true[i] > 0 else 0.0
        figures[f"precision/{name}"] = precision
        figures[f"recall/{name}"] = recall
        figures[f"f1/{name}"] = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
        share = float(true[i] / true.sum()) if true.sum() > 0 else 0.0
        figures[f"majority_f1/{name}"] = 2 * share / (1 + share) if i == majority else 0.0
        figures[f"support/{name}"] = float(true[i])
    return figures


REWARD_CLASSES = ("negative", "zero", "positive")
END_CLASSES = ("continues", "ends")


def bits_per_frame(observation_ce_nats: torch.Tensor | float, tokens_per_frame: int) -> torch.Tensor | float:
    """Observation cross-entropy per token (nats) -> bits per frame, comparable across tokenizers."""
    return observation_ce_nats * tokens_per_frame / math.log(2)
