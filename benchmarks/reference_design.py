"""The reference IRIS implementation's design, rebuilt for side-by-side benchmarks (issue 3).

The reference code (Micheli et al. 2023, github.com/eloialonso/iris) cannot be installed here (it is not a
package and there is no network), so ``make bench`` cannot run it. This module rebuilds, at the same sizes
and in its own words, the parts of that design which set its speed, so that both are timed in one process
on one machine:

- attention written out: separate query, key and value projections, scores ``q k^T / sqrt(d)``, a causal
  mask filled with ``-inf``, softmax, dropout, ``att @ v`` (no fused kernel);
- a key/value cache per layer, allocated for the whole context, written by copy, read by slicing;
- embeddings filled table by table into a zero tensor at positions found from the block pattern, and three
  heads that each gather their positions with an index tensor computed at every call;
- imagination: ``K + 1`` transformer passes per step (the action, then each observation token), sampling
  with ``torch.distributions.Categorical``, reward and end read back to the host (numpy) every step, the
  frame decoded every step, and the cache re-primed with the last frame when the context is full;
- training: the frames of every batch encoded again by the tokenizer (no token cache), in fp32.

The tokenizer is ours: the same network (IRIS's 4,027,523 parameters, a test checks the count), so only
the world model and the imagination loop are rebuilt. Nothing here is used outside ``benchmarks/``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.distributions import Categorical

from tokenizer.model import Tokenizer

LAYERS, HEADS, WIDTH, K, STEPS, VOCAB, DROPOUT = 10, 4, 256, 16, 20, 512, 0.1  # the reference's defaults
BLOCK = K + 1
MAX_TOKENS = STEPS * BLOCK


class LayerCache:
    """Keys or values of one layer: ``(B, H, MAX_TOKENS, D)`` allocated once, filled left to right."""

    def __init__(self, batch: int):
        self.buffer = torch.zeros(batch, HEADS, MAX_TOKENS, WIDTH // HEADS)
        self.size = 0

    def write(self, x: torch.Tensor) -> torch.Tensor:
        end = self.size + x.shape[2]
        self.buffer[:, :, self.size : end] = x
        self.size = end
        return self.buffer[:, :, :end]


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.query, self.key, self.value = (nn.Linear(WIDTH, WIDTH) for _ in range(3))
        self.proj = nn.Linear(WIDTH, WIDTH)
        self.attn_drop, self.resid_drop = nn.Dropout(DROPOUT), nn.Dropout(DROPOUT)
        self.register_buffer("causal", torch.tril(torch.ones(MAX_TOKENS, MAX_TOKENS)), persistent=False)

    def forward(self, x: torch.Tensor, cache: tuple[LayerCache, LayerCache] | None) -> torch.Tensor:
        n = x.shape[1]
        q, k, v = (rearrange(f(x), "b n (h d) -> b h n d", h=HEADS) for f in (self.query, self.key, self.value))
        past = 0
        if cache is not None:
            past = cache[0].size
            k, v = cache[0].write(k), cache[1].write(v)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(k.shape[-1])
        scores = scores.masked_fill(self.causal[past : past + n, : past + n] == 0, float("-inf"))
        out = self.attn_drop(scores.softmax(-1)) @ v
        return self.resid_drop(self.proj(rearrange(out, "b h n d -> b n (h d)")))


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(WIDTH), nn.LayerNorm(WIDTH)
        self.attn = Attention()
        self.mlp = nn.Sequential(
            nn.Linear(WIDTH, 4 * WIDTH), nn.GELU(), nn.Linear(4 * WIDTH, WIDTH), nn.Dropout(DROPOUT)
        )

    def forward(self, x, cache):
        x = x + self.attn(self.ln1(x), cache)
        return x + self.mlp(self.ln2(x))


def _positions(pattern: list[int], total: int, past: int) -> torch.Tensor:
    """Positions in ``[past, total)`` whose place in the block is in ``pattern``, relative to ``past``; rebuilt
    from a table of all such positions at every call, as the reference's slicers do."""
    table = torch.tensor(pattern).repeat(STEPS) + BLOCK * torch.arange(STEPS).repeat_interleave(len(pattern))
    return table[(table >= past) & (table < total)] - past


def _head(out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.ReLU(), nn.Linear(WIDTH, out))


