"""The reward and episode-end heads' targets and losses: sign classes (IRIS) or symlog two-hot bins (DreamerV3)
for the reward, two classes for the end; read at the action positions, over the real steps only."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

from sequence_model.metrics import confusion


def symlog(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.log1p(x.abs())


def symexp(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.expm1(x.abs())


def twohot(rewards: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """``(..., len(bins))``: each reward's symlog split between the two bins around it, in proportion."""
    y = symlog(rewards).clamp(bins[0], bins[-1])
    upper = torch.searchsorted(bins, y.contiguous()).clamp(1, len(bins) - 1)
    lower = upper - 1
    span = bins[upper] - bins[lower]
    w_upper = (y - bins[lower]) / span
    target = torch.zeros(*rewards.shape, len(bins), device=rewards.device)
    target.scatter_(-1, lower.unsqueeze(-1), (1 - w_upper).unsqueeze(-1))
    target.scatter_add_(-1, upper.unsqueeze(-1), w_upper.unsqueeze(-1))
    return target


def expected_reward(kind: str, bins: torch.Tensor | None, reward_logits: torch.Tensor) -> torch.Tensor:
    """Reward from the head's logits: -1/0/+1 for ``sign``, symexp of the expected bin for ``twohot``."""
    if kind == "sign":
        return reward_logits.argmax(-1).float() - 1.0
    return symexp((reward_logits.softmax(-1) * bins).sum(-1))


def event_losses(kind: str, bins: torch.Tensor | None, out, rewards, terminated, mask) -> tuple:
    """``(reward loss, reward accuracy, reward sign confusion, termination loss, termination confusion)`` of a
    window's ``out`` (a WorldModelOutput) against ``rewards``, ``terminated`` and ``mask`` ``(B, T)``."""
    weights = mask.float()
    count = weights.sum().clamp_min(1)
    reward_logits = out.reward_logits.float()
    if kind == "sign":
        reward_class = (torch.sign(rewards) + 1).long()
        reward_ce = F.cross_entropy(
            rearrange(reward_logits, "b t c -> (b t) c"), reward_class.reshape(-1), reduction="none"
        )
        accuracy = ((reward_logits.argmax(-1) == reward_class).float() * weights).sum() / count
    else:
        reward_ce = -(twohot(rewards, bins) * reward_logits.log_softmax(-1)).sum(-1).reshape(-1)
        predicted = expected_reward(kind, bins, reward_logits)
        accuracy = (((predicted - rewards).abs() < 0.5).float() * weights).sum() / count
    reward = (reward_ce * weights.reshape(-1)).sum() / count
    predicted_sign = torch.sign(expected_reward(kind, bins, reward_logits).round()) + 1  # sign classes for both heads
    reward_confusion = confusion(torch.sign(rewards) + 1, predicted_sign, mask, 3)
    ends = terminated.long()
    term_ce = F.cross_entropy(
        rearrange(out.termination_logits.float(), "b t c -> (b t) c"), ends.reshape(-1), reduction="none"
    )
    termination = (term_ce * weights.reshape(-1)).sum() / count
    termination_confusion = confusion(ends, out.termination_logits.argmax(-1), mask, 2)
    return reward, accuracy, reward_confusion, termination, termination_confusion
