"""LightningCLI entry points of the supervised stages."""

from __future__ import annotations

import sys

import torch
from lightning.pytorch.cli import LightningCLI

from iris_wm.data.datamodule import StoreDataModule
from iris_wm.data.token_writer import TokenStoreWriter
from sequence_model.gpt import GPTConfig
from sequence_model.module import WorldModelModule
from sequence_model.world_model import WorldModelConfig
from tokenizer.model import TokenizerConfig
from tokenizer.module import TokenizerModule
from tokenizer.quantizer import QuantizerConfig

# Lightning reads checkpoints with torch.load(weights_only=True); our hyperparameters hold these dataclasses.
torch.serialization.add_safe_globals([TokenizerConfig, QuantizerConfig, WorldModelConfig, GPTConfig])


class StageCLI(LightningCLI):
    """LightningCLI limited to the verbs a stage supports (no `test`: validation data plays that role)."""

    verbs: tuple[str, ...] = ("fit", "validate", "predict")

    @classmethod
    def subcommands(cls) -> dict[str, set[str]]:
        return {k: v for k, v in LightningCLI.subcommands().items() if k in cls.verbs}


class TokenizerCLI(StageCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(TokenStoreWriter, "token_writer")


class WorldModelCLI(StageCLI):
    verbs = ("fit", "validate")

    def add_arguments_to_parser(self, parser) -> None:
        # Windows are as long as the context; sizes that come from the data are read from the token store.
        parser.link_arguments("model.config.context_steps", "data.sequence_length", apply_on="parse")
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
