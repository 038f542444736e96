"""A GPT over embeddings: pre-LayerNorm blocks, SDPA attention, and a preallocated KV cache.

The transformer knows nothing of tokens or images: it maps embeddings ``(B, N, E)`` to hidden states
``(B, N, E)`` causally. With a :class:`KVCache` it continues a sequence: new tokens attend to everything
cached plus themselves, and decoding one token or a block of tokens gives the same result as a full
forward pass (tested to 1e-5 in fp32).

Attention is causal over tokens, or, with ``block_size`` B > 1, over blocks of B tokens: a token sees every
token of its own block and of all earlier blocks ("block-causal", the mask of block teacher forcing,
Dedieu et al. 2025). Blocks start at position 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


@dataclass
class GPTConfig:
    """Sizes of the transformer (IRIS: 10 layers, 4 heads, width 256)."""

    num_layers: int = 10
    """Transformer blocks."""
    num_heads: int = 4
    """Attention heads; ``embed_dim`` must be divisible by it."""
    embed_dim: int = 256
    """Width of the residual stream."""
    max_tokens: int = 340
    """Longest sequence (context) in tokens; sets the KV cache size and the positional table."""
    mlp_ratio: int = 4
    """Hidden width of the MLP as a multiple of ``embed_dim``."""
    dropout: float = 0.1
    """Dropout on embeddings and residual branches (IRIS: 0.1)."""
    attention_dropout: float | None = field(default=None, metadata={"added": "issue 16"})
    """Dropout on the attention weights (None: ``dropout``, as IRIS). On CPU any attention dropout sends SDPA to its
    unfused path and draws a random number per attention weight: 0 made an IRIS-size training step 2.5x faster
    (docs/LOG.md)."""
    block_size: int = field(default=1, metadata={"added": "issue 16"})
    """Tokens per attention block: a token sees its whole block and every earlier one (1: causal attention)."""

    def __post_init__(self):
        # max_tokens 0 means "set by the world model" (from its context length).
        minimum = {"num_layers": 1, "num_heads": 1, "embed_dim": 1, "max_tokens": 0, "mlp_ratio": 1, "block_size": 1}
        for name, least in minimum.items():
            value = getattr(self, name)
            if not isinstance(value, int) or value < least:
                raise ValueError(f"GPTConfig: {name} must be a whole number of at least {least}, got {value!r}.")
        if self.attention_dropout is None:
            self.attention_dropout = self.dropout
        for name in ("dropout", "attention_dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"GPTConfig: {name} must lie in [0, 1), got {getattr(self, name)!r}.")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}.")

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads


# Checkpoints are read with torch.load(weights_only=True); hyperparameters can hold this dataclass.
torch.serialization.add_safe_globals([GPTConfig])


class KVCache:
    """Keys and values of every layer for up to ``max_tokens`` positions, allocated once.

    ``size`` is a Python int kept on the host, so growing the cache never synchronises with the device.
    """

    def __init__(self, config: GPTConfig, batch: int, device=None, dtype=torch.float32, differentiable: bool = False):
        shape = (config.num_layers, 2, batch, config.num_heads, config.max_tokens, config.head_dim)
        self.buffer = torch.zeros(shape, device=device, dtype=dtype)
        self.max_tokens = config.max_tokens
        self.size = 0
        # Writing into the buffer in place would overwrite what autograd saved for the backward pass; a
        # differentiable cache keeps each layer's keys and values as a tensor grown by concatenation instead.
        self.differentiable = differentiable
        self._grown: list = [None] * config.num_layers

    def reset(self) -> None:
        self.size = 0
        self._grown = [None] * len(self._grown)

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store ``k, v`` ``(B, H, n, D)`` after the cached positions; return all keys and values so far."""
        n = k.shape[2]
        end = self.size + n
        if end > self.max_tokens:
            raise ValueError(
                f"KV cache overflow: {self.size} cached + {n} new > {self.max_tokens} tokens. "
                "Reset or re-prime the cache (the context is full)."
            )
        if self.differentiable:
            held = self._grown[layer]
            grown = (k, v) if held is None else (torch.cat([held[0], k], dim=2), torch.cat([held[1], v], dim=2))
            self._grown[layer] = grown
            return grown
        self.buffer[layer, 0, :, :, self.size : end] = k
        self.buffer[layer, 1, :, :, self.size : end] = v
        return self.buffer[layer, 0, :, :, :end], self.buffer[layer, 1, :, :, :end]

    def advance(self, n: int) -> None:
        """Mark ``n`` more positions as cached (after every layer has appended them)."""
        self.size += n


