"""Proprioception as tokens: a step's state is ``S`` more observation tokens after the frame's ``K``, ids ``V + bin``.

Each component is read as a value on a line of ``bins`` uniform bins over its range and predicted as its *change*
from the step before, on a second line of ``bins`` bins spaced uniformly in ``symlog(change / bin width)``. A value
between two bins' centres is the two bins in proportion (two-hot, as DreamerV3 codes rewards and values):

- input: the two bins' embeddings mixed in that proportion (a value at a bin's centre reads as that bin's id), so
  the model reads the value, not only its bin;
- target: the change's two bins in proportion, under the one cross-entropy of every observation token;
- imagination: the component is the value before plus the expected change (:meth:`StateCodec.predict`), fed back
  exactly; its token id is the bin the value falls in (:meth:`StateCodec.encode`).

Why: on dm_control's reacher a joint moves a fifth of a bin (of 64 over its range) a step. Predicted as one-hot
bins of the value, the arm never moved in imagination; as two-hot values, a one-step prediction of the joint
angles was no better than copying them (the model must shift a value's place within its bin); as a change, the
prediction is a smooth function of the velocity (docs/LOG.md, issue 19). Values outside the range read as the end
bins' centres, changes outside the second line as its ends.
"""

from __future__ import annotations

import torch
from torch import nn

from sequence_model.rewards import symexp, symlog


def check_state_config(dim: int | None, bins: int, low: list[float] | None, high: list[float] | None) -> None:
    """Raise where a world model's state settings cannot code a state (its range is checked once it is known)."""
    if dim is None:
        return
    if low is not None and high is not None:
        low, high = list(low), list(high)
        if {len(low), len(high)} != {dim} or any(a >= b for a, b in zip(low, high, strict=True)):
            raise ValueError(
                f"WorldModelConfig: state_low and state_high need {dim} values each with low < high; "
                f"got {low} and {high}. They come from the data (the training episodes' range)."
            )
    if bins < 2:
        raise ValueError(f"WorldModelConfig: state_bins must be at least 2 (a value lies between two); got {bins}.")


