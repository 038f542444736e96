"""LightningCLI entry points of the supervised stages."""

from __future__ import annotations

import sys

import torch
from lightning.pytorch.cli import LightningCLI

from iris_wm.data.datamodule import StoreDataModule
from iris_wm.data.token_writer import TokenStoreWriter
from tokenizer.model import TokenizerConfig
from tokenizer.module import TokenizerModule
from tokenizer.quantizer import QuantizerConfig

# Lightning reads checkpoints with torch.load(weights_only=True); our hyperparameters hold these dataclasses.
torch.serialization.add_safe_globals([TokenizerConfig, QuantizerConfig])


class StageCLI(LightningCLI):
    """LightningCLI limited to the verbs a stage supports (no `test`: validation data plays that role)."""

    verbs: tuple[str, ...] = ("fit", "validate", "predict")

    @classmethod
    def subcommands(cls) -> dict[str, set[str]]:
        return {k: v for k, v in LightningCLI.subcommands().items() if k in cls.verbs}


class TokenizerCLI(StageCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(TokenStoreWriter, "token_writer")


def run_tokenizer_cli(argv: list[str]) -> TokenizerCLI:
    # LightningCLI reads sys.argv; make it look like the stage was called directly.
    saved, sys.argv = sys.argv, ["iris-wm tokenizer", *argv]
    try:
        return TokenizerCLI(TokenizerModule, StoreDataModule, save_config_kwargs={"overwrite": True})
    finally:
        sys.argv = saved
