"""The IRIS discrete autoencoder: frames ``uint8 (B, 3, H, W)`` <-> tokens ``int64 (B, K)``.

Encoder and decoder follow the convolutional VQGAN design that IRIS uses (Micheli et al. 2023, appendix
A; Esser et al. 2021): residual blocks with GroupNorm and SiLU, single-head self-attention at the low
resolutions, stride-2 convolutions down and nearest-neighbour upsampling. With the defaults of
:class:`TokenizerConfig` a 64x64 frame becomes a 4x4 grid of codes from a 512 x 512 codebook, and the
trainable parameter count is IRIS's, 4,027,523 (checked by a test).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from tokenizer.quantizer import Quantized, Quantizer, QuantizerConfig


@dataclass
class TokenizerConfig:
    """Sizes of the autoencoder. ``grid = resolution / 2**(len(channel_mult) - 1)``; tokens per frame = grid^2."""

    resolution: int = 64
    """Side of the square input frames."""
    in_channels: int = 3
    """Colour channels of the frames."""
    channels: int = 64
    """Base width of the convolutions; level ``i`` has ``channels * channel_mult[i]``."""
    channel_mult: tuple[int, ...] = (1, 1, 1, 1, 1)
    """Width multiplier per resolution level; each level after the first halves the resolution."""
    num_res_blocks: int = 2
    """Residual blocks per level in the encoder (the decoder has one more, as in VQGAN)."""
    attn_resolutions: tuple[int, ...] = (8, 16)
    """Resolutions at which self-attention follows each residual block."""
    z_channels: int = 512
    """Channels of the encoder output before the 1x1 projection to the code dimension."""
    embed_dim: int = 512
    """Dimension of the codes."""
    dropout: float = 0.0
    """Dropout inside residual blocks."""
    background: bool = False
    """A learned per-pixel background image (not in IRIS), initialised from the mean training frame
    (``TokenizerModule.init_background_frames``). It is subtracted from the encoder's input and added to the
    decoder's output, so tokens and decoder model only what differs from it. On Breakout the static screen
    is 99% of the pixels; without this the demo codebook collapsed (docs/LOG.md)."""
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    """The discrete bottleneck."""

    def __post_init__(self):
        if isinstance(self.quantizer, dict):
            self.quantizer = QuantizerConfig(**self.quantizer)
        self.channel_mult = tuple(self.channel_mult)
        self.attn_resolutions = tuple(self.attn_resolutions)
        downsamples = len(self.channel_mult) - 1
        if self.resolution % (2**downsamples):
            raise ValueError(
                f"resolution {self.resolution} is not divisible by 2**{downsamples} "
                f"(one halving per entry of channel_mult after the first)."
            )

    @property
    def grid(self) -> int:
        return self.resolution // 2 ** (len(self.channel_mult) - 1)

    @property
    def tokens_per_frame(self) -> int:
        return self.grid**2

    @property
    def vocab_size(self) -> int:
        return self.quantizer.vocab_size


# Checkpoints are read with torch.load(weights_only=True); hyperparameters can hold this dataclass.
torch.serialization.add_safe_globals([TokenizerConfig])

DECODE_CHUNK = 8
"""Frames decoded at a time on a CPU (:meth:`Tokenizer.decode`)."""


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(32, channels), channels, eps=1e-6)


class SiLU(nn.Module):
    """SiLU, in place when no gradient is recorded: at inference the decoder is bound by memory traffic at 64x64
    (GroupNorm, SiLU, additions), and writing SiLU's output over its input made IRIS-size decoding at batch 64 about
    20% faster in bf16 (docs/LOG.md). Its input is always a fresh GroupNorm output that nothing else reads."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(x, inplace=not torch.is_grad_enabled())


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, dropout: float):
        super().__init__()
        self.body = nn.Sequential(
            _norm(c_in),
            SiLU(),
            nn.Conv2d(c_in, c_out, 3, padding=1),
            _norm(c_out),
            SiLU(),
            nn.Dropout(dropout),
            nn.Conv2d(c_out, c_out, 3, padding=1),
        )
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.body(x)