class ReferenceWorldModel(nn.Module):
    """The reference world model's computation at IRIS size (8.4M parameters with 4 actions)."""

    OBSERVATIONS, ACTIONS, PREDICTS_OBSERVATION = list(range(K)), [K], list(range(K - 1)) + [K]

    def __init__(self, num_actions: int = 4):
        super().__init__()
        self.tables = nn.ModuleList([nn.Embedding(VOCAB, WIDTH), nn.Embedding(num_actions, WIDTH)])
        self.pos = nn.Embedding(MAX_TOKENS, WIDTH)
        self.drop = nn.Dropout(DROPOUT)
        self.blocks = nn.ModuleList(Block() for _ in range(LAYERS))
        self.ln_f = nn.LayerNorm(WIDTH)
        self.obs_head, self.reward_head, self.end_head = _head(VOCAB), _head(3), _head(2)

    def new_cache(self, batch: int) -> list[tuple[LayerCache, LayerCache]]:
        return [(LayerCache(batch), LayerCache(batch)) for _ in range(LAYERS)]

    def forward(self, tokens: torch.Tensor, cache=None):
        n = tokens.shape[1]
        past = cache[0][0].size if cache is not None else 0
        x = torch.zeros(*tokens.shape, WIDTH)
        for table, pattern in zip(self.tables, (self.OBSERVATIONS, self.ACTIONS), strict=True):
            where = _positions(pattern, past + n, past)
            x[:, where] = table(tokens[:, where])
        x = self.drop(x + self.pos(past + torch.arange(n)))
        for i, block in enumerate(self.blocks):
            x = block(x, cache[i] if cache is not None else None)
        x = self.ln_f(x)
        actions = _positions(self.ACTIONS, past + n, past)
        return (
            self.obs_head(x[:, _positions(self.PREDICTS_OBSERVATION, past + n, past)]),
            self.reward_head(x[:, actions]),
            self.end_head(x[:, actions]),
        )

    def loss(
        self,
        tokenizer: Tokenizer,
        frames: torch.Tensor,
        actions: torch.Tensor,
        rewards: torch.Tensor,
        ends: torch.Tensor,
    ) -> torch.Tensor:
        """One training loss: frames ``uint8 (B, T, 3, H, W)`` are tokenized again first, as the reference does."""
        B, T = actions.shape
        with torch.no_grad():
            obs = tokenizer.encode(frames.flatten(0, 1)).view(B, T, K)
        ids = rearrange(torch.cat([obs, actions[..., None]], dim=-1), "b t k -> b (t k)")
        obs_logits, reward_logits, end_logits = self(ids)
        targets = rearrange(obs, "b t k -> b (t k)")[:, 1:]
        return (
            F.cross_entropy(obs_logits[:, :-1].flatten(0, 1), targets.flatten())
            + F.cross_entropy(reward_logits.flatten(0, 1), (rewards.sign() + 1).long().flatten())
            + F.cross_entropy(end_logits.flatten(0, 1), ends.long().flatten())
        )


class GivenTokens:
    """Stands in for the tokenizer in :meth:`ReferenceWorldModel.loss` when the batch already holds tokens: the
    reference's training without its re-tokenization (the quoted 960 tokens/s), and the tests."""

    @staticmethod
    def encode(tokens: torch.Tensor) -> torch.Tensor:
        return tokens


class ReferenceImagination:
    """The reference's imagination loop: ``K + 1`` passes a step, host read-backs, a decoded frame a step."""

    def __init__(self, world_model: ReferenceWorldModel, tokenizer: Tokenizer):
        self.world_model, self.tokenizer = world_model.eval(), tokenizer.eval()

    @torch.no_grad()
    def reset(self, obs_tokens: torch.Tensor) -> torch.Tensor:
        self.obs_tokens = obs_tokens
        self.cache = self.world_model.new_cache(obs_tokens.shape[0])
        self.world_model(obs_tokens, self.cache)
        return self.tokenizer.decode(self.obs_tokens)

    @torch.no_grad()
    def step(self, action: torch.Tensor) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        if self.cache[0][0].size + BLOCK > MAX_TOKENS:
            self.reset(self.obs_tokens)  # the reference re-primes with the last frame only
        token, new = action.reshape(-1, 1), []
        for k in range(BLOCK):
            obs_logits, reward_logits, end_logits = self.world_model(token, self.cache)
            if k == 0:
                reward = Categorical(logits=reward_logits).sample().float().cpu().numpy().reshape(-1) - 1
                done = Categorical(logits=end_logits).sample().cpu().numpy().astype(bool).reshape(-1)
            if k < K:
                token = Categorical(logits=obs_logits).sample()
                new.append(token)
        self.obs_tokens = torch.cat(new, dim=1)
        return self.tokenizer.decode(self.obs_tokens), reward, done


def copy_weights(source: nn.Module, target: ReferenceWorldModel) -> None:
    """Give ``target`` the weights of an iris-wm ``WorldModel`` at IRIS size (fused qkv split in three), so a
    test can check that both compute the same function."""
    state = dict(source.state_dict())
    renamed = {
        "tables.0.weight": state.pop("observation_embedding.weight"),
        "tables.1.weight": state.pop("action_embedding.weight"),
        "pos.weight": state.pop("position_embedding.weight"),
    }
    for name, value in state.items():
        name = name.replace("transformer.", "").replace("observation_head", "obs_head")
        name = name.replace("termination_head", "end_head")
        if ".attn.qkv." in name:
            for part, chunk in zip(("query", "key", "value"), value.chunk(3, dim=0), strict=True):
                renamed[name.replace("qkv", part)] = chunk
        else:
            renamed[name] = value
    target.load_state_dict(renamed, strict=True)
