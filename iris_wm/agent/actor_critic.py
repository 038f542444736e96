"""The IRIS actor-critic: an encoder of the current observation, an LSTM over time, policy and value heads.

Two encoders (``ActorCriticConfig.observation``):

- ``frames`` (IRIS, appendix A): four 3x3 convolutions with 2x2 max-pooling read the frame the tokenizer
  reconstructs, ``uint8 (B, 3, H, W)``, scaled to [-1, 1] here. In imagination every step pays for the
  decoder.
- ``tokens``: an embedding per code and per token slot reads the ``K`` tokens ``(B, K)`` directly. No
  frame is decoded in imagination, which is what makes a CPU-sized agent fast.

The recurrent state is passed in and returned, never kept on the module, so one network serves a batch
of imagined trajectories and a batch of real environments alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from einops import rearrange
from torch import nn

from iris_wm.agent.heads import BoxPolicy, DiscretePolicy
from iris_wm.runtime.errors import ConfigError

State = tuple[torch.Tensor, torch.Tensor]
"""The LSTM's ``(h, c)``, each ``(B, lstm_dim)``."""


@dataclass
class ActorCriticConfig:
    """Sizes of the actor-critic. ``num_actions``, ``vocab_size`` and ``tokens_per_frame`` come from the data (the
    token store) and have no defaults: an :class:`ActorCritic` is built once they are set."""

    num_actions: int | None = None
    """Discrete actions of the environment (from the data; None where the actions are continuous)."""
    action_dim: int | None = field(default=None, metadata={"added": "issue 19"})
    """Components of a continuous (box) action (from the data): the policy is then a tanh-squashed Gaussian."""
    action_low: list[float] | None = field(default=None, metadata={"added": "issue 19"})
    """Lower bound of each action component (from the data)."""
    action_high: list[float] | None = field(default=None, metadata={"added": "issue 19"})
    """Upper bound of each action component (from the data)."""
    state_dim: int | None = field(default=None, metadata={"added": "issue 19"})
    """Components of the proprioceptive state read beside the observation (from the data; None: none)."""
    state_low: list[float] | None = field(default=None, metadata={"added": "issue 19"})
    """Range of each state component, to scale it to [-1, 1] (from the data, as the world model's)."""
    state_high: list[float] | None = field(default=None, metadata={"added": "issue 19"})
    observation: Literal["frames", "tokens"] = "frames"
    """Read reconstructed frames (IRIS) or the observation tokens (no decoding in imagination)."""
    frame_size: int = 64
    """Side of the square RGB frames read in ``frames`` mode."""
    channels: tuple[int, ...] = (32, 32, 64, 64)
    """Output channels of the convolutions in ``frames`` mode, each followed by a 2x2 max-pool (IRIS)."""
    vocab_size: int | None = None
    """Observation codes, in ``tokens`` mode (from the data)."""
    tokens_per_frame: int | None = None
    """K, in ``tokens`` mode (from the data)."""
    token_embed_dim: int = 32
    """Width of each token's embedding in ``tokens`` mode."""
    encoder_dim: int = 512
    """Width of the token encoder's output in ``tokens`` mode."""
    lstm_dim: int = 512
    """Hidden size of the LSTM (IRIS: 512)."""

    def __post_init__(self):
        self.channels = tuple(self.channels)
        if self.observation not in ("frames", "tokens"):
            raise ValueError(f"observation must be 'frames' or 'tokens', got {self.observation!r}.")
        if self.observation == "frames" and self.frame_size % 2 ** len(self.channels):
            raise ValueError(
                f"frame_size {self.frame_size} is not divisible by 2^{len(self.channels)} (one "
                "max-pool per convolution): change frame_size or channels."
            )

    @property
    def continuous(self) -> bool:
        return self.action_dim is not None

    def check_sizes(self) -> None:
        """Raise where a size this observation mode needs from the data is still unset."""
        needed = ("vocab_size", "tokens_per_frame") if self.observation == "tokens" else ()
        unset = [name for name in needed if getattr(self, name) is None]
        if (self.num_actions is None) == (self.action_dim is None):
            unset.append("num_actions or action_dim (exactly one)")
        if self.continuous and (self.action_low is None or self.action_high is None):
            unset.append("action_low and action_high")
        if self.state_dim is not None and (self.state_low is None or self.state_high is None):
            unset.append("state_low and state_high")
        if unset:
            raise ConfigError(
                f"ActorCriticConfig.{', '.join(unset)} unset: these sizes come from the data (the token store's "
                "manifest); set them, or let the training stage read them from the store."
            )


# Checkpoints are read with torch.load(weights_only=True); hyperparameters can hold this dataclass.
torch.serialization.add_safe_globals([ActorCriticConfig])


@dataclass
class ActorCriticOutput:
    logits: torch.Tensor  # (B, A) policy logits, or (B, 2 D) means and raw log stds for box actions
    value: torch.Tensor  # (B,) state value
    state: State