class AttnBlock(nn.Module):
    """Single-head self-attention over the positions of a feature map, with a residual connection."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = _norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        q, k, v = rearrange(self.qkv(self.norm(x)), "b (three c) h w -> three b 1 (h w) c", three=3)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, 1, h*w, C)
        return x + self.proj(rearrange(out, "b 1 (h w) c -> b c h w", h=h, w=w))


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # asymmetric padding as in VQGAN


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _level(c_in: int, c_out: int, blocks: int, attention: bool, dropout: float) -> tuple[list[nn.Module], int]:
    layers: list[nn.Module] = []
    for _ in range(blocks):
        layers.append(ResBlock(c_in, c_out, dropout))
        c_in = c_out
        if attention:
            layers.append(AttnBlock(c_out))
    return layers, c_out


def _middle(channels: int, dropout: float) -> list[nn.Module]:
    return [ResBlock(channels, channels, dropout), AttnBlock(channels), ResBlock(channels, channels, dropout)]


class Encoder(nn.Module):
    """``(B, 3, R, R)`` in [-1, 1] -> ``(B, z_channels, grid, grid)``."""

    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        widths = [cfg.channels * m for m in cfg.channel_mult]
        layers: list[nn.Module] = [nn.Conv2d(cfg.in_channels, cfg.channels, 3, padding=1)]
        c, resolution = cfg.channels, cfg.resolution
        for i, width in enumerate(widths):
            level, c = _level(c, width, cfg.num_res_blocks, resolution in cfg.attn_resolutions, cfg.dropout)
            layers += level
            if i < len(widths) - 1:
                layers.append(Downsample(c))
                resolution //= 2
        layers += _middle(c, cfg.dropout)
        layers += [_norm(c), SiLU(), nn.Conv2d(c, cfg.z_channels, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Decoder(nn.Module):
    """``(B, z_channels, grid, grid)`` -> ``(B, 3, R, R)`` in about [-1, 1]."""

    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        widths = [cfg.channels * m for m in cfg.channel_mult]
        c, resolution = widths[-1], cfg.grid
        layers: list[nn.Module] = [nn.Conv2d(cfg.z_channels, c, 3, padding=1), *_middle(c, cfg.dropout)]
        for i in reversed(range(len(widths))):
            attention = resolution in cfg.attn_resolutions
            level, c = _level(c, widths[i], cfg.num_res_blocks + 1, attention, cfg.dropout)
            layers += level
            if i > 0:
                layers.append(Upsample(c))
                resolution *= 2
        layers += [_norm(c), SiLU(), nn.Conv2d(c, cfg.in_channels, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


@dataclass
class TokenizerOutput:
    """Everything a training step needs from one pass through the autoencoder."""

    reconstruction: torch.Tensor  # (B, 3, H, W) float, about [-1, 1]
    tokens: torch.Tensor  # (B, K) int64
    quantizer_loss: torch.Tensor  # ()


class Tokenizer(nn.Module):
    """Discrete autoencoder. Frames in and out are ``uint8 (B, 3, H, W)``; scaling to [-1, 1] happens here."""

    def __init__(self, config: TokenizerConfig | None = None):
        super().__init__()
        self.config = config = config or TokenizerConfig()
        self.encoder = Encoder(config)
        self.pre_quant = nn.Conv2d(config.z_channels, config.embed_dim, 1)
        self.quantizer = Quantizer(config.quantizer, config.embed_dim)
        self.post_quant = nn.Conv2d(config.embed_dim, config.z_channels, 1)
        self.decoder = Decoder(config)
        r = config.resolution
        self.background = nn.Parameter(torch.zeros(1, config.in_channels, r, r)) if config.background else None
        if config.background:
            # Start from "reconstruction = background": the decoder learns only the differences.
            last = self.decoder.net[-1]
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    @property
    def tokens_per_frame(self) -> int:
        return self.config.tokens_per_frame

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    def check_frames(self, frames: torch.Tensor) -> None:
        """Raise a ValueError that names the problem if ``frames`` is not ``uint8 (B, 3, R, R)``."""
        cfg = self.config
        expected = (cfg.in_channels, cfg.resolution, cfg.resolution)
        if (
            not isinstance(frames, torch.Tensor)
            or frames.dtype != torch.uint8
            or frames.dim() != 4
            or tuple(frames.shape[1:]) != expected
        ):
            got = f"{frames.dtype} {tuple(frames.shape)}" if isinstance(frames, torch.Tensor) else type(frames)
            raise ValueError(
                f"Frames must be a uint8 tensor of shape (B, {', '.join(map(str, expected))}) (channels first, "
                f"values 0-255); got {got}. Convert HWC arrays with frames.permute(0, 3, 1, 2) and floats in "
                "[0, 1] with (frames * 255).round().to(torch.uint8)."
            )

    @staticmethod
    def normalize(frames: torch.Tensor) -> torch.Tensor:
        return frames.float().div(127.5).sub(1.0)

    @staticmethod
    def to_uint8(images: torch.Tensor) -> torch.Tensor:
        return images.float().add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the weights (inputs are cast to it, so a bf16 copy runs as is)."""
        return self.pre_quant.weight.dtype

    def _quantize(self, frames: torch.Tensor) -> Quantized:
        self.check_frames(frames)
        images = self.normalize(frames)
        if self.background is not None:
            images = images - self.background.detach().float()  # learned through the decoder side only
        return self.quantizer(self.pre_quant(self.encoder(images.to(self.dtype))))

    def _decode_features(self, features: torch.Tensor) -> torch.Tensor:
        images = self.decoder(self.post_quant(features.to(self.dtype)))
        return images + self.background if self.background is not None else images

    @torch.no_grad()
    def init_background(self, frames: torch.Tensor) -> None:
        """Set the background image to the mean of ``frames`` (uint8, any batch), in [-1, 1]."""
        if self.background is None:
            raise ValueError("This tokenizer has no background image (TokenizerConfig.background=False).")
        self.check_frames(frames)
        self.background.copy_(self.normalize(frames).mean(0, keepdim=True))

    def forward(self, frames: torch.Tensor) -> TokenizerOutput:
        q = self._quantize(frames)
        return TokenizerOutput(self._decode_features(q.features), q.tokens, q.loss)

    @torch.no_grad()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """``uint8 (B, 3, R, R)`` -> tokens ``int64 (B, K)``."""
        return self._quantize(frames).tokens

    def decode_normalized(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens ``(B, K)`` -> images ``float (B, 3, R, R)`` in about [-1, 1] (differentiable in the decoder)."""
        if tokens.dim() != 2 or tokens.shape[1] != self.tokens_per_frame:
            raise ValueError(f"Tokens must have shape (B, {self.tokens_per_frame}); got {tuple(tokens.shape)}.")
        grid = self.config.grid
        return self._decode_features(self.quantizer.lookup(tokens, grid, grid))

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens ``(B, K)`` -> frames ``uint8 (B, 3, R, R)``. On a CPU, ``DECODE_CHUNK`` frames at a time: the
        decoder's full-resolution activations of a few frames stay in cache, and its GroupNorm, SiLU and additions,
        which are bound by memory traffic, ran 1.2-1.5x faster so at batch 64 (docs/LOG.md). Frames are decoded
        independently, so the chunking changes nothing but the speed."""
        chunk = DECODE_CHUNK if tokens.device.type == "cpu" else len(tokens)
        return torch.cat([self.to_uint8(self.decode_normalized(part)) for part in tokens.split(max(chunk, 1))])
