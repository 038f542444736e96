"""The IRIS world model: a GPT over the interleaved sequence ``[o_t^1 .. o_t^K, a_t, o_{t+1}^1, ...]``.

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

import math
from dataclasses import dataclass, field, replace
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from sequence_model.gpt import GPT, GPTConfig, KVCache, attention_flops_per_token, matmul_params


@dataclass
class WorldModelConfig:
    """Sizes of the world model. ``vocab_size``, ``tokens_per_frame`` and ``num_actions`` come from the data (the
    token store): they have no defaults, and a :class:`WorldModel` is built only once they are set."""

    vocab_size: int | None = None
    """Observation codes (the tokenizer's codebook size; from the data)."""
    tokens_per_frame: int | None = None
    """K, tokens per observation (from the data)."""
    num_actions: int | None = None
    """Discrete actions of the environment (from the data)."""
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
    reward_weight: float = 1.0
    """Weight of the reward loss."""
    termination_weight: float = 1.0
    """Weight of the termination loss."""
    prediction: Literal["autoregressive", "parallel"] = field(default="autoregressive", metadata={"added": "issue 16"})
    """``autoregressive``: the next frame token by token, ``K`` passes per imagined step (IRIS); ``parallel``: all
    tokens of the next frame from one pass under a block-causal mask (block teacher forcing)."""

    def __post_init__(self):
        for name in ("vocab_size", "tokens_per_frame", "num_actions", "context_steps"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"WorldModelConfig: {name} must be a whole number of at least 1, got {value!r}.")
        gpt = GPTConfig(**self.gpt) if isinstance(self.gpt, dict) else self.gpt
        if self.prediction not in ("autoregressive", "parallel"):
            raise ValueError(
                f"WorldModelConfig: prediction must be 'autoregressive' or 'parallel', got {self.prediction!r}."
            )
        if self.tokens_per_frame is not None:
            block = self.tokens_per_block if self.parallel else 1
            gpt = replace(gpt, max_tokens=self.context_steps * self.tokens_per_block, block_size=block)
        self.gpt = gpt

    @property
    def parallel(self) -> bool:
        return self.prediction == "parallel"

    @property
    def tokens_per_block(self) -> int:
        return self.tokens_per_frame + 1

    def check_sizes(self) -> None:
        """Raise where a size that comes from the data is still unset."""
        unset = [name for name in ("vocab_size", "tokens_per_frame", "num_actions") if getattr(self, name) is None]
        if unset:
            raise ValueError(
                f"WorldModelConfig.{', '.join(unset)} unset: these sizes come from the data (the token store's "
                "manifest); set them, or let the training stage read them from the store."
            )


# Checkpoints are read with torch.load(weights_only=True); hyperparameters can hold this dataclass.
torch.serialization.add_safe_globals([WorldModelConfig])


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


def symlog(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.log1p(x.abs())


def symexp(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.expm1(x.abs())


def _head(embed_dim: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(embed_dim, embed_dim), nn.ReLU(), nn.Linear(embed_dim, out))


class WorldModel(nn.Module):
    """Embeddings, transformer and heads. ``forward`` takes interleaved token ids starting at any position."""

    def __init__(self, config: WorldModelConfig):
        super().__init__()
        config.check_sizes()
        self.config = cfg = config
        e = cfg.gpt.embed_dim
        self.observation_embedding = nn.Embedding(cfg.vocab_size, e)
        self.action_embedding = nn.Embedding(cfg.num_actions, e)
        self.position_embedding = nn.Embedding(cfg.gpt.max_tokens, e)
        self.transformer = GPT(cfg.gpt)
        self.observation_head = _head(e, cfg.vocab_size)
        reward_classes = 3 if cfg.reward == "sign" else cfg.reward_bins
        self.reward_head = _head(e, reward_classes)
        self.termination_head = _head(e, 2)
        for module in (self.observation_embedding, self.action_embedding, self.position_embedding):
            nn.init.normal_(module.weight, std=0.02)
        if cfg.reward == "twohot":
            self.register_buffer("reward_bins", torch.linspace(-20.0, 20.0, cfg.reward_bins), persistent=False)

    # ------------------------------------------------------------------ layout
    def is_action_position(self, positions: torch.Tensor) -> torch.Tensor:
        return positions % self.config.tokens_per_block == self.config.tokens_per_frame

    def interleave(self, observations: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``(B, T, K)`` observation ids and ``(B, T)`` actions -> ``(B, T * (K + 1))`` interleaved ids."""
        return rearrange(torch.cat([observations, actions.unsqueeze(-1)], dim=-1), "b t k -> b (t k)")

    def embed(self, ids: torch.Tensor, start: int) -> torch.Tensor:
        positions = torch.arange(start, start + ids.shape[1], device=ids.device)
        is_action = self.is_action_position(positions)  # (N,)
        obs_ids = ids.masked_fill(is_action, 0).clamp(0, self.config.vocab_size - 1)
        act_ids = ids.masked_fill(~is_action, 0).clamp(0, self.config.num_actions - 1)
        tokens = torch.where(is_action[:, None], self.action_embedding(act_ids), self.observation_embedding(obs_ids))
        return tokens + self.position_embedding(positions)

    # ------------------------------------------------------------------ forward
    def forward(self, ids: torch.Tensor, cache: KVCache | None = None) -> WorldModelOutput:
        """Run interleaved ids ``(B, P)`` that continue the cached sequence (or start it at position 0)."""
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
        hidden = self.transformer(self.embed(ids, start), cache)
        # Action positions among these, computed on the host: boolean indexing would synchronise the device.
        first = (self.config.tokens_per_frame - start) % k1
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
        skipped = cfg.tokens_per_frame if cfg.parallel else cfg.tokens_per_frame - 1
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
    ) -> WorldModelLosses:
        """Losses of a window: ``observations (B, T, K)``, ``actions/rewards/terminated/mask (B, T)``.

        Padded steps (``mask=False``) are neither inputs that count nor targets: a target is used only when
        the step it belongs to is real.
        """
        cfg = self.config
        B, T, K = observations.shape
        ids = self.interleave(observations, actions)
        out = self(ids)
        # Observation targets: the token `shift` positions on (the next token, or the next frame's same slot) at
        # every position that predicts an observation.
        shift = self.target_offset
        positions = torch.arange(T * (K + 1), device=ids.device)
        real = mask[:, positions // (K + 1)]  # (B, N) position belongs to a real step
        target_real = torch.cat([real[:, shift:], torch.zeros_like(real[:, :shift])], dim=1)
        reads = self.predicts_observation(positions)  # (N,)
        targets = torch.cat([ids[:, shift:], torch.zeros_like(ids[:, :shift])], dim=1)
        use = target_real & real & reads[None]
        logits = out.observation_logits.float()
        ce = F.cross_entropy(rearrange(logits, "b n v -> (b n) v"), targets.reshape(-1), reduction="none")
        ce, use = ce.view(B, -1), use.float()
        observation = (ce * use).sum() / use.sum().clamp_min(1)
        # The same over the targets that lie in frames 1.. (autoregressive also predicts frame 0's own tokens).
        later = use * (positions + shift >= K + 1).float()[None]
        next_frame = (ce * later).sum() / later.sum().clamp_min(1)

        weights = mask.float()
        count = weights.sum().clamp_min(1)
        reward_logits = out.reward_logits.float()
        if cfg.reward == "sign":
            reward_class = (torch.sign(rewards) + 1).long()
            reward_ce = F.cross_entropy(
                rearrange(reward_logits, "b t c -> (b t) c"), reward_class.reshape(-1), reduction="none"
            )
            reward_accuracy = ((reward_logits.argmax(-1) == reward_class).float() * weights).sum() / count
        else:
            reward_ce = -(self._twohot(rewards) * reward_logits.log_softmax(-1)).sum(-1).reshape(-1)
            predicted = self.expected_reward(reward_logits)
            reward_accuracy = (((predicted - rewards).abs() < 0.5).float() * weights).sum() / count
        reward = (reward_ce * weights.reshape(-1)).sum() / count
        predicted_sign = torch.sign(self.expected_reward(reward_logits).round()) + 1  # sign classes for both heads
        reward_confusion = confusion(torch.sign(rewards) + 1, predicted_sign, mask, 3)

        ends = terminated.long()
        term_ce = F.cross_entropy(
            rearrange(out.termination_logits.float(), "b t c -> (b t) c"), ends.reshape(-1), reduction="none"
        )
        termination = (term_ce * weights.reshape(-1)).sum() / count
        termination_confusion = confusion(ends, out.termination_logits.argmax(-1), mask, 2)
        total = cfg.observation_weight * observation + cfg.reward_weight * reward + cfg.termination_weight * termination
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
        )

    # ------------------------------------------------------------------ rewards
    def _twohot(self, rewards: torch.Tensor) -> torch.Tensor:
        bins = self.reward_bins
        y = symlog(rewards).clamp(bins[0], bins[-1])
        upper = torch.searchsorted(bins, y.contiguous()).clamp(1, len(bins) - 1)
        lower = upper - 1
        span = bins[upper] - bins[lower]
        w_upper = (y - bins[lower]) / span
        target = torch.zeros(*rewards.shape, len(bins), device=rewards.device)
        target.scatter_(-1, lower.unsqueeze(-1), (1 - w_upper).unsqueeze(-1))
        target.scatter_add_(-1, upper.unsqueeze(-1), w_upper.unsqueeze(-1))
        return target

    def expected_reward(self, reward_logits: torch.Tensor) -> torch.Tensor:
        """Reward from the head's logits: -1/0/+1 for ``sign``, symexp of the expected bin for ``twohot``."""
        if self.config.reward == "sign":
            return reward_logits.argmax(-1).float() - 1.0
        return symexp((reward_logits.softmax(-1) * self.reward_bins).sum(-1))

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
        heads = e * e + e * cfg.vocab_size + (2 * e * e + e * reward_classes + e * 2) / cfg.tokens_per_block
        forward = 2 * (matmul_params(cfg.gpt) + heads) + attention_flops_per_token(cfg.gpt)
        return 3 * forward if training else forward


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