class StateCodec(nn.Module):
    """State values <-> state tokens for a :class:`~sequence_model.world_model.WorldModelConfig` with a state."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        # Not saved in state dicts: the range is part of the config, which checkpoints hold.
        self.register_buffer("low", torch.tensor(config.state_low, dtype=torch.float32), persistent=False)
        self.register_buffer("high", torch.tensor(config.state_high, dtype=torch.float32), persistent=False)

    @property
    def width(self) -> torch.Tensor:
        return (self.high - self.low) / self.config.state_bins

    def encode(self, states: torch.Tensor, components: torch.Tensor | None = None) -> torch.Tensor:
        """``(..., S)`` state values (or those of ``components (n,)``) -> token ids in ``[V, V + bins)``: the bin each
        value falls in."""
        cfg = self.config
        low, high = (self.low, self.high) if components is None else (self.low[components], self.high[components])
        unit = (states.float() - low) / (high - low)
        return (unit * cfg.state_bins).floor().clamp(0, cfg.state_bins - 1).long() + cfg.vocab_size

    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        """``(..., S)`` state token ids -> the centres of their bins ``(..., S)``."""
        return self.low + ((ids - self.config.vocab_size).float() + 0.5) * self.width

    def twohot(self, values: torch.Tensor, components: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Values of state ``components`` (both ``(..., n)``; a component index per value) -> the ids of the bins
        below and above each value's coordinate and the weight of the upper one."""
        low, width = self.low[components], self.width[components]
        return self._between((values.float() - low) / width - 0.5)

    def _between(self, coordinate: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A place on a line of bins (bin ``k``'s centre at ``k``, clamped to the line) -> the ids of the bins below
        and above it and the weight of the upper one."""
        bins = self.config.state_bins
        coordinate = coordinate.clamp(0, bins - 1)
        lower = coordinate.floor().clamp(0, bins - 2)
        weight = coordinate - lower
        lower = lower.long() + self.config.vocab_size
        return lower, lower + 1, weight

    def change_bins(self) -> torch.Tensor:
        """Centres of the change bins in ``symlog(change / bin width)``: uniform over ``+-symlog(bins)``."""
        end = symlog(torch.tensor(float(self.config.state_bins)))
        return torch.linspace(-end, end, self.config.state_bins, device=self.low.device)

    def twohot_change(
        self, change: torch.Tensor, components: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Changes of state ``components`` (both ``(..., n)``) -> their two change bins' ids and the upper's weight."""
        centres = self.change_bins()
        y = symlog(change.float() / self.width[components])
        return self._between((y - centres[0]) / (centres[1] - centres[0]))

    def predict(self, logits: torch.Tensor, previous: torch.Tensor, components: torch.Tensor) -> torch.Tensor:
        """Logits ``(..., n, observation_vocab)`` of state ``components (n,)`` and their values the step before
        ``(..., n)`` -> the predicted values: the value before plus the expected change."""
        probabilities = logits[..., self.config.vocab_size :].float().softmax(-1)
        change = symexp((probabilities * self.change_bins()).sum(-1)) * self.width[components]
        return previous.float() + change

    def component(self, positions: torch.Tensor) -> torch.Tensor:
        """The state component each sequence position holds ``(N,)``, -1 where it holds a frame token or an action."""
        cfg = self.config
        slot = positions % cfg.tokens_per_block - cfg.tokens_per_frame
        return torch.where((slot >= 0) & (slot < cfg.state_dim), slot, -1)

    def position_values(self, states: torch.Tensor) -> torch.Tensor:
        """``(B, T, S)`` states of whole steps -> ``(B, T * (K + S + 1))`` values aligned with the interleaved ids:
        each state slot's value, 0 at the frame's and the action's positions."""
        B, T, S = states.shape
        values = states.new_zeros(B, T, self.config.tokens_per_block)
        values[..., self.config.tokens_per_frame : self.config.tokens_per_frame + S] = states
        return values.flatten(1)

    def mix(self, embedded: torch.Tensor, table: nn.Embedding, values: torch.Tensor, start: int) -> torch.Tensor:
        """``embedded (B, P, E)`` of the ids from position ``start``, with each state slot's embedding the two-hot
        mix of its value's bins (``values (B, P)``, aligned with the ids)."""
        positions = torch.arange(start, start + embedded.shape[1], device=embedded.device)
        component = self.component(positions)
        lower, upper, weight = self.twohot(values, component.clamp(min=0)[None].expand_as(values))
        weight = weight[..., None].to(table.weight.dtype)
        mixed = (table(lower) * (1 - weight) + table(upper) * weight).to(embedded.dtype)
        return torch.where((component >= 0)[None, :, None], mixed, embedded)

    def has_target(self, targets: torch.Tensor) -> torch.Tensor:
        """``(N,)`` False for target positions that hold a state component of a window's first step: its change
        from the step before is not in the window."""
        return (self.component(targets) < 0) | (targets >= self.config.tokens_per_block)

    def log_likelihood(
        self, log_p: torch.Tensor, targets: torch.Tensor, values: torch.Tensor, positions: torch.Tensor, shift: int
    ) -> torch.Tensor:
        """``(B, N)`` log-likelihood of each position's target ``shift`` positions on, given the log-probabilities
        ``log_p (B, N, vocab)``: a frame target's id ``targets (B, N)``; a state target, two-hot, its change from the
        step before (``values (B, N)`` aligned with ``positions (N,)``, which start at 0; the last ``shift`` positions
        and the targets :meth:`has_target` rules out have none)."""
        component = self.component(positions + shift)
        zeros, back = torch.zeros_like(values), self.config.tokens_per_block - shift  # the step before: `back` back
        following = torch.cat([values[:, shift:], zeros[:, :shift]], dim=1)
        change = following - torch.cat([zeros[:, :back], values], dim=1)[:, : values.shape[1]]
        below, above, weight = self.twohot_change(change, component.clamp(min=0)[None].expand_as(change))
        on_state = (component >= 0)[None]
        lower, upper = torch.where(on_state, below, targets), torch.where(on_state, above, targets)
        weight = torch.where(on_state, weight, 0.0)
        at_lower, at_upper = log_p.gather(-1, lower[..., None])[..., 0], log_p.gather(-1, upper[..., None])[..., 0]
        return at_lower * (1 - weight) + at_upper * weight

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
