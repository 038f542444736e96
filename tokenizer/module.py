"""`TokenizerModule`: the Lightning system that trains, validates and runs the tokenizer.

Batches are duck-typed so that this package needs nothing from the application: either a ``uint8`` tensor
``(B, 3, H, W)``, or an object with ``observations`` ``uint8 (B, T, 3, H, W)`` and ``mask`` ``bool (B, T)``
(padded steps carry ``mask=False`` and weigh nothing in the loss or the metrics).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from einops import rearrange
from torch import nn

from tokenizer.losses import PerceptualLoss
from tokenizer.model import Tokenizer, TokenizerConfig


@dataclass
class TokenizerLoss:
    """Terms of one training objective, each already averaged over the real frames of the batch."""

    total: torch.Tensor
    l1: torch.Tensor
    l2: torch.Tensor
    quantizer: torch.Tensor
    perceptual: torch.Tensor
    frames: torch.Tensor  # (M, 3, H, W) uint8, the batch's frames (padding included)
    tokens: torch.Tensor  # (M, K) codes of the batch's frames
    reconstruction: torch.Tensor  # (M, 3, H, W) in [-1, 1]
    weights: torch.Tensor  # (M,) 1 for real frames, 0 for padding


def _frames_and_weights(batch) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(batch, torch.Tensor):
        return batch, torch.ones(batch.shape[0], device=batch.device)
    frames = rearrange(batch.observations, "b t c h w -> (b t) c h w")
    return frames, batch.mask.reshape(-1).float()


def psnr(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-frame PSNR in dB between uint8 frames ``(M, 3, H, W)`` (capped at 100 dB for exact matches)."""
    mse = (reconstruction.float() - target.float()).pow(2).mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(255.0**2 / mse.clamp_min(255.0**2 * 1e-10))