def attention_mask(max_tokens: int, block_size: int) -> torch.Tensor:
    """``(N, N)`` bool, True where the query position (row) may attend to the key position (column)."""
    blocks = torch.arange(max_tokens) // block_size
    return blocks[None, :] <= blocks[:, None]


class SelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.num_heads = cfg.num_heads
        self.block_size = cfg.block_size
        self.qkv = nn.Linear(cfg.embed_dim, 3 * cfg.embed_dim)
        self.proj = nn.Linear(cfg.embed_dim, cfg.embed_dim)
        self.dropout = cfg.attention_dropout
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None, layer: int, mask: torch.Tensor) -> torch.Tensor:
        n = x.shape[1]
        q, k, v = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.num_heads)
        past = 0
        if cache is not None:
            past = cache.size
            k, v = cache.append(layer, k, v)
        dropout = self.dropout if self.training else 0.0
        if self.sees_everything(past, n):
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
        elif past == 0 and self.block_size == 1:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        else:
            # New token i (absolute position past + i) sees the positions the mask allows it.
            allowed = mask[past : past + n, : past + n]
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout)
        return self.resid_drop(self.proj(rearrange(out, "b h n d -> b n (h d)")))

    def sees_everything(self, past: int, n: int) -> bool:
        """Whether every new token may attend to every cached and new one: a single new token, or exactly one whole
        block that starts at a block boundary. Those passes need no mask (the cheapest SDPA path)."""
        return n == 1 or (self.block_size > 1 and n == self.block_size and past % self.block_size == 0)


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.embed_dim)
        self.attn = SelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.embed_dim)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.embed_dim, cfg.mlp_ratio * cfg.embed_dim),
            nn.GELU(),
            nn.Linear(cfg.mlp_ratio * cfg.embed_dim, cfg.embed_dim),
            nn.Dropout(cfg.dropout),
        )

    def forward(self, x: torch.Tensor, cache: KVCache | None, layer: int, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), cache, layer, mask)
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """Causal transformer over embeddings ``(B, N, E) -> (B, N, E)`` (final LayerNorm applied)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.num_layers))
        self.ln_f = nn.LayerNorm(config.embed_dim)
        self.register_buffer("mask", attention_mask(config.max_tokens, config.block_size), persistent=False)
        self.apply(_init_weights)

    def new_cache(self, batch: int, device=None, dtype=torch.float32, differentiable: bool = False) -> KVCache:
        return KVCache(self.config, batch, device, dtype, differentiable)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        start = cache.size if cache is not None else 0
        if start + x.shape[1] > self.config.max_tokens:
            raise ValueError(f"Sequence of {start + x.shape[1]} tokens exceeds max_tokens {self.config.max_tokens}.")
        x = self.drop(x)
        for layer, block in enumerate(self.blocks):
            x = block(x, cache, layer, self.mask)
        if cache is not None:
            cache.advance(x.shape[1])
        return self.ln_f(x)


def _init_weights(module: nn.Module) -> None:
    # GPT-2 initialisation, as IRIS: N(0, 0.02) weights, zero biases, unit LayerNorm.
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def matmul_params(config: GPTConfig) -> int:
    """Weights of the matrix multiplications of the blocks (attention in/out projections and MLP)."""
    e, m = config.embed_dim, config.mlp_ratio
    return config.num_layers * (4 * e * e + 2 * m * e * e)


def attention_flops_per_token(config: GPTConfig, context: int | None = None) -> int:
    """Forward FLOPs per token of the score and value products, QK^T and AV, at full context (Kaplan et al.:
    2 * n_layer * n_ctx * d_model each, counted for the whole context as the scaling literature does)."""
    n = config.max_tokens if context is None else context
    return 2 * 2 * config.num_layers * n * config.embed_dim