class FrameEncoder(nn.Module):
    def __init__(self, cfg: ActorCriticConfig):
        super().__init__()
        layers, c_in = [], 3
        for c_out in cfg.channels:
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.MaxPool2d(2), nn.ReLU()]
            c_in = c_out
        self.net = nn.Sequential(*layers, nn.Flatten())
        self.frame_size = cfg.frame_size
        self.out_dim = c_in * (cfg.frame_size // 2 ** len(cfg.channels)) ** 2

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        if (
            frames.dtype != torch.uint8
            or frames.dim() != 4
            or tuple(frames.shape[1:]) != (3, self.frame_size, self.frame_size)
        ):
            raise ValueError(
                f"The actor-critic reads frames as uint8 (B, 3, {self.frame_size}, {self.frame_size}); "
                f"got {frames.dtype} {tuple(frames.shape)}."
            )
        return self.net(frames.float().div(127.5).sub(1.0))


class TokenEncoder(nn.Module):
    def __init__(self, cfg: ActorCriticConfig):
        super().__init__()
        self.K, self.V = cfg.tokens_per_frame, cfg.vocab_size
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.token_embed_dim)
        self.slot = nn.Parameter(torch.zeros(cfg.tokens_per_frame, cfg.token_embed_dim))
        nn.init.normal_(self.slot, std=0.02)
        self.project = nn.Sequential(nn.Linear(cfg.tokens_per_frame * cfg.token_embed_dim, cfg.encoder_dim), nn.ReLU())
        self.out_dim = cfg.encoder_dim

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.dim() != 2 or tokens.shape[1] != self.K or tokens.is_floating_point():
            raise ValueError(
                f"The actor-critic reads token ids (B, {self.K}); got {tokens.dtype} {tuple(tokens.shape)}."
            )
        x = self.embedding(tokens.long()) + self.slot  # (B, K, E)
        return self.project(rearrange(x, "b k e -> b (k e)"))


class ActorCritic(nn.Module):
    """``forward(observation, state) -> logits, value, next state`` for one time step of a batch."""

    def __init__(self, config: ActorCriticConfig):
        super().__init__()
        config.check_sizes()
        self.config = cfg = config
        self.encoder = FrameEncoder(cfg) if cfg.observation == "frames" else TokenEncoder(cfg)
        self.lstm = nn.LSTMCell(self.encoder.out_dim + (cfg.state_dim or 0), cfg.lstm_dim)
        self.actor = nn.Linear(cfg.lstm_dim, 2 * cfg.action_dim if cfg.continuous else cfg.num_actions)
        if cfg.continuous:
            self.register_buffer("action_low", torch.tensor(cfg.action_low, dtype=torch.float32), persistent=False)
            self.register_buffer("action_high", torch.tensor(cfg.action_high, dtype=torch.float32), persistent=False)
        if cfg.state_dim:
            self.register_buffer("state_low", torch.tensor(cfg.state_low, dtype=torch.float32), persistent=False)
            self.register_buffer("state_high", torch.tensor(cfg.state_high, dtype=torch.float32), persistent=False)
        self.critic = nn.Linear(cfg.lstm_dim, 1)
        # A near-uniform first policy and a value near zero (small final layers).
        for head in (self.actor, self.critic):
            nn.init.normal_(head.weight, std=0.01)
            nn.init.zeros_(head.bias)
        if cfg.continuous:  # raw 0.55: a first Gaussian of std about 1.9 before the tanh (heads.INITIAL_LOG_STD at 0)
            nn.init.constant_(self.actor.bias[cfg.action_dim :], 0.55)

    @property
    def reads_tokens(self) -> bool:
        return self.config.observation == "tokens"

    def initial_state(self, batch: int, device: torch.device | str | None = None) -> State:
        zeros = torch.zeros(batch, self.config.lstm_dim, device=device)
        return zeros, zeros.clone()

    @staticmethod
    def reset_state(state: State, keep: torch.Tensor) -> State:
        """Zero the state where ``keep (B,)`` is False (a new episode starts there)."""
        keep = keep.to(state[0].dtype)[:, None]
        return state[0] * keep, state[1] * keep

    @property
    def reads_state(self) -> bool:
        return self.config.state_dim is not None

    def policy(self, logits: torch.Tensor) -> DiscretePolicy | BoxPolicy:
        """The action distribution of the policy head's output."""
        if self.config.continuous:
            return BoxPolicy(logits, self.action_low, self.action_high)
        return DiscretePolicy(logits)

    def forward(
        self, observation: torch.Tensor, state: State, proprio: torch.Tensor | None = None
    ) -> ActorCriticOutput:
        """One step: ``observation`` (frames or tokens), the recurrent ``state``, and for a network that reads
        proprioception its values ``proprio (B, state_dim)`` (scaled to [-1, 1] over the data's range here)."""
        features = self.encoder(observation)
        if self.reads_state:
            if proprio is None or proprio.shape != (features.shape[0], self.config.state_dim):
                got = None if proprio is None else tuple(proprio.shape)
                raise ValueError(
                    f"This actor-critic reads a state of {self.config.state_dim} components beside the observation: "
                    f"pass proprio of shape {(features.shape[0], self.config.state_dim)}; got {got}."
                )
            scaled = (proprio.float() - self.state_low) / (self.state_high - self.state_low) * 2 - 1
            features = torch.cat([features, scaled.to(features.dtype)], dim=-1)
        h, c = self.lstm(features, state)
        return ActorCriticOutput(self.actor(h), self.critic(h).squeeze(-1), (h, c))
