"""What the world model returns: the heads' logits of a forward pass, and the losses of a window."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class WorldModelOutput:
    """Logits at the positions each head reads (``P`` = positions given, ``T`` = action positions among them)."""

    hidden: torch.Tensor  # (B, P, E)
    observation_logits: torch.Tensor  # (B, P, V) at every position; only `predicts_observation` ones are meaningful
    reward_logits: torch.Tensor  # (B, T, C) at action positions
    termination_logits: torch.Tensor  # (B, T, 2) at action positions


@dataclass
class WorldModelLosses:
    total: torch.Tensor
    observation: torch.Tensor  # mean CE over real observation targets, nats
    next_frame: torch.Tensor  # mean CE over the targets in frames 1.., given the past frames: equal in both modes
    reward: torch.Tensor
    termination: torch.Tensor
    reward_accuracy: torch.Tensor
    reward_confusion: torch.Tensor  # (3, 3) real steps by true (rows) and predicted (columns) sign: -, 0, +
    termination_confusion: torch.Tensor  # (2, 2) real steps by true and predicted end: no, yes
    observation_targets: torch.Tensor  # how many observation targets the mean is over (for exact pooled means)
    next_frame_targets: torch.Tensor  # how many targets ``next_frame`` is over
    steps: torch.Tensor  # how many real steps the reward and termination means are over
    state: torch.Tensor | None = None  # mean CE over the state tokens' targets (a world model of proprioception)
