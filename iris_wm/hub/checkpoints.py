"""Stage checkpoints -> models, and the one way to load a model or an agent from whatever a user has.

Every checkpoint a stage writes (`tokenizer|world-model|agent fit`) carries a record of what it is, written by
``iris_wm.train.callbacks.ModelRecord`` beside Lightning's own entries::

    checkpoint["iris_wm"] = {"format": 1, "kind": "agent", "models": {"tokenizer": {...config...}, ...}}

with each model's weights under its name in the ``state_dict`` (``tokenizer.``, ``world_model.``,
``actor_critic.``). Loading reads that record and builds the plain models from their configs: no Lightning
module, no training code, nothing unpickled (``torch.load(weights_only=True)``, after the archive's CRCs have been
checked). Checkpoints written before the record existed (iris-wm 0.1) are read from the same names: the kind
from the ``state_dict``'s prefixes, the configs from the hyperparameters those versions saved.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from iris_wm.agent.actor_critic import ActorCriticConfig
from iris_wm.agent.bundle import COMPONENTS, Agent
from iris_wm.agent.objective import AgentObjective
from iris_wm.data.sizes import SizeMismatch
from iris_wm.envs.imagination import ImaginationConfig
from iris_wm.hub.cards import CardInfo
from iris_wm.hub.pretrained import (
    AGENT_FILE,
    CONFIG_FILE,
    KINDS,
    PretrainedError,
    agent_from_folder,
    from_pretrained,
    resolve,
    save_agent,
    save_pretrained,
)
from iris_wm.runtime.files import OutputExists, archive_problem, complete_or_absent, plain_json, require_new_output
from iris_wm.runtime.schema import Schema, SchemaError, check, config_from_dict
from sequence_model.gpt import GPTConfig
from sequence_model.world_model import WorldModelConfig
from tokenizer.model import TokenizerConfig
from tokenizer.quantizer import QuantizerConfig

RECORD_KEY, RECORD_FORMAT = "iris_wm", 1
STAGE_MODELS = {"tokenizer": ("tokenizer",), "world_model": ("world_model",), "agent": COMPONENTS}
"""The models each stage's checkpoint holds."""
# The dataclasses that hyperparameters of iris-wm 0.1 checkpoints pickled (current ones hold plain values).
LEGACY_CLASSES = [
    TokenizerConfig,
    QuantizerConfig,
    WorldModelConfig,
    GPTConfig,
    ActorCriticConfig,
    AgentObjective,
    ImaginationConfig,
]
# Registered for good, not with torch's safe_globals context manager: on exit it removes what it was given,
# also the classes their own modules had registered, and Lightning's loading of an agent checkpoint then fails.
torch.serialization.add_safe_globals(LEGACY_CLASSES)


class Record(Schema):
    """What a stage's checkpoint records of itself (``checkpoint["iris_wm"]``)."""

    format: Literal[1]
    kind: Literal["tokenizer", "world_model", "agent"]
    models: dict[Literal["tokenizer", "world_model", "actor_critic"], dict]


@dataclass
class StageCheckpoint:
    """A stage's checkpoint, read: its kind, its models (eval mode), and the checkpoint's dictionary."""

    kind: str
    models: dict[str, torch.nn.Module]
    saved: dict

    def agent(self) -> Agent:
        return Agent(**self.models)


def is_checkpoint_path(source: str | Path) -> bool:
    """Whether ``source`` names a Lightning ``.ckpt`` (a file, or a missing ``.ckpt``, refused with its path)
    rather than a pretrained folder or a Hub repository id."""
    path = Path(source)
    return path.is_file() or (path.suffix == ".ckpt" and not path.is_dir())


