"""Proprioception as tokens: each state component discretised into uniform bins over its range, one token each.

A world model of proprioception reads and predicts a step's state as ``S`` more observation tokens after the
frame's ``K``. Their ids follow the frame codes: ``V + bin``. A value outside the range takes the end bin; a token
decodes to its bin's centre.
"""

from __future__ import annotations

import torch
from torch import nn


class StateCodec(nn.Module):
    """State values <-> state token ids for a :class:`~sequence_model.world_model.WorldModelConfig` with a state."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        # Not saved in state dicts: the range is part of the config, which checkpoints hold.
        self.register_buffer("low", torch.tensor(config.state_low, dtype=torch.float32), persistent=False)
        self.register_buffer("high", torch.tensor(config.state_high, dtype=torch.float32), persistent=False)

    def encode(self, states: torch.Tensor) -> torch.Tensor:
        """``(..., S)`` state values -> ``(..., S)`` token ids in ``[V, V + bins)``."""
        cfg = self.config
        unit = (states.float() - self.low) / (self.high - self.low)
        return (unit * cfg.state_bins).floor().clamp(0, cfg.state_bins - 1).long() + cfg.vocab_size

    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        """``(..., S)`` state token ids -> the centres of their bins ``(..., S)``."""
        cfg = self.config
        width = (self.high - self.low) / cfg.state_bins
        return self.low + ((ids - cfg.vocab_size).float() + 0.5) * width

    def observation_ids(self, tokens: torch.Tensor, states: torch.Tensor | None) -> torch.Tensor:
        """The frame's tokens ``(..., K)`` with the state's ``(..., S)`` after them."""
        size = self.config.state_dim
        if states is None or states.shape[-1] != size or states.shape[:-1] != tokens.shape[:-1]:
            got = None if states is None else tuple(states.shape)
            raise ValueError(
                f"This world model models a state of {size} components beside the frame: pass states of "
                f"shape {(*tokens.shape[:-1], size)} with the tokens; got {got}."
            )
        return torch.cat([tokens, self.encode(states).to(tokens.dtype)], dim=-1)

    def slot_mask(self, slots: torch.Tensor) -> torch.Tensor:
        """``(..., observation_vocab)`` True where slot ``slots`` may take the id: a frame slot the frame codes, a
        state slot the state bins."""
        cfg = self.config
        is_state = (slots >= cfg.tokens_per_frame)[..., None]
        is_bin = torch.arange(cfg.observation_vocab, device=slots.device) >= cfg.vocab_size
        return is_state == is_bin
