"""Discrete bottleneck of the tokenizer, built on vector-quantize-pytorch.

``kind="vq"`` with the defaults is the IRIS quantizer (Micheli et al. 2023, section 2.1, following van den
Oord et al. 2017): nearest code in Euclidean distance, a codebook learned by gradient, the plain
straight-through estimator, and the loss ``||sg(z) - e||^2 + beta * ||z - sg(e)||^2`` with beta = 1.
The library's own commitment loss is switched off and the loss is computed here from the chosen codes,
because the library's learnable-codebook loss equals this one only for beta = 1 and its defaults
(rotation trick, EMA with decay 0.8) are not IRIS's.

Options the library provides and that are worth having: EMA codebook updates, cosine similarity, k-means
initialisation, dead-code revival, and FSQ (finite scalar quantization, no codebook to learn).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from vector_quantize_pytorch import FSQ, VectorQuantize
from vector_quantize_pytorch.vector_quantize_pytorch import batched_sample_vectors, sample_vectors_distributed


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _all_reduce_where_distributed(tensor: torch.Tensor) -> None:
    if _distributed():
        dist.all_reduce(tensor)


def _sample_where_distributed(samples: torch.Tensor, num: int) -> torch.Tensor:
    return sample_vectors_distributed(samples, num) if _distributed() else batched_sample_vectors(samples, num)


def synchronise_where_distributed(codebook: nn.Module) -> None:
    """Make a vector-quantize-pytorch codebook's EMA statistics, k-means initialisation and dead-code samples
    global under data parallelism, decided when they are computed: the library decides once, when the
    quantizer is built, which is before Lightning starts the process group."""
    codebook.all_reduce_fn = codebook.kmeans_all_reduce_fn = _all_reduce_where_distributed
    codebook.sample_fn = codebook.replace_sample_fn = _sample_where_distributed


@dataclass
class QuantizerConfig:
    """Settings of the discrete bottleneck."""

    kind: Literal["vq", "fsq"] = "vq"
    """``vq``: a learned codebook (IRIS); ``fsq``: finite scalar quantization with ``fsq_levels``."""
    codebook_size: int = 512
    """Number of codes (the vocabulary the world model sees). For FSQ it is the product of the levels."""
    beta: float = 1.0
    """Weight of the commitment term ``||z - sg(e)||^2`` (IRIS: 1)."""
    ema: bool = False
    """Update the codebook by exponential moving averages instead of by gradient."""
    ema_decay: float = 0.99
    """Decay of the EMA updates (the library's default, 0.8, forgets fast)."""
    cosine: bool = False
    """Nearest code by cosine similarity on l2-normalised vectors (requires ``ema``)."""
    kmeans_init: bool = False
    """Initialise the codebook by k-means on the first batch."""
    dead_code_threshold: float = 0.0
    """Re-seed codes whose EMA usage count per step falls below this (0: never). Compare with the number of
    tokens per step divided by ``codebook_size``: above it, most codes are re-seeded every step."""
    fsq_levels: tuple[int, ...] = (8, 8, 8)
    """Quantization levels per dimension for ``kind="fsq"``."""
    fsq_centering: float = field(default=0.0, metadata={"added": "issue 17"})
    """Weight of a term that pulls each FSQ value towards the centre of its quantization bin (the mean squared
    distance, in bin widths; 0: none, as FSQ). Values near a bin's edge flip to the neighbouring code under small
    changes of the frame: without it the demo tokens of cells whose pixels did not move changed between frames
    40% of the time, and decoding then encoding again gave back 75% of the tokens (docs/LOG.md)."""

    @property
    def vocab_size(self) -> int:
        return math.prod(self.fsq_levels) if self.kind == "fsq" else self.codebook_size


# Checkpoints are read with torch.load(weights_only=True); hyperparameters can hold this dataclass.
torch.serialization.add_safe_globals([QuantizerConfig])


@dataclass
class Quantized:
    """Output of the quantizer for a feature map of ``K = h * w`` positions."""

    features: torch.Tensor  # (B, E, h, w) quantized, with straight-through gradients to the encoder
    tokens: torch.Tensor  # (B, K) int64 code indices
    loss: torch.Tensor  # () codebook + beta * commitment (zero for FSQ)


class Quantizer(nn.Module):
    """Maps encoder features ``(B, E, h, w)`` to code indices and back."""

    def __init__(self, config: QuantizerConfig, dim: int):
        super().__init__()
        self.config = config
        if config.kind == "fsq":
            if config.fsq_centering > 0 and dim != len(config.fsq_levels):
                raise ValueError(
                    f"quantizer.fsq_centering needs the code dimension ({dim}) to equal the number of FSQ levels "
                    f"({len(config.fsq_levels)}), so that FSQ projects nothing: set embed_dim to "
                    f"{len(config.fsq_levels)}."
                )
            self.fsq = FSQ(levels=list(config.fsq_levels), dim=dim)
        elif config.kind == "vq":
            if config.cosine and not config.ema:
                raise ValueError(
                    "quantizer.cosine=True needs quantizer.ema=True (the library cannot learn a "
                    "cosine codebook by gradient)."
                )
            self.vq = VectorQuantize(
                dim=dim,
                codebook_size=config.codebook_size,
                commitment_weight=0.0,  # the loss is computed in forward()
                rotation_trick=False,  # IRIS: plain straight-through estimator
                learnable_codebook=not config.ema,
                ema_update=config.ema,
                decay=config.ema_decay,
                use_cosine_sim=config.cosine,
                kmeans_init=config.kmeans_init,
                threshold_ema_dead_code=config.dead_code_threshold,
            )
            synchronise_where_distributed(self.vq._codebook)
            if not config.kmeans_init and not config.ema:
                # IRIS initialises the codebook uniformly in [-1/V, 1/V].
                bound = 1.0 / config.codebook_size
                nn.init.uniform_(self.vq._codebook.embed, -bound, bound)
        else:
            raise ValueError(f"quantizer.kind must be 'vq' or 'fsq', got {config.kind!r}.")

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    def forward(self, z: torch.Tensor) -> Quantized:
        h, w = z.shape[-2:]
        flat = rearrange(z, "b e h w -> b (h w) e")
        if self.config.kind == "fsq":
            quantized, tokens = self.fsq(flat)
            centering = self.training and self.config.fsq_centering > 0
            loss = self._centering_loss(flat) if centering else flat.new_zeros(())
        else:
            quantized, tokens, _ = self.vq(flat)
            loss = self._vq_loss(flat, tokens)
        features = rearrange(quantized, "b (h w) e -> b e h w", h=h, w=w)
        return Quantized(features, tokens.long(), loss)

    def _centering_loss(self, z: torch.Tensor) -> torch.Tensor:
        """``fsq_centering`` times the mean squared distance of the bounded values ``(B, K, E)`` from the centres of
        their bins (FSQ's own bound, Mentzer et al. 2023: ``tanh(z + shift) * half_l - offset``, rounded)."""
        levels = torch.tensor(self.config.fsq_levels, device=z.device, dtype=torch.float32)
        half = (levels - 1) * (1 + 1e-3) / 2
        offset = torch.where(levels % 2 == 0, 0.5, 0.0)
        bounded = torch.tanh(z.float() + torch.atanh(offset / half)) * half - offset
        return self.config.fsq_centering * F.mse_loss(bounded, bounded.round().detach())

    def _vq_loss(self, z: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return z.new_zeros(())
        codes = self.vq.codebook[tokens]  # (B, K, E)
        if self.config.cosine:
            z = F.normalize(z, dim=-1)
        codebook_term = F.mse_loss(codes, z.detach())  # no gradient with EMA: the codebook is a buffer
        commitment_term = F.mse_loss(z, codes.detach())
        return codebook_term + self.config.beta * commitment_term

    def lookup(self, tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Quantized features ``(B, E, h, w)`` of code indices ``(B, K)``."""
        if self.config.kind == "fsq":
            codes = self.fsq.indices_to_codes(tokens)
        else:
            codes = self.vq.get_codes_from_indices(tokens)
        return rearrange(codes, "b (h w) e -> b e h w", h=h, w=w)
