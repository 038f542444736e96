"""LightningCLI entry points of the supervised stages."""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

import torch
from jsonargparse import Namespace
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
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

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
    """LightningCLI limited to the verbs a stage supports (no `test`: validation data plays that role), with
    ``--model.from_pretrained SOURCE``: the stage's model starts from (fit) or is (validate, predict) the one in
    a pretrained folder, a whole-agent folder, a Hub repository id or a ``.ckpt``
    (:func:`iris_wm.hub.load_model`). Its architecture replaces ``model.config``; the weights are loaded after
    the module is built, and sizes linked from the data must agree with them."""

    verbs: tuple[str, ...] = ("fit", "validate", "predict")
    stage = "stage"
    kind = "model"  # the attribute of the Lightning module that holds the model (a kind of iris_wm.hub)
    data_linked: tuple[str, ...] = ()  # fields of model.config that are read from the data

    @classmethod
    def subcommands(cls) -> dict[str, set[str]]:
        return {k: v for k, v in LightningCLI.subcommands().items() if k in cls.verbs}

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument(
            "--model.from_pretrained",
            type=str | None,
            default=None,
            help=f"Pretrained {self.kind.replace('_', ' ')} to start from (fit) or to use (validate, "
            "predict): a folder of save_pretrained or save_agent, a Hub repository id, or a .ckpt. "
            "Its config replaces model.config.",
        )

    def before_fit(self) -> None:
        self._check_ckpt_path()
        self.trainer.callbacks[:0] = [FiniteLoss(self.stage)]
        self.trainer.callbacks.extend([ResumeState(), FaultInjection(self.stage)])

    def _parse_ckpt_path(self) -> None:
        # LightningCLI reads a --ckpt_path file's hyperparameters while parsing, before any public hook runs.
        if self.config.get("subcommand"):
            check_checkpoint_file(self.config[self.config.subcommand].get("ckpt_path"))
        super()._parse_ckpt_path()

    def before_validate(self) -> None:
        self._check_ckpt_path()

    def before_predict(self) -> None:
        self._check_ckpt_path()

    def _check_ckpt_path(self) -> None:
        ckpt_path = self.config[self.subcommand].get("ckpt_path")
        callback = self.trainer.checkpoint_callback
        if ckpt_path == "last" and callback is not None and callback.dirpath:
            ckpt_path = str(Path(callback.dirpath) / "last.ckpt")
        check_checkpoint_file(ckpt_path)

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand]
        # bf16 configs are written for CPUs with bf16 hardware; where it would be emulated, train in fp32.
        trainer = config.trainer
        on_cpu = trainer.accelerator in ("cpu", "auto") and not torch.cuda.is_available()
        if on_cpu and str(trainer.precision).startswith("bf16") and not cpu_has_native_bf16():
            print(
                f"iris-wm: this CPU has no bf16 hardware (emulated bf16 is about 15x slower); "
                f"precision {trainer.precision} -> 32-true.",
                file=sys.stderr,
            )
            trainer.precision = "32-true"
        # The module does not know this option: take it out for instantiation, put it back for config.yaml.
        self.pretrained_source = config.model.pop("from_pretrained", None)
        self.pretrained = None
        if self.pretrained_source is None:
            return
        if config.get("ckpt_path"):
            raise ValueError(
                "Give --model.from_pretrained or --ckpt_path, not both: a checkpoint restores the "
                "weights itself (to fine-tune from pretrained weights, start a new fit without "
                "--ckpt_path)."
            )
        from iris_wm.hub import load_model

        self.pretrained = load_model(self.pretrained_source, self.kind)
        wanted = _flatten(asdict(self.pretrained.config))
        changed = [f"{k} {old} -> {new}" for k, new, old in _differences(wanted, _as_dict(config.model.config))]
        if changed:
            print(f"iris-wm: model.config from {self.pretrained_source}: {', '.join(changed)}.", file=sys.stderr)
        config.model.config = Namespace()
        for key, value in wanted.items():
            config.model.config[key] = value

    def after_instantiate_classes(self) -> None:
        config = self.config[self.subcommand]
        ckpt_path = config.get("ckpt_path")
        if self.pretrained_source is not None:
            config.model.from_pretrained = self.pretrained_source
            source, wanted = self.pretrained_source, asdict(self.pretrained.config)
        elif ckpt_path and Path(ckpt_path).is_file() and self.data_linked:
            # LightningCLI has put the checkpoint's hyperparameters in the config; the data's sizes replaced them.
            given = _as_dict(config.model.config)
            source, wanted = ckpt_path, {k: given[k] for k in self.data_linked if k in given}
        else:
            return
        model = getattr(self.model, self.kind)
        differ = [
            f"{k}: {ours} in the model, {data} in the data"
            for k, ours, data in _differences(_flatten(wanted), asdict(model.config))
        ]
        if differ:
            raise ValueError(
                f"The {self.kind.replace('_', ' ')} in {source} does not fit the data at "
                f"{config.data.root} ({'; '.join(differ)}): use data of the game it was trained on, "
                "encoded by the tokenizer it was trained with."
            )
        if self.pretrained is not None:
            model.load_state_dict(self.pretrained.state_dict())
            self.pretrained = None  # the module holds the weights now


