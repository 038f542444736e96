"""The Lightning callbacks every stage runs with: the model record in each checkpoint, the non-finite-loss stop,
the random state across a resume, the crash tests' fault points, and the writer of the tokenizer's token store."""

from __future__ import annotations

import sys

import lightning as L
import numpy as np
import torch
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import BasePredictionWriter

from iris_wm.data.store import EpisodeStore, WrongStoreKind
from iris_wm.data.tokens import write_token_store
from iris_wm.hub.checkpoints import RECORD_FORMAT, RECORD_KEY, STAGE_MODELS
from iris_wm.runtime.errors import ConfigError
from iris_wm.runtime.faults import maybe_fault
from iris_wm.runtime.files import plain_json, require_new_output
from iris_wm.runtime.numerics import check_finite
from iris_wm.runtime.provenance import weights_digest
from iris_wm.runtime.rng import global_rng_state, set_global_rng_state


class ModelRecord(Callback):
    """Writes into every checkpoint what it is: the stage and the config of each model it holds
    (``iris_wm.hub.checkpoints`` builds the models from it with no training code). The hyperparameters are saved
    as plain values, so the file holds tensors and plain containers only."""

    def __init__(self, kind: str):
        self.kind = kind

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        models = {name: getattr(pl_module, name, None) for name in STAGE_MODELS[self.kind]}
        configs = {name: plain_json(model.config) for name, model in models.items() if model is not None}
        checkpoint[RECORD_KEY] = {"format": RECORD_FORMAT, "kind": self.kind, "models": configs}
        if "hyper_parameters" in checkpoint:
            checkpoint["hyper_parameters"] = plain_json(dict(checkpoint["hyper_parameters"]))


class ResumeState(Callback):
    """Saves the global random state in each checkpoint and restores it on resume, so dropout and sampling
    continue as in an uninterrupted run (Lightning restores weights, optimisers and counters, not RNGs).
    With :class:`~iris_wm.data.datamodule.ResumableRandomSampler` a resumed fit is bitwise the same on CPU."""

    def state_dict(self) -> dict:
        return global_rng_state()

    def load_state_dict(self, state: dict) -> None:
        set_global_rng_state(state)


class FiniteLoss(Callback):
    """Stops training at the first NaN or infinite loss, before the backward pass can spoil the weights, so
    the last checkpoint on disk is still a good one."""

    def __init__(self, stage: str):
        self.stage = stage

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        folder = trainer.checkpoint_callback.dirpath if trainer.checkpoint_callback else trainer.default_root_dir
        check_finite(
            [loss],
            self.stage.replace("_", " "),
            trainer.global_step,
            f"training stopped before updating the weights, and the last good checkpoint is in {folder}",
            "Lower the learning rate, enable gradient clipping (--trainer.gradient_clip_val), or use fp32 "
            "(--trainer.precision 32-true), then resume with --ckpt_path last.",
        )


class HowToContinue(Callback):
    """On Ctrl-C (Lightning stops the trainer and exits with status 1), say how to go on: the checkpoints
    written so far are kept, and ``--ckpt_path last`` resumes from the newest."""

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt) and trainer.state.fn == "fit":
            folder = getattr(trainer.checkpoint_callback, "dirpath", None) or "the checkpoint folder"
            print(
                f"iris-wm: interrupted; the checkpoints in {folder} are kept. Rerun the same command with "
                "--ckpt_path last to resume from the newest.",
                file=sys.stderr,
            )


class FaultInjection(Callback):
    """``IRIS_WM_FAULT=<stage>:<step>`` kills the process after that optimiser step (the crash tests)."""

    def __init__(self, stage: str):
        self.stage = stage

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        maybe_fault(f"{self.stage}:{trainer.global_step}")


class TokenStoreWriter(BasePredictionWriter):
    """Collects the tokens that ``predict`` produces and writes them, row-aligned, as a :class:`TokenStore`.
    Under data parallelism every rank encodes its share of the frames and rank 0 writes the store.

    The token store copies actions, rewards and episode ends from the episode store, so the world model
    reads nothing else. Its manifest names the episode store (path and manifest digest) and the tokenizer
    checkpoint, so a mismatch can be detected later.
    """

    def __init__(self, output: str | None = None, episodes_per_shard: int = 256):
        """
        Args:
            output: folder of the token store to write (must not exist yet). Required for `predict`.
            episodes_per_shard: episodes written per Arrow shard.
        """
        super().__init__(write_interval="batch")
        self.output = output
        self.episodes_per_shard = episodes_per_shard
        self._tokens: np.ndarray | None = None
        self.tokenizer_source: str | None = None
        """Where the tokenizer came from when it was not a --ckpt_path (the CLI sets --model.from_pretrained)."""

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.output:
            raise ConfigError("`predict` writes a token store: pass --token_writer.output FOLDER.")
        require_new_output(self.output, "token store")  # before any frame is encoded
        store = trainer.datamodule.store
        if not isinstance(store, EpisodeStore):
            raise WrongStoreKind(f"`predict` encodes an episode store, but {store.root} is a {store.kind!r} store.")
        self._tokens = np.full((store.num_steps, pl_module.config.tokens_per_frame), -1, dtype=np.int16)

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        rows = batch.rows.reshape(-1).cpu().numpy()
        tokens = prediction.reshape(len(rows), -1).cpu().numpy().astype(np.int16)
        real = rows >= 0
        self._tokens[rows[real]] = tokens[real]

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        source: EpisodeStore = trainer.datamodule.store
        if trainer.world_size > 1:
            # Each rank encoded its share of the frames (-1 elsewhere): the maximum over ranks is every frame's.
            tokens = torch.from_numpy(self._tokens.astype(np.int32))
            torch.distributed.all_reduce(tokens, op=torch.distributed.ReduceOp.MAX)
            self._tokens = tokens.numpy().astype(np.int16)
            if not trainer.is_global_zero:
                return
        if (self._tokens < 0).any():
            raise RuntimeError("Some frames were not encoded; the token store was not written.")
        write_token_store(
            self.output,
            source,
            self._tokens,
            pl_module.config,
            trainer.ckpt_path or self.tokenizer_source,
            self.episodes_per_shard,
            weights_digest(pl_module.tokenizer),
        )
