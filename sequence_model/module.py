"""`WorldModelModule`: the Lightning system that trains the world model on windows of tokens.

Batches are duck-typed: ``observations`` ``int (B, T, K)`` token ids, ``actions``, ``rewards``,
``terminated`` and ``mask`` ``(B, T)``, as the application's token store serves them.
"""

from __future__ import annotations

import torch
from lightning import LightningModule

from sequence_model.metrics import END_CLASSES, REWARD_CLASSES, bits_per_frame, classification_figures
from sequence_model.world_model import WorldModel, WorldModelConfig, WorldModelLosses


class WorldModelModule(LightningModule):
    """Trains a :class:`WorldModel` with observation cross-entropy + reward + termination losses."""

    def __init__(
        self,
        config: WorldModelConfig = WorldModelConfig(),  # noqa: B008  (never mutated; jsonargparse expands it)
        learning_rate: float = 1e-4,
        weight_decay: float = 0.01,
        warmup_steps: int = 0,
        betas: tuple[float, float] = (0.9, 0.95),
    ):
        """
        Args:
            config: sizes of the world model (vocabulary, tokens per frame and actions come from the token store).
            learning_rate: AdamW learning rate (IRIS: 1e-4).
            weight_decay: AdamW weight decay on the weights of linear layers only (IRIS: 0.01).
            warmup_steps: linear warmup of the learning rate from 0 over this many steps.
            betas: AdamW betas.
        """
        super().__init__()
        self.save_hyperparameters()
        # LightningCLI may save a linked config as a plain dict; rebuild the dataclass when loading it back.
        self.config = config = WorldModelConfig(**config) if isinstance(config, dict) else config
        self.world_model = WorldModel(config)
        self.register_buffer("_val_reward_confusion", torch.zeros(3, 3), persistent=False)
        self.register_buffer("_val_end_confusion", torch.zeros(2, 2), persistent=False)

    def compute_loss(self, batch) -> WorldModelLosses:
        states = getattr(batch, "states", None) if self.config.state_dim else None
        return self.world_model.loss(
            batch.observations, batch.actions, batch.rewards, batch.terminated, batch.mask, states
        )

    def loss(self, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One objective for the Trainer and the online loop: ``(loss, metrics)``."""
        losses = self.compute_loss(batch)
        return losses.total, self._metrics(losses)

    def _metrics(self, losses: WorldModelLosses) -> dict[str, torch.Tensor]:
        state = {} if losses.state is None else {"state_ce": losses.state}
        return state | {
            "loss": losses.total,
            "observation_ce": losses.observation,
            "next_frame_ce": losses.next_frame,
            "bits_per_frame": bits_per_frame(losses.observation, self.config.tokens_per_frame),
            "perplexity": losses.observation.exp(),
            "reward_loss": losses.reward,
            "reward_accuracy": losses.reward_accuracy,
            "termination_loss": losses.termination,
        }

    def training_step(self, batch, batch_idx):
        losses = self.compute_loss(batch)
        # Under data parallelism each rank trains on its own windows: the logged figures are the ranks' mean.
        self.log_dict({f"train/{k}": v for k, v in self._metrics(losses).items()}, sync_dist=True)
        self.log("loss", losses.total, prog_bar=True, logger=False, sync_dist=True)
        return losses.total

    def on_validation_epoch_start(self):
        self._val_reward_confusion.zero_()
        self._val_end_confusion.zero_()

    def validation_step(self, batch, batch_idx):
        losses = self.compute_loss(batch)
        self._val_reward_confusion += losses.reward_confusion
        self._val_end_confusion += losses.termination_confusion
        metrics = self._metrics(losses)
        self.log_dict({f"val/{k}": v for k, v in metrics.items()}, batch_size=len(batch), prog_bar=False)
        self.log("val_obs_ce", losses.observation, prog_bar=True, logger=False, batch_size=len(batch))

    def on_validation_epoch_end(self):
        """Per class precision, recall and F1 of the reward signs and of the episode end on every validation step,
        beside the majority-class baseline's F1 (``val/reward/...``, ``val/termination/...``)."""
        reward = classification_figures(self._val_reward_confusion, REWARD_CLASSES)
        ends = classification_figures(self._val_end_confusion, END_CLASSES)
        figures = {f"val/reward/{k}": v for k, v in reward.items()} | {
            f"val/termination/{k}": v for k, v in ends.items()
        }
        figures["val/termination_f1"] = ends["f1/ends"]
        figures["val/reward_f1"] = reward["f1/positive"]
        self.log_dict(figures)

    def configure_optimizers(self):
        groups = parameter_groups(self.world_model, self.hparams.weight_decay)
        optimizer = torch.optim.AdamW(groups, lr=self.hparams.learning_rate, betas=tuple(self.hparams.betas))
        warmup = max(1, self.hparams.warmup_steps)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: weight decay on the weights of linear layers only (embeddings, biases, norms: none)."""
    decay, no_decay = [], []
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            is_weight = name == "weight" and isinstance(module, torch.nn.Linear)
            (decay if is_weight else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
