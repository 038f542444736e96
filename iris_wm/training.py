"""LightningCLI entry points of the supervised stages."""

from __future__ import annotations

import sys

import torch
from lightning.pytorch import Callback
from lightning.pytorch.cli import LightningCLI

from iris_wm.data.datamodule import StoreDataModule
from iris_wm.data.token_writer import TokenStoreWriter
from iris_wm.faults import maybe_fault
from sequence_model.gpt import GPTConfig
from sequence_model.module import WorldModelModule
from sequence_model.world_model import WorldModelConfig
from tokenizer.model import TokenizerConfig
from tokenizer.module import TokenizerModule
from tokenizer.quantizer import QuantizerConfig

# Lightning reads checkpoints with torch.load(weights_only=True); our hyperparameters hold these dataclasses.
torch.serialization.add_safe_globals([TokenizerConfig, QuantizerConfig, WorldModelConfig, GPTConfig])


def cpu_has_native_bf16() -> bool:
    """True where the CPU computes bf16 in hardware (AVX512-BF16 or AMX). Elsewhere (e.g. AVX2-only AMD EPYC)
    oneDNN emulates it: a demo tokenizer step took 21.6 s in bf16 against 1.4 s in fp32 (docs/LOG.md)."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


class ResumeState(Callback):
    """Saves the global random state in each checkpoint and restores it on resume, so dropout and sampling
    continue as in an uninterrupted run (Lightning restores weights, optimisers and counters, not RNGs).
    With :class:`~iris_wm.data.datamodule.ResumableRandomSampler` a resumed fit is bitwise the same on CPU."""

    def state_dict(self) -> dict:
        return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available()
                else []}  # fmt: skip

    def load_state_dict(self, state: dict) -> None:
        torch.set_rng_state(state["torch"])
        if state["cuda"]:
            torch.cuda.set_rng_state_all(state["cuda"])


class FiniteLoss(Callback):
    """Stops training at the first NaN or infinite loss, before the backward pass can spoil the weights, so
    the last checkpoint on disk is still a good one."""

    def __init__(self, stage: str):
        self.stage = stage

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        if not bool(torch.isfinite(loss.detach())):
            folder = trainer.checkpoint_callback.dirpath if trainer.checkpoint_callback else trainer.default_root_dir
            raise FloatingPointError(
                f"The {self.stage} loss became {float(loss):.4g} at step {trainer.global_step}; training stopped "
                f"before updating the weights, and the last good checkpoint is in {folder}. Lower the learning "
                "rate, enable gradient clipping (--trainer.gradient_clip_val), or use fp32 "
                "(--trainer.precision 32-true), then resume with --ckpt_path last."
            )


class FaultInjection(Callback):
    """``IRIS_WM_FAULT=<stage>:<step>`` kills the process after that optimiser step (the crash tests)."""

    def __init__(self, stage: str):
        self.stage = stage

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        maybe_fault(f"{self.stage}:{trainer.global_step}")


class StageCLI(LightningCLI):
    """LightningCLI limited to the verbs a stage supports (no `test`: validation data plays that role)."""

    verbs: tuple[str, ...] = ("fit", "validate", "predict")
    stage = "stage"

    @classmethod
    def subcommands(cls) -> dict[str, set[str]]:
        return {k: v for k, v in LightningCLI.subcommands().items() if k in cls.verbs}

    def before_fit(self) -> None:
        self.trainer.callbacks[:0] = [FiniteLoss(self.stage)]
        self.trainer.callbacks.extend([ResumeState(), FaultInjection(self.stage)])

    def before_instantiate_classes(self) -> None:
        # bf16 configs are written for CPUs with bf16 hardware; where it would be emulated, train in fp32.
        trainer = self.config[self.subcommand].trainer
        on_cpu = trainer.accelerator in ("cpu", "auto") and not torch.cuda.is_available()
        if on_cpu and str(trainer.precision).startswith("bf16") and not cpu_has_native_bf16():
            print(f"iris-wm: this CPU has no bf16 hardware (emulated bf16 is about 15x slower); "
                  f"precision {trainer.precision} -> 32-true.", file=sys.stderr)
            trainer.precision = "32-true"


class TokenizerCLI(StageCLI):
    stage = "tokenizer"

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(TokenStoreWriter, "token_writer")


class WorldModelCLI(StageCLI):
    verbs = ("fit", "validate")
    stage = "world_model"

    def add_arguments_to_parser(self, parser) -> None:
        # Windows are as long as the context; sizes that come from the data are read from the token store.
        parser.link_arguments("model.config.context_steps", "data.sequence_length", apply_on="parse")
        for name in ("vocab_size", "tokens_per_frame", "num_actions"):
            parser.link_arguments(f"data.{name}", f"model.config.{name}", apply_on="instantiate")


class AgentCLI(StageCLI):
    verbs = ("fit",)
    stage = "agent"

    def add_arguments_to_parser(self, parser) -> None:
        # Burn-in windows are served whole from the token store; its sizes are linked, not typed.
        parser.link_arguments("model.burn_in", "data.sequence_length", apply_on="parse")
        for name in ("vocab_size", "tokens_per_frame", "num_actions"):
            parser.link_arguments(f"data.{name}", f"model.config.{name}", apply_on="instantiate")


def _run(cli_class: type[StageCLI], model_class, prog: str, argv: list[str]) -> StageCLI:
    # LightningCLI reads sys.argv; make it look like the stage was called directly.
    saved, sys.argv = sys.argv, [prog, *argv]
    try:
        return cli_class(model_class, StoreDataModule, save_config_kwargs={"overwrite": True})
    finally:
        sys.argv = saved


def run_tokenizer_cli(argv: list[str]) -> TokenizerCLI:
    return _run(TokenizerCLI, TokenizerModule, "iris-wm tokenizer", argv)


def run_world_model_cli(argv: list[str]) -> WorldModelCLI:
    return _run(WorldModelCLI, WorldModelModule, "iris-wm world-model", argv)


def run_agent_cli(argv: list[str]) -> AgentCLI:
    from iris_wm.agent.module import ActorCriticModule

    return _run(AgentCLI, ActorCriticModule, "iris-wm agent", argv)