def read_checkpoint(path: str | Path, map_location: str = "cpu") -> StageCheckpoint:
    """Read a stage's ``.ckpt``: checked whole, loaded with ``weights_only=True``, its models built from its
    record and filled with exactly its weights."""
    path = Path(path)
    if not path.is_file():
        raise PretrainedError(
            f"No checkpoint at {path}: give the .ckpt a stage wrote (e.g. .../checkpoints/last.ckpt), a "
            "pretrained folder, or a Hub repository id."
        )
    damaged = archive_problem(path)
    advice = (
        "it was not unpickled, so nothing in it ran. Use another checkpoint of the run (ModelCheckpoint keeps its "
        "best, epoch=...-step=....ckpt, beside last.ckpt)"
    )
    if damaged:
        raise PretrainedError(
            f"{path} cannot be read as a checkpoint: it is damaged ({damaged}), e.g. cut off by a crash or a full "
            f"disk while it was written; {advice}."
        )
    try:
        saved = torch.load(io.BytesIO(path.read_bytes()), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
        raise PretrainedError(
            f"{path} cannot be read as a checkpoint ({type(error).__name__}: {error}); it is not a checkpoint of "
            f"iris-wm: {advice}."
        ) from error
    record = saved.get(RECORD_KEY) if isinstance(saved, dict) else None
    if record is not None:
        try:
            record = check(record, Record, path, "checkpoint record", "Use another checkpoint of the run.")
        except SchemaError as error:
            raise PretrainedError(str(error)) from error
    kind, configs = (record.kind, record.models) if record else _legacy_record(path, saved)
    if not isinstance(saved.get("state_dict"), dict):
        raise PretrainedError(f"{path} has no state_dict: it is not a checkpoint of a stage. Use another checkpoint.")
    models = {name: _build(path, name, config, saved["state_dict"], map_location) for name, config in configs.items()}
    return StageCheckpoint(kind, models, saved)


def _legacy_record(path: Path, saved) -> tuple[str, dict]:
    """The record of an iris-wm 0.1 checkpoint, which had none: the kind from the weights' names, the configs
    from the hyperparameters that version saved."""
    state = saved.get("state_dict") if isinstance(saved, dict) else None
    hparams = saved.get("hyper_parameters", {}) if isinstance(saved, dict) else {}
    names = {key.split(".", 1)[0] for key in state or {}}
    kind = "agent" if "actor_critic" in names else "world_model" if "world_model" in names else "tokenizer"
    configs = {kind: hparams.get("config")}
    if kind == "agent":
        configs = {
            "tokenizer": hparams.get("tokenizer_config"),
            "world_model": hparams.get("world_model_config"),
            "actor_critic": hparams.get("config"),
        }
    if kind not in names or any(config is None for config in configs.values()):
        raise PretrainedError(
            f"{path} is not a checkpoint of a tokenizer, world-model or agent stage (it holds no record of its "
            "models, and no weights and configs of one). Give a checkpoint one of those stages wrote."
        )
    return kind, {name: plain_json(config) for name, config in configs.items()}


def _build(path: Path, name: str, config: dict, state_dict: dict, map_location: str) -> torch.nn.Module:
    model_class, config_class = KINDS[name]
    try:
        model = model_class(config_from_dict(config_class, config, f"{path} ({name.replace('_', ' ')})"))
    except SchemaError as error:
        raise PretrainedError(f"{error} The checkpoint's record was changed after it was written.") from error
    prefix = f"{name}."
    state = {key[len(prefix) :]: value for key, value in state_dict.items() if key.startswith(prefix)}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise PretrainedError(
            f"The {name.replace('_', ' ')} weights in {path} do not match the config it records ({error}); the "
            "checkpoint was changed after it was written. Use another checkpoint of the run."
        ) from error
    return model.to(map_location).eval()


def load_model(source: str | Path, kind: str, revision: str | None = None, map_location: str = "cpu"):
    """The ``kind`` model (``tokenizer``, ``world_model`` or ``actor_critic``) from whichever a user has: a
    ``.ckpt`` of a stage that holds it, a folder written by save_pretrained, a whole-agent folder (its
    component), or a Hub repository id of either folder. Returned in eval mode."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {list(KINDS)}, not {kind!r}.")
    if is_checkpoint_path(source):
        checkpoint = read_checkpoint(source, map_location)
        if kind not in checkpoint.models:
            raise PretrainedError(
                f"{source} is a checkpoint of the {checkpoint.kind.replace('_', ' ')} stage; it holds no "
                f"{kind.replace('_', ' ')}."
            )
        return checkpoint.models[kind]
    folder = resolve(source, revision, "model")
    if (folder / AGENT_FILE).is_file():
        folder = folder / kind
    return from_pretrained(folder, kind, map_location=map_location)


def load_agent(source: str | Path, revision: str | None = None, map_location: str = "cpu") -> Agent:
    """The whole :class:`~iris_wm.agent.bundle.Agent` of an agent stage's ``.ckpt``, an agent folder written by
    :func:`~iris_wm.hub.pretrained.save_agent`, or a Hub repository id of one. Returned in eval mode."""
    if not is_checkpoint_path(source):
        return agent_from_folder(resolve(source, revision, "model"), map_location)
    checkpoint = read_checkpoint(source, map_location)
    if checkpoint.kind != "agent":
        raise PretrainedError(
            f"{source} is a checkpoint of the {checkpoint.kind.replace('_', ' ')} stage, not of the agent stage: "
            "give an agent's checkpoint or an agent folder."
        )
    try:
        return checkpoint.agent()
    except SizeMismatch as error:
        raise PretrainedError(f"The models in {source} do not fit together: {error}") from error


def export_checkpoint(
    checkpoint: str | Path, folder: str | Path, card: CardInfo | None = None, overwrite: bool = False
) -> tuple[str, Path]:
    """Turn a stage's checkpoint (tokenizer, world model or agent fit) into a pretrained folder. Returns
    ``(kind, folder)``. The card's training config defaults to the checkpoint's hyperparameters (model and
    data), and the provenance names the checkpoint and the manifest of the store it was trained on.

    ``folder`` must be new (or empty); ``overwrite`` replaces an earlier export there, and nothing else. The folder
    is written whole or not at all."""
    check_export_folder(folder, overwrite)
    read = read_checkpoint(checkpoint)
    saved = read.saved
    data = {k: v for k, v in (saved.get("datamodule_hyper_parameters") or {}).items() if not k.startswith("_")}
    inputs = {"checkpoint": str(Path(checkpoint).resolve())}
    manifest = Path(str(data.get("root", ""))) / "manifest.json"
    if data.get("root") and manifest.is_file():
        inputs["data"] = {
            "store": str(manifest.parent.resolve()),
            "manifest_sha256": hashlib.sha256(manifest.read_bytes()).hexdigest(),
        }
    synthetic = Path(str(data.get("synthetic_root", ""))) / "manifest.json"
    if data.get("synthetic_root") and synthetic.is_file():
        block = json.loads(synthetic.read_text())["settings"].get("synthetic") or {}
        inputs["synthetic"] = {
            "store": str(synthetic.parent.resolve()),
            "manifest_sha256": hashlib.sha256(synthetic.read_bytes()).hexdigest(),
            "fraction": data.get("synthetic_fraction"),
            **{k: v for k, v in block.items() if k != "start_rows"},
        }
    card = dataclasses.replace(card or CardInfo())
    if "synthetic" in inputs:
        card.tags = [*card.tags, "synthetic-data"]
    if not card.training_config:
        model = {k: v for k, v in (saved.get("hyper_parameters") or {}).items() if not k.startswith("_")}
        card.training_config = plain_json({"stage": read.kind, "model": model, "data": data})
    with complete_or_absent(folder, "pretrained folder", overwrite) as partial:
        if read.kind == "agent":
            save_agent(partial, read.agent(), card, inputs)
        else:
            save_pretrained(read.models[read.kind], partial, card, inputs)
    return read.kind, Path(folder)


def _is_export(folder: Path) -> bool:
    """Whether ``folder`` holds an earlier iris-wm export: a ``config.json`` or ``agent.json`` with its format."""
    for name in (CONFIG_FILE, AGENT_FILE):
        try:
            data = json.loads((folder / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and "iris_wm_format" in data:
            return True
    return False


def check_export_folder(folder: str | Path, overwrite: bool) -> None:
    """Refuse, before any work, an export into a folder that holds anything but an earlier export."""
    folder = Path(folder)
    if folder.is_dir() and any(folder.iterdir()):
        if (folder / "manifest.json").exists():
            raise OutputExists(f"{folder} holds a store; export the model into a folder of its own.")
        if not overwrite:
            raise OutputExists(
                f"{folder} already exists and is not empty; choose a new folder for the export, or replace an "
                "earlier export there (overwrite).",
                "overwrite",
            )
        if not _is_export(folder):
            raise OutputExists(
                f"{folder} holds files that are not an iris-wm export (no {CONFIG_FILE} or {AGENT_FILE} written by "
                "iris-wm); overwrite replaces earlier exports only, so nothing was changed. Choose a new folder."
            )
    require_new_output(folder, "pretrained folder", overwrite=True)


def save_ensemble(members: list[str | Path], folder: str | Path, card: CardInfo | None = None) -> Path:
    """Load the world models ``members`` (from whatever each is: checkpoint, folder, Hub id; the same configuration,
    trained with different seeds) and save them as one pretrained folder of kind ``world_model_ensemble``, which
    :func:`load_model` returns wherever a world model is asked for."""
    from sequence_model.ensemble import WorldModelEnsemble

    models = [load_model(member, "world_model") for member in members]
    if any(hasattr(model, "members") for model in models):
        raise PretrainedError("Ensemble members must be single world models, not ensembles: list their members.")
    digests = {i: training_tokenizer(member) for i, member in enumerate(members)}
    known = {i: digest for i, digest in digests.items() if digest is not None}
    if len(set(known.values())) > 1:
        first = min(known)
        other = next(i for i, digest in known.items() if digest != known[first])
        raise PretrainedError(
            f"Ensemble members {first} ({members[first]}) and {other} ({members[other]}) were trained on tokens of "
            f"different tokenizers (digests {known[first][:12]}... and {known[other][:12]}...): the same token id "
            "means another code to each. Train every member on one token store, encoded by one tokenizer."
        )
    sources = {f"member_{i}": str(member) for i, member in enumerate(members)}
    if known:
        sources["tokenizer_digest"] = next(iter(known.values()))
    return save_pretrained(WorldModelEnsemble(models), folder, card, inputs=sources)


def training_tokenizer(source: str | Path) -> str | None:
    """The digest of the tokenizer that encoded the token store a world model was trained on, from that store's
    manifest: found through a stage checkpoint's data root or a pretrained folder's provenance. ``None`` where the
    store is not at hand (moved, or a Hub id) or predates the digest."""
    path, root = Path(str(source)), None
    try:
        if is_checkpoint_path(path):
            root = (read_checkpoint(path).saved.get("datamodule_hyper_parameters") or {}).get("root")
        elif (path / CONFIG_FILE).is_file():
            root = json.loads((path / CONFIG_FILE).read_text())["provenance"]["inputs"]["data"]["store"]
    except (KeyError, TypeError, ValueError):
        return None
    manifest = Path(str(root)) / "manifest.json" if root else None
    if manifest is None or not manifest.is_file():
        return None
    try:
        return json.loads(manifest.read_text())["settings"].get("tokenizer_digest")
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