def check_checkpoint_file(ckpt_path: str | None) -> None:
    """Refuse a ``--ckpt_path`` file that is not a whole checkpoint before Lightning reads it: the archive's
    CRCs are checked (nothing is unpickled), so a file truncated by a crash gets a message with the fix
    rather than a deep stack from the unpickler."""
    import zipfile

    if not ckpt_path or ckpt_path in ("last", "best", "hpc", "registry") or not Path(ckpt_path).is_file():
        return
    try:
        with zipfile.ZipFile(ckpt_path) as archive:
            damaged = archive.testzip()
        damaged = damaged and f"its entry {damaged} fails its CRC check"
    except (zipfile.BadZipFile, OSError) as error:
        damaged = f"not a complete archive: {error}"
    if damaged is not None:
        raise ValueError(
            f"--ckpt_path {ckpt_path} is damaged ({damaged}); it was not read. It was probably cut off "
            "by a crash or a full disk while it was written: resume from another checkpoint of the "
            "run (ModelCheckpoint keeps its best, epoch=...-step=....ckpt, beside last.ckpt), or "
            "start again."
        )


def _flatten(config: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _as_dict(config) -> dict:
    return config.as_dict() if isinstance(config, Namespace) else dict(config)


def _differences(wanted: dict, other: dict) -> list[tuple]:
    """``(key, wanted value, other value)`` for each flattened key of ``wanted`` whose value ``other`` does not
    have (tuples and lists compare equal)."""
    flat = _flatten(other)

    def plain(value):
        return list(value) if isinstance(value, tuple) else value

    return [(k, v, flat.get(k)) for k, v in wanted.items() if plain(flat.get(k)) != plain(v)]


class TokenizerCLI(StageCLI):
    stage = kind = "tokenizer"

    def add_arguments_to_parser(self, parser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_lightning_class_args(TokenStoreWriter, "token_writer")

    def after_instantiate_classes(self) -> None:
        super().after_instantiate_classes()
        for callback in self.trainer.callbacks:
            if isinstance(callback, TokenStoreWriter):
                callback.tokenizer_source = self.pretrained_source


class WorldModelCLI(StageCLI):
    verbs = ("fit", "validate")
    stage = kind = "world_model"
    data_linked = ("vocab_size", "tokens_per_frame", "num_actions")

    def add_arguments_to_parser(self, parser) -> None:
        super().add_arguments_to_parser(parser)
        # Windows are as long as the context; sizes that come from the data are read from the token store.
        parser.link_arguments("model.config.context_steps", "data.sequence_length", apply_on="parse")
        for name in self.data_linked:
            parser.link_arguments(f"data.{name}", f"model.config.{name}", apply_on="instantiate")


class AgentCLI(StageCLI):
    verbs = ("fit",)
    stage = "agent"
    kind = "actor_critic"
    data_linked = ("vocab_size", "tokens_per_frame", "num_actions")

    def add_arguments_to_parser(self, parser) -> None:
        super().add_arguments_to_parser(parser)
        # Burn-in windows are served whole from the token store; its sizes are linked, not typed.
        parser.link_arguments("model.burn_in", "data.sequence_length", apply_on="parse")
        for name in self.data_linked:
            parser.link_arguments(f"data.{name}", f"model.config.{name}", apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        super().before_instantiate_classes()
        model = self.config[self.subcommand].model
        from iris_wm.hub import AGENT_FILE, is_checkpoint_path, resolve

        if self.pretrained_source is None or is_checkpoint_path(self.pretrained_source):
            return

        folder = resolve(self.pretrained_source, None, "model")
        if (folder / AGENT_FILE).is_file():
            # A whole agent goes on training in its own world model, read through its own tokenizer (to pair
            # its actor-critic with others, give FOLDER/actor_critic and --model.world_model/--model.tokenizer).
            ours = str(folder / "world_model"), str(folder / "tokenizer")
            if (model.world_model, model.tokenizer) != ours and model.world_model is not None:
                print(
                    f"iris-wm: --model.from_pretrained {self.pretrained_source} is a whole agent; its world "
                    "model and tokenizer replace --model.world_model and --model.tokenizer.",
                    file=sys.stderr,
                )
            model.world_model, model.tokenizer = ours


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