def codebook_stats(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Fraction of codes used and perplexity ``exp(H)`` of a histogram of code counts."""
    probs = counts / counts.sum().clamp_min(1)
    entropy = -(probs * probs.clamp_min(1e-12).log()).sum()
    return (counts > 0).float().mean(), entropy.exp()


class TokenizerModule(L.LightningModule):
    """Trains a :class:`Tokenizer` with L1 + codebook/commitment (+ optional perceptual) loss."""

    def __init__(
        self,
        config: TokenizerConfig = TokenizerConfig(),  # noqa: B008  (never mutated; jsonargparse expands it)
        learning_rate: float = 1e-4,
        warmup_steps: int = 0,
        l1_weight: float = 1.0,
        l2_weight: float = 0.0,
        quantizer_weight: float = 1.0,
        perceptual_weight: float = 0.0,
        perceptual_weights: str | None = None,
        num_reconstructions: int = 8,
        init_background_frames: int = 2048,
        foreground_weight: float = 0.0,
        foreground_levels: float = 10.0,
    ):
        """
        Args:
            config: sizes of the autoencoder and its quantizer (defaults: the IRIS tokenizer).
            learning_rate: Adam learning rate (IRIS: 1e-4).
            warmup_steps: linear warmup of the learning rate from 0 over this many steps.
            l1_weight: weight of the L1 reconstruction loss (IRIS: 1).
            l2_weight: weight of a squared-error term (not in IRIS, 0 by default). Without a perceptual loss it
                keeps large, rare errors (small moving objects) from being outweighed by many small ones.
            quantizer_weight: weight of codebook + beta * commitment loss (IRIS: 1).
            perceptual_weight: weight of the perceptual loss (IRIS: 1; 0 disables it).
            perceptual_weights: local file with VGG16 weights for the perceptual loss (no downloads).
            num_reconstructions: frames shown in the reconstruction grid saved at each validation.
            init_background_frames: with ``config.background``, set the background image to the mean of this
                many training frames before the first step (0: start from zeros).
            foreground_weight: extra weight of the L1 and squared errors on the *foreground* pixels, those that
                differ from the background image by more than ``foreground_levels`` in some channel (needs
                ``config.background``; 0: every pixel weighs the same, as IRIS). On Breakout the ball, the paddle
                and the changed bricks are well under 1% of the pixels, and without it the tokenizer learned to
                draw the screen and not the ball (docs/LOG.md).
            foreground_levels: the threshold of ``foreground_weight``, in levels of 255.
        """
        super().__init__()
        self.save_hyperparameters()
        # LightningCLI may save a linked config as a plain dict; rebuild the dataclass when loading it back.
        self.config = config = TokenizerConfig(**config) if isinstance(config, dict) else config
        if foreground_weight < 0 or foreground_levels < 0:
            raise ValueError("foreground_weight and foreground_levels must be at least 0.")
        if foreground_weight > 0 and not config.background:
            raise ValueError(
                "foreground_weight needs a background image to tell the foreground from: set "
                "model.config.background true, or foreground_weight 0."
            )
        self.tokenizer = Tokenizer(self.config)
        self.perceptual = PerceptualLoss(perceptual_weights) if perceptual_weight > 0 else None
        self.register_buffer("_val_counts", torch.zeros(self.config.vocab_size), persistent=False)
        self._grid_batch: torch.Tensor | None = None

    # ------------------------------------------------------------------ the objective
    def loss(self, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One objective for the Trainer and the online loop: ``(loss, metrics)``."""
        terms = self.compute_loss(batch)
        return terms.total, self._metrics(terms)

    @staticmethod
    def _metrics(terms: TokenizerLoss) -> dict[str, torch.Tensor]:
        return {
            "loss": terms.total,
            "l1": terms.l1,
            "l2": terms.l2,
            "quantizer": terms.quantizer,
            "perceptual": terms.perceptual,
        }

    def compute_loss(self, batch) -> TokenizerLoss:
        frames, weights = _frames_and_weights(batch)
        out = self.tokenizer(frames)
        target = self.tokenizer.normalize(frames)
        denom = weights.sum().clamp_min(1.0)
        error = out.reconstruction.float() - target
        pixel_weights = self._pixel_weights(target)
        l1 = ((error.abs() * pixel_weights).mean(dim=(1, 2, 3)) * weights).sum() / denom
        l2 = ((error.pow(2) * pixel_weights).mean(dim=(1, 2, 3)) * weights).sum() / denom
        perceptual = self.perceptual(out.reconstruction, target) if self.perceptual else l1.new_zeros(())
        total = (
            self.hparams.l1_weight * l1
            + self.hparams.l2_weight * l2
            + self.hparams.quantizer_weight * out.quantizer_loss
            + self.hparams.perceptual_weight * perceptual
        )
        return TokenizerLoss(
            total, l1, l2, out.quantizer_loss, perceptual, frames, out.tokens, out.reconstruction, weights
        )

    def _pixel_weights(self, target: torch.Tensor) -> torch.Tensor | float:
        """``1 + foreground_weight`` on the foreground pixels of ``target`` (in [-1, 1]), 1 elsewhere."""
        if self.hparams.foreground_weight <= 0:
            return 1.0
        background = self.tokenizer.background.detach().float()
        foreground = ((target - background).abs() > self.hparams.foreground_levels / 127.5).any(1, keepdim=True)
        return 1.0 + self.hparams.foreground_weight * foreground.float()

    # ------------------------------------------------------------------ Lightning hooks
    def on_train_start(self):
        wanted = self.hparams.init_background_frames
        if self.tokenizer.background is None or wanted <= 0 or self.global_step > 0:
            return  # nothing to initialise, or a resumed run whose background is already trained
        frames = []
        for batch in self.trainer.train_dataloader:
            real, weights = _frames_and_weights(batch)
            frames.append(real[weights > 0])
            if sum(len(f) for f in frames) >= wanted:
                break
        self.tokenizer.init_background(torch.cat(frames)[:wanted].to(self.device))

    def training_step(self, batch, batch_idx):
        terms = self.compute_loss(batch)
        counts = torch.bincount(terms.tokens.flatten(), minlength=self.config.vocab_size).float()
        usage, perplexity = codebook_stats(counts)
        metrics = {**self._metrics(terms), "codebook_usage": usage, "perplexity": perplexity}
        # Under data parallelism each rank trains on its own windows: the logged figures are the ranks' mean.
        self.log_dict({f"train/{k}": v for k, v in metrics.items()}, prog_bar=False, sync_dist=True)
        self.log("loss", terms.total, prog_bar=True, logger=False, sync_dist=True)
        return terms.total

    def on_validation_epoch_start(self):
        self._val_counts.zero_()
        self._grid_batch = None

    def validation_step(self, batch, batch_idx):
        terms = self.compute_loss(batch)
        frames, weights = terms.frames, terms.weights
        recon = self.tokenizer.to_uint8(terms.reconstruction)
        denom = weights.sum().clamp_min(1.0)
        val_psnr = (psnr(recon, frames) * weights).sum() / denom
        token_weights = weights.repeat_interleave(terms.tokens.shape[1])  # padded frames count zero
        self._val_counts += torch.bincount(terms.tokens.flatten(), token_weights, minlength=self.config.vocab_size)
        batch_size = int(frames.shape[0])
        self.log_dict(
            {"val/loss": terms.total, "val/l1": terms.l1, "val/psnr": val_psnr}, prog_bar=True, batch_size=batch_size
        )
        if self._grid_batch is None:
            real = weights > 0
            keep = self.hparams.num_reconstructions
            self._grid_batch = torch.stack([frames[real][:keep], recon[real][:keep]]).cpu()

    def on_validation_epoch_end(self):
        usage, perplexity = codebook_stats(self._val_counts)
        self.log_dict({"val/codebook_usage": usage, "val/perplexity": perplexity})
        if self._grid_batch is not None and self.trainer is not None and not self.trainer.sanity_checking:
            self.save_reconstruction_grid(self._grid_batch)

    def save_reconstruction_grid(self, pair: torch.Tensor) -> Path | None:
        """Write originals (top row) over reconstructions (bottom row) as a PNG in the run folder."""
        from PIL import Image

        folder = Path(self.trainer.log_dir or self.trainer.default_root_dir) / "reconstructions"
        folder.mkdir(parents=True, exist_ok=True)
        grid = rearrange(pair, "row n c h w -> (row h) (n w) c").numpy().astype(np.uint8)
        path = folder / f"epoch{self.current_epoch:03d}-step{self.global_step:07d}.png"
        Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST).save(path)
        return path

    def predict_step(self, batch, batch_idx):
        """Codes of every frame of the batch: ``int64 (B, T, K)`` (or ``(B, K)`` for a tensor batch)."""
        if isinstance(batch, torch.Tensor):
            return self.tokenizer.encode(batch)
        frames, _ = _frames_and_weights(batch)
        tokens = self.tokenizer.encode(frames)
        return rearrange(tokens, "(b t) k -> b t k", b=batch.observations.shape[0])

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=self.hparams.learning_rate)
        warmup = max(1, self.hparams.warmup_steps)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def num_trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.tokenizer.parameters() if p.requires_grad)

    @property
    def model(self) -> nn.Module:
        return self.tokenizer
