"""The IRIS world model: a GPT over the interleaved sequence ``[o_t^1 .. o_t^K, a_t, o_{t+1}^1, ...]``.

Robot data (issue 19): a continuous action enters through a linear map of its vector at the action position, and
a proprioceptive state adds ``S`` observation tokens after the frame's ``K`` (:mod:`sequence_model.state`); below,
read ``K`` as all the observation tokens of a step.

Token layout (Micheli et al. 2023, section 2.2): step ``t`` is a block of ``K + 1`` tokens, the ``K``
observation tokens of frame ``t`` then the action ``a_t``; position ``p`` holds an observation token when
``p % (K + 1) < K`` and an action otherwise. The reward ``r_t`` and the episode end after ``a_t`` are read at
the action position. The next frame is predicted in one of two ways (``WorldModelConfig.prediction``):

- ``autoregressive`` (IRIS): causal attention; the observation head reads every position whose *next* token is
  an observation token, i.e. observation positions ``0 .. K-2`` of a block (predicting tokens ``1 .. K-1`` of
  the same frame) and the action position (predicting token 0 of the next frame). The hidden state of the
  last observation token would predict the action: not read. Imagining a frame takes ``K`` passes.
- ``parallel`` (block teacher forcing, Dedieu et al. 2025, "Improving Transformer World Models"): block-causal
  attention, every token sees its whole step (the frame and the action) and all earlier steps; observation
  position ``k`` of step ``t`` predicts token ``k`` of frame ``t + 1``. All ``K`` tokens of the next frame come
  from one pass, drawn independently given the past; training computes every step's prediction in one forward
  pass, as the autoregressive objective does.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import torch
from einops import rearrange
from torch import nn

from sequence_model.gpt import GPT, GPTConfig, KVCache, attention_flops_per_token, matmul_params
from sequence_model.outputs import WorldModelLosses, WorldModelOutput
from sequence_model.rewards import event_losses, expected_reward
from sequence_model.state import StateCodec, check_state_config


@dataclass
class WorldModelConfig:
    """Sizes of the world model. ``vocab_size``, ``tokens_per_frame`` and ``num_actions`` come from the data (the
    token store): they have no defaults, and a :class:`WorldModel` is built only once they are set."""

    vocab_size: int | None = None
    """Observation codes (the tokenizer's codebook size; from the data)."""
    tokens_per_frame: int | None = None
    """K, tokens per frame (from the data; 0 with a state and no frames: the model of proprioception alone)."""
    num_actions: int | None = None
    """Discrete actions of the environment (from the data; None where the actions are continuous)."""
    action_dim: int | None = field(default=None, metadata={"added": "issue 19"})
    """Components of a continuous (box) action, which enters through a linear embedding in place of the action
    token's (from the data; None where the actions are discrete)."""
    state_dim: int | None = field(default=None, metadata={"added": "issue 19"})
    """Components of the proprioceptive state (from the data; None: frames only). Each component is a point among
    ``state_bins`` bins over ``[state_low, state_high]`` (two-hot, :mod:`sequence_model.state`) and one more
    observation token of its step, after the frame's K: one cross-entropy loss, and every layout and cache rule of
    the frame tokens holds for them."""
    state_bins: int = field(default=64, metadata={"added": "issue 19"})
    """Bins per state component (uniform over its range, at least 2; a bin's id decodes to its centre)."""
    state_low: list[float] | None = field(default=None, metadata={"added": "issue 19"})
    """Lower end of each state component's range (from the data: the training episodes, with a margin)."""
    state_high: list[float] | None = field(default=None, metadata={"added": "issue 19"})
    """Upper end of each state component's range (from the data)."""
    context_steps: int = 20
    """Time steps in the context window (IRIS: 20, i.e. 340 tokens with K = 16)."""
    gpt: GPTConfig = field(default_factory=lambda: GPTConfig(max_tokens=0))
    """The transformer; its ``max_tokens`` follows from ``context_steps * (K + 1)`` (a copy is made with it: a
    GPTConfig given here is never changed)."""
    reward: Literal["sign", "twohot"] = "sign"
    """``sign``: three classes for negative, zero, positive reward (IRIS); ``twohot``: symlog two-hot
    regression over ``reward_bins`` bins, for unclipped rewards (DreamerV3)."""
    reward_bins: int = 255
    """Bins of the two-hot reward head, evenly spaced in symlog space over [-20, 20]."""
    observation_weight: float = 1.0
    """Weight of the observation cross-entropy."""
    state_weight: float = field(default=1.0, metadata={"added": "issue 19"})
    """Weight of a state target against a frame token's within the observation cross-entropy."""
    reward_weight: float = 1.0
    """Weight of the reward loss."""
    termination_weight: float = 1.0
    """Weight of the termination loss."""
    prediction: Literal["autoregressive", "parallel"] = field(default="autoregressive", metadata={"added": "issue 16"})
    """``autoregressive``: the next frame token by token, ``K`` passes per imagined step (IRIS); ``parallel``: all
    tokens of the next frame from one pass under a block-causal mask (block teacher forcing)."""

    def __post_init__(self):
        for name in ("vocab_size", "tokens_per_frame", "num_actions", "action_dim", "state_dim", "context_steps"):
            value = getattr(self, name)
            least = 0 if name in ("vocab_size", "tokens_per_frame") and self.state_dim else 1  # state only
            if value is not None and (not isinstance(value, int) or value < least):
                raise ValueError(f"WorldModelConfig: {name} must be a whole number of at least {least}, got {value!r}.")
        gpt = GPTConfig(**self.gpt) if isinstance(self.gpt, dict) else self.gpt
        if self.prediction not in ("autoregressive", "parallel"):
            raise ValueError(
                f"WorldModelConfig: prediction must be 'autoregressive' or 'parallel', got {self.prediction!r}."
            )
        check_state_config(self.state_dim, self.state_bins, self.state_low, self.state_high)
        for name in ("observation_weight", "state_weight", "reward_weight", "termination_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"WorldModelConfig: {name} must be at least 0, got {getattr(self, name)!r}.")
        if self.tokens_per_frame is not None:
            block = self.tokens_per_block if self.parallel else 1
            gpt = replace(gpt, max_tokens=self.context_steps * self.tokens_per_block, block_size=block)
        self.gpt = gpt

    @property
    def parallel(self) -> bool:
        return self.prediction == "parallel"

    @property
    def continuous(self) -> bool:
        """True where actions are float vectors of ``action_dim`` components (a box space)."""
        return self.action_dim is not None

    @property
    def tokens_per_observation(self) -> int:
        """Observation tokens of a step: the frame's K, then one per state component."""
        return self.tokens_per_frame + (self.state_dim or 0)

    @property
    def tokens_per_block(self) -> int:
        return self.tokens_per_observation + 1

    @property
    def observation_vocab(self) -> int:
        """Ids an observation token may take: the frame codes ``[0, V)``, then the state bins ``[V, V + bins)``."""
        return self.vocab_size + (self.state_bins if self.state_dim else 0)

    def check_sizes(self) -> None:
        """Raise where a size that comes from the data is still unset."""
        unset = [name for name in ("vocab_size", "tokens_per_frame") if getattr(self, name) is None]
        if self.num_actions is None and self.action_dim is None:
            unset.append("num_actions (or action_dim)")
        if self.state_dim is not None and (self.state_low is None or self.state_high is None):
            unset.append("state_low and state_high")
        if self.num_actions is not None and self.action_dim is not None:
            raise ValueError(
                f"WorldModelConfig: num_actions ({self.num_actions}, discrete actions) and action_dim "
                f"({self.action_dim}, continuous ones) are both set; a world model takes one action space, the "
                "data's: leave the other None."
            )
        if unset:
            raise ValueError(
                f"WorldModelConfig.{', '.join(unset)} unset: these sizes come from the data (the token store's "
                "manifest); set them, or let the training stage read them from the store."
            )


# Checkpoints are read with torch.load(weights_only=True); hyperparameters can hold this dataclass.
torch.serialization.add_safe_globals([WorldModelConfig])


def _head(embed_dim: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(embed_dim, embed_dim), nn.ReLU(), nn.Linear(embed_dim, out))


class WorldModel(nn.Module):
    """Embeddings, transformer and heads. ``forward`` takes interleaved token ids starting at any position."""

    def __init__(self, config: WorldModelConfig):
        super().__init__()
        config.check_sizes()
        self.config = cfg = config
        e = cfg.gpt.embed_dim
        self.observation_embedding = nn.Embedding(cfg.observation_vocab, e)
        # Discrete actions are tokens; a continuous action enters through a linear map of its vector to the same width
        # (eloialonso/iris#13: the world model does not predict actions, so they need not be discrete).
        self.action_embedding = nn.Linear(cfg.action_dim, e) if cfg.continuous else nn.Embedding(cfg.num_actions, e)
        self.position_embedding = nn.Embedding(cfg.gpt.max_tokens, e)
        self.transformer = GPT(cfg.gpt)
        self.observation_head = _head(e, cfg.observation_vocab)
        reward_classes = 3 if cfg.reward == "sign" else cfg.reward_bins
        self.reward_head = _head(e, reward_classes)
        self.termination_head = _head(e, 2)
        for module in (self.observation_embedding, self.action_embedding, self.position_embedding):
            nn.init.normal_(module.weight, std=0.02)
        if cfg.reward == "twohot":
            self.register_buffer("reward_bins", torch.linspace(-20.0, 20.0, cfg.reward_bins), persistent=False)
        self.state_codec = StateCodec(cfg) if cfg.state_dim else None

    # ------------------------------------------------------------------ proprioception
    def observation_ids(self, tokens: torch.Tensor, states: torch.Tensor | None = None) -> torch.Tensor:
        """A step's observation tokens: the frame's ``(..., K)``, then those of the state ``(..., S)``, if modelled."""
        if self.state_codec is None:
            if states is not None:
                raise ValueError(
                    "This world model models frames only (state_dim is None): train one on data with a state "
                    "column to model proprioception, or pass no states."
                )
            return tokens
        return self.state_codec.observation_ids(tokens, states)

    def slot_mask(self, slots: torch.Tensor) -> torch.Tensor | None:
        """``(..., observation_vocab)`` True where an observation token of slot ``slots`` (0 .. K + S - 1 within its
        step) may take that id. None without a state (every id is a frame code)."""
        return None if self.state_codec is None else self.state_codec.slot_mask(slots)

    def restrict(self, logits: torch.Tensor, first_slot: int) -> torch.Tensor:
        """Observation logits ``(B, n, vocab)`` for ``n`` consecutive slots from ``first_slot``, with the ids a slot may
        not take at -inf (frames draw frame codes, states state bins). Unchanged without a state."""
        slots = torch.arange(first_slot, first_slot + logits.shape[1], device=logits.device)
        allowed = self.slot_mask(slots)
        return logits if allowed is None else logits.masked_fill(~allowed, float("-inf"))

    # ------------------------------------------------------------------ layout
    def is_action_position(self, positions: torch.Tensor) -> torch.Tensor:
        return positions % self.config.tokens_per_block == self.config.tokens_per_observation

    def interleave(self, observations: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``(B, T, K)`` observation ids and ``(B, T)`` actions -> ``(B, T * (K + 1))`` interleaved ids. Continuous
        actions ``(B, T, action_dim)`` leave a placeholder 0 at each action position: pass the vectors to
        ``forward`` as ``actions``."""
        if actions.is_floating_point():
            actions = actions.new_zeros(actions.shape[:2], dtype=observations.dtype)
        return rearrange(torch.cat([observations, actions.unsqueeze(-1)], dim=-1), "b t k -> b (t k)")

    def _first_action(self, start: int) -> int:
        """Offset of the first action position among tokens that start at position ``start``."""
        return (self.config.tokens_per_observation - start) % self.config.tokens_per_block

    def embed(
        self, ids: torch.Tensor, start: int, actions: torch.Tensor | None = None, values: torch.Tensor | None = None
    ) -> torch.Tensor:
        cfg = self.config
        positions = torch.arange(start, start + ids.shape[1], device=ids.device)
        is_action = self.is_action_position(positions)  # (N,)
        obs_ids = ids.masked_fill(is_action, 0).clamp(0, cfg.observation_vocab - 1)
        if cfg.continuous:
            first = self._first_action(start)
            count = len(range(first, ids.shape[1], cfg.tokens_per_block))
            expected = (ids.shape[0], count, cfg.action_dim)
            if actions is None and count == 0:
                actions = ids.new_zeros(expected, dtype=torch.float32)
            if actions is None or tuple(actions.shape) != expected:
                got = None if actions is None else tuple(actions.shape)
                raise ValueError(
                    f"This world model takes continuous actions: pass actions of shape {expected} (batch, action "
                    f"positions among the ids, components) with the ids; got {got}."
                )
            tokens = self.observation_embedding(obs_ids).clone()
            tokens[:, first :: cfg.tokens_per_block] = self.action_embedding(actions.to(tokens.dtype))
        else:
            if actions is not None:
                raise ValueError("This world model takes discrete actions, as ids in the sequence: pass no vectors.")
            act_ids = ids.masked_fill(~is_action, 0).clamp(0, cfg.num_actions - 1)
            tokens = torch.where(
                is_action[:, None], self.action_embedding(act_ids), self.observation_embedding(obs_ids)
            )
        if values is not None and self.state_codec is not None:
            tokens = self.state_codec.mix(tokens, self.observation_embedding, values, start)
        return tokens + self.position_embedding(positions)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        ids: torch.Tensor,
        cache: KVCache | None = None,
        actions: torch.Tensor | None = None,
        values: torch.Tensor | None = None,
    ) -> WorldModelOutput:
        """Run interleaved ids ``(B, P)`` that continue the cached sequence (or start it at position 0). A world
        model of continuous actions takes their vectors ``(B, A, action_dim)`` for the ``A`` action positions among
        the ids; one of proprioception reads the state's exact values ``(B, P)`` (aligned with the ids, read at the
        state slots: :meth:`StateCodec.position_values`), or, without them, the centres of the ids' bins."""
        start = cache.size if cache is not None else 0
        limit = self.config.gpt.max_tokens
        if start + ids.shape[1] > limit:
            raise ValueError(
                f"KV cache overflow: {start} cached + {ids.shape[1]} new > {limit} tokens "
                f"({self.config.context_steps} steps). Reset or re-prime the cache (the context is full)."
            )
        k1 = self.config.tokens_per_block
        if self.config.parallel and cache is not None and (start % k1 or ids.shape[1] % k1):
            raise ValueError(
                f"A parallel world model continues its cache by whole steps of {k1} tokens (a frame and its action): "
                f"got {ids.shape[1]} tokens after {start} cached. Under the block-causal mask a partial step would "
                "not see the rest of its own step."
            )
        hidden = self.transformer(self.embed(ids, start, actions, values), cache)
        # Action positions among these, computed on the host: boolean indexing would synchronise the device.
        first = self._first_action(start)
        action_hidden = hidden[:, first::k1]
        return WorldModelOutput(
            hidden=hidden,
            observation_logits=self.observation_head(hidden),
            reward_logits=self.reward_head(action_hidden),
            termination_logits=self.termination_head(action_hidden),
        )

    def predicts_observation(self, positions: torch.Tensor) -> torch.Tensor:
        """True where the hidden state predicts an observation token: all but the last observation position of a
        step (autoregressive), or every observation position (parallel)."""
        cfg = self.config
        skipped = cfg.tokens_per_observation if cfg.parallel else cfg.tokens_per_observation - 1
        return positions % cfg.tokens_per_block != skipped

    @property
    def target_offset(self) -> int:
        """How far ahead of a position its observation target lies: the next token, or the same slot of the next
        frame (parallel)."""
        return self.config.tokens_per_block if self.config.parallel else 1

    # ------------------------------------------------------------------ training objective
    def loss(
        self,
        observations: torch.Tensor,
        actions: torch.Tensor,
        rewards: torch.Tensor,
        terminated: torch.Tensor,
        mask: torch.Tensor,
        states: torch.Tensor | None = None,
    ) -> WorldModelLosses:
        """Losses of a window: ``observations (B, T, K)``, ``actions/rewards/terminated/mask (B, T)`` (continuous
        actions ``(B, T, action_dim)``), and for a world model of proprioception ``states (B, T, S)``.

        Padded steps (``mask=False``) are neither inputs that count nor targets: a target is used only when
        the step it belongs to is real.
        """
        cfg = self.config
        observations = self.observation_ids(observations, states)
        B, T, K = observations.shape  # K: every observation token of a step, the state's included
        ids = self.interleave(observations, actions)
        values = None if states is None else self.state_codec.position_values(states.float())
        out = self(ids, actions=actions if cfg.continuous else None, values=values)
        # Observation targets: the token `shift` positions on (the next token, or the next frame's same slot) at
        # every position that predicts an observation.
        shift = self.target_offset
        positions = torch.arange(T * (K + 1), device=ids.device)
        real = mask[:, positions // (K + 1)]  # (B, N) position belongs to a real step
        target_real = torch.cat([real[:, shift:], torch.zeros_like(real[:, :shift])], dim=1)
        reads = self.predicts_observation(positions)  # (N,)
        reads = reads & self.state_codec.has_target(positions + shift) if values is not None else reads
        targets = torch.cat([ids[:, shift:], torch.zeros_like(ids[:, :shift])], dim=1)
        use = target_real & real & reads[None]
        logits = out.observation_logits.float()
        allowed = self.slot_mask((positions + shift) % (K + 1))  # what each target's slot may hold
        if allowed is not None:  # a large finite penalty, not -inf: unused targets must not make NaNs
            logits = logits.masked_fill(~allowed[None], -1e9)
        log_p = logits.log_softmax(-1)
        if values is None:
            ce = -log_p.gather(-1, targets[..., None])[..., 0]
        else:  # a state target is its value's two bins in proportion (sequence_model.state)
            ce = -self.state_codec.log_likelihood(log_p, targets, values, positions, shift)
        use = use.float()
        observation = (ce * use).sum() / use.sum().clamp_min(1)
        # The same over the targets that lie in frames 1.. (autoregressive also predicts frame 0's own tokens).
        later = use * (positions + shift >= K + 1).float()[None]
        next_frame = (ce * later).sum() / later.sum().clamp_min(1)
        on_state = use * (((positions + shift) % (K + 1)) >= cfg.tokens_per_frame).float()[None]
        state = (ce * on_state).sum() / on_state.sum().clamp_min(1)

        events = event_losses(
            cfg.reward, self.reward_bins if cfg.reward == "twohot" else None, out, rewards, terminated, mask
        )
        reward, reward_accuracy, reward_confusion, termination, termination_confusion = events
        weights = use + (cfg.state_weight - 1.0) * on_state
        weighted = (ce * weights).sum() / weights.sum().clamp_min(1)
        total = cfg.observation_weight * weighted + cfg.reward_weight * reward + cfg.termination_weight * termination
        return WorldModelLosses(
            total=total,
            observation=observation,
            next_frame=next_frame,
            reward=reward,
            termination=termination,
            reward_accuracy=reward_accuracy,
            reward_confusion=reward_confusion,
            termination_confusion=termination_confusion,
            observation_targets=use.sum(),
            next_frame_targets=later.sum(),
            steps=mask.sum(),
            state=state if cfg.state_dim else None,
        )

    def expected_reward(self, reward_logits: torch.Tensor) -> torch.Tensor:
        """Reward from the head's logits: -1/0/+1 for ``sign``, symexp of the expected bin for ``twohot``."""
        return expected_reward(self.config.reward, getattr(self, "reward_bins", None), reward_logits)

    # ------------------------------------------------------------------ counts
    def num_parameters(self, non_embedding: bool = False) -> int:
        total = sum(p.numel() for p in self.parameters())
        if non_embedding:
            embeddings = (self.observation_embedding, self.action_embedding, self.position_embedding)
            total -= sum(m.weight.numel() for m in embeddings)
        return total

    def flops_per_token(self, training: bool = True) -> float:
        """FLOPs per token: 2 per weight of every matmul (blocks and the observation head, which is applied at
        every position) plus attention at full context; x3 for a training step (forward + backward)."""
        cfg = self.config
        e = cfg.gpt.embed_dim
        reward_classes = 3 if cfg.reward == "sign" else cfg.reward_bins
        # The observation head runs at every position; reward and termination heads once per block.
        heads = e * e + e * cfg.observation_vocab + (2 * e * e + e * reward_classes + e * 2) / cfg.tokens_per_block
        forward = 2 * (matmul_params(cfg.gpt) + heads) + attention_flops_per_token(cfg.gpt)
        return 3 * forward if training else forward
