"""The supervised stages as LightningCLI commands: ``tokenizer fit|validate|predict``, ``world-model
fit|validate`` and ``agent fit``, each over :class:`~iris_wm.data.datamodule.StoreDataModule`.

Every stage runs with the callbacks of :mod:`iris_wm.train.callbacks` (model record, non-finite-loss stop,
random state, fault points), trains in fp32 where a bf16 config meets a CPU without bf16 hardware, and takes
``--model.from_pretrained``. :func:`stage_args` builds a stage's argument list from a config and an output
folder (the demo, the scaling harness and the tests use it).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import asdict
from pathlib import Path

from jsonargparse import Namespace
from lightning.pytorch.cli import LightningCLI

from iris_wm.agent.module import ActorCriticModule
from iris_wm.data.datamodule import StoreDataModule
from iris_wm.data.sizes import SizeMismatch
from iris_wm.hub.checkpoints import is_checkpoint_path, load_model, read_checkpoint
from iris_wm.hub.pretrained import AGENT_FILE, resolve
from iris_wm.runtime.errors import ConfigError
from iris_wm.runtime.files import archive_problem
from iris_wm.runtime.hardware import effective_precision
from iris_wm.train.callbacks import (
    FaultInjection,
    FiniteLoss,
    HowToContinue,
    ModelRecord,
    ResumeState,
    TokenStoreWriter,
)
from sequence_model.module import WorldModelModule
from tokenizer.module import TokenizerModule

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
"""The repository's configs folder (configs/<stage>/<name>.yaml)."""


def stage_args(verb: str, stage: str, config: str | Path, data: str | Path, out: str | Path, *extra: str) -> list:
    """The argument list of ``verb`` of ``stage`` (``tokenizer``, ``world_model``, ``agent``) with ``config`` (a
    path, or a name under ``configs/<stage>/``) on the store ``data``, with the logs, checkpoints (``out/checkpoints``)
    and everything else the stage writes under ``out``."""
    config = Path(config) if Path(config).suffix else CONFIGS / stage / f"{config}.yaml"
    out = Path(out)
    return [
        verb,
        "--config",
        str(config),
        "--data.root",
        str(data),
        "--trainer.default_root_dir",
        str(out),
        "--trainer.logger.init_args.save_dir",
        str(out),
        "--trainer.callbacks.init_args.dirpath",
        str(out / "checkpoints"),
        *extra,
    ]


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

    def link_to_data(self, parser, window: str) -> None:
        """Windows of the length ``window`` sets; the sizes in ``data_linked`` are read from the token store, not
        typed."""
        parser.link_arguments(window, "data.sequence_length", apply_on="parse")
        for name in self.data_linked:
            parser.link_arguments(f"data.{name}", f"model.config.{name}", apply_on="instantiate")

    def before_fit(self) -> None:
        self._check_ckpt_path()
        self.trainer.callbacks[:0] = [FiniteLoss(self.stage)]
        self.trainer.callbacks.extend(
            [ModelRecord(self.stage), ResumeState(), FaultInjection(self.stage), HowToContinue()]
        )

    def _parse_ckpt_path(self) -> None:
        # LightningCLI reads a --ckpt_path file's hyperparameters while parsing, before any public hook runs.
        if self.config.get("subcommand"):
            check_checkpoint_file(self.config[self.config.subcommand].get("ckpt_path"), self.stage)
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
        trainer.precision, note = effective_precision(trainer.precision, trainer.accelerator)
        if note:
            print(f"iris-wm: {note}", file=sys.stderr)
        # The module does not know this option: take it out for instantiation, put it back for config.yaml.
        self.pretrained_source = config.model.pop("from_pretrained", None)
        self.pretrained = None
        if self.pretrained_source is None:
            return
        if config.get("ckpt_path"):
            raise ConfigError(
                "Give --model.from_pretrained or --ckpt_path, not both: a checkpoint restores the "
                "weights itself (to fine-tune from pretrained weights, start a new fit without "
                "--ckpt_path)."
            )
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
            raise SizeMismatch(
                f"The {self.kind.replace('_', ' ')} in {source} does not fit the data at "
                f"{config.data.root} ({'; '.join(differ)}): use data of the game it was trained on, "
                "encoded by the tokenizer it was trained with."
            )
        if self.pretrained is not None:
            model.load_state_dict(self.pretrained.state_dict())
            self.pretrained = None  # the module holds the weights now


def check_checkpoint_file(ckpt_path: str | None, stage: str | None = None) -> None:
    """Refuse a ``--ckpt_path`` file that is not a whole checkpoint, or (given ``stage``) one of another stage,
    before Lightning reads it: the archive's CRCs are checked first (nothing is unpickled), so a file truncated
    by a crash gets a message with the fix rather than a deep stack from the unpickler."""
    if not ckpt_path or ckpt_path in ("last", "best", "hpc", "registry") or not Path(ckpt_path).is_file():
        return
    damaged = archive_problem(ckpt_path)
    if damaged is not None:
        raise ConfigError(
            f"--ckpt_path {ckpt_path} is damaged ({damaged}); it was not read. It was probably cut off "
            "by a crash or a full disk while it was written: resume from another checkpoint of the "
            "run (ModelCheckpoint keeps its best, epoch=...-step=....ckpt, beside last.ckpt), or "
            "start again."
        )
    if stage is not None:
        kind = read_checkpoint(ckpt_path).kind
        if kind != stage:
            raise ConfigError(
                f"--ckpt_path {ckpt_path} is a checkpoint of the {kind.replace('_', ' ')} stage, not of the "
                f"{stage.replace('_', ' ')} stage: give one that `{stage.replace('_', '-')} fit` wrote (or, to "
                "start from another stage's models, --model.from_pretrained)."
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
    data_linked = (
        "vocab_size",
        "tokens_per_frame",
        "num_actions",
        "action_dim",
        "state_dim",
        "state_low",
        "state_high",
    )

    def add_arguments_to_parser(self, parser) -> None:
        super().add_arguments_to_parser(parser)
        self.link_to_data(parser, "model.config.context_steps")  # windows as long as the context


class AgentCLI(StageCLI):
    verbs = ("fit",)
    stage = "agent"
    kind = "actor_critic"
    data_linked = (
        "vocab_size",
        "tokens_per_frame",
        "num_actions",
        "action_dim",
        "action_low",
        "action_high",
        "state_dim",
        "state_low",
        "state_high",
    )

    def add_arguments_to_parser(self, parser) -> None:
        super().add_arguments_to_parser(parser)
        self.link_to_data(parser, "model.burn_in")  # burn-in windows are served whole from the token store

    def before_instantiate_classes(self) -> None:
        super().before_instantiate_classes()
        model = self.config[self.subcommand].model
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

    def after_instantiate_classes(self) -> None:
        super().after_instantiate_classes()
        module: ActorCriticModule = self.model
        if module.world_model is not None:  # rebuilt from a --ckpt_path's record of its models
            return
        world_model, tokenizer = module.hparams.world_model, module.hparams.tokenizer
        reads_frames = module.actor_critic.config.observation == "frames"
        if world_model is None or (tokenizer is None and reads_frames):
            raise ConfigError(
                "agent fit imagines with a trained world model and reads frames through its tokenizer: give both "
                "--model.world_model and --model.tokenizer (checkpoints, pretrained folders or Hub ids). A "
                "token-reading actor-critic may go without the tokenizer (then the store's encoding is not checked)."
            )
        tokenizer = load_model(tokenizer, "tokenizer") if tokenizer is not None else None
        module.attach(load_model(world_model, "world_model"), tokenizer, frozen=True)


def _run(cli_class: type[StageCLI], model_class, prog: str, argv: list[str]) -> StageCLI:
    """Run a stage as if ``prog argv`` had been typed, wherever it is called from.

    Data parallelism (``--trainer.strategy ddp --trainer.devices N``): Lightning starts ranks 1..N-1 by running
    ``python -m <__main__'s module> <sys.argv[1:]>`` again. While the stage runs, that is made
    ``python -m iris_wm.cli.stage_rank <argv>`` with the stage named in ``IRIS_WM_STAGE``, so the other ranks run
    this very stage even when it was called from the demo, the scaling harness or a test. Lightning's own
    distributed sampler stays off: :class:`~iris_wm.data.datamodule.ResumableRandomSampler` shards the training
    windows by rank itself, and every rank validates on the whole held-out set (the reduced metrics equal one
    process's).
    """
    import __main__

    saved = sys.argv, getattr(__main__, "__spec__", None), os.environ.get("IRIS_WM_STAGE")
    sys.argv = [prog, *argv]  # LightningCLI reads sys.argv
    __main__.__spec__ = importlib.util.find_spec("iris_wm.cli.stage_rank")
    os.environ["IRIS_WM_STAGE"] = prog.split()[-1]
    try:
        return cli_class(
            model_class,
            StoreDataModule,
            save_config_kwargs={"overwrite": True},
            trainer_defaults={"use_distributed_sampler": False},
        )
    finally:
        sys.argv, __main__.__spec__ = saved[0], saved[1]
        if saved[2] is None:
            os.environ.pop("IRIS_WM_STAGE", None)
        else:
            os.environ["IRIS_WM_STAGE"] = saved[2]


def run_tokenizer_cli(argv: list[str]) -> TokenizerCLI:
    return _run(TokenizerCLI, TokenizerModule, "iris-wm tokenizer", argv)


def run_world_model_cli(argv: list[str]) -> WorldModelCLI:
    return _run(WorldModelCLI, WorldModelModule, "iris-wm world-model", argv)


def run_agent_cli(argv: list[str]) -> AgentCLI:
    return _run(AgentCLI, ActorCriticModule, "iris-wm agent", argv)


RUNNERS = {"tokenizer": run_tokenizer_cli, "world-model": run_world_model_cli, "agent": run_agent_cli}
"""The stages by their command name."""
