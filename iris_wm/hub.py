"""Sharing models and data the HuggingFace way: folders (or Hub repositories) of config, safetensors and card.

A model folder holds ``config.json`` (kind, the dataclass config, the format version, provenance),
``model.safetensors`` and ``README.md`` (a model card with YAML metadata). A whole agent is a folder with
``agent.json`` and one such folder per component (``tokenizer/``, ``world_model/``, ``actor_critic/``).
Loading never unpickles: weights are safetensors, configs JSON; a folder whose weights do not match its
config, a missing file or a newer format is refused with the reason.

Hub access goes through huggingface_hub (``HF_TOKEN`` for pushing, ``HF_HUB_OFFLINE=1`` to use only the
local cache). Its ``PyTorchModelHubMixin`` is not used: it loads with ``strict=False`` by default (missing
weights pass silently) and drops init arguments that are not plain JSON (NOTES.md).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from iris_wm.agent.actor_critic import ActorCritic, ActorCriticConfig
from iris_wm.provenance import provenance
from sequence_model.world_model import WorldModel, WorldModelConfig
from tokenizer.model import Tokenizer, TokenizerConfig

FORMAT = 1
CONFIG_FILE, WEIGHTS_FILE, CARD_FILE, AGENT_FILE = "config.json", "model.safetensors", "README.md", "agent.json"
KINDS = {
    "tokenizer": (Tokenizer, TokenizerConfig),
    "world_model": (WorldModel, WorldModelConfig),
    "actor_critic": (ActorCritic, ActorCriticConfig),
}
COMPONENTS = tuple(KINDS)


class PretrainedError(ValueError):
    """A folder or repository that cannot be loaded as it is; the message says why and what to do."""


@dataclass
class CardInfo:
    """What the model card says beyond the config."""

    environment: str | None = None
    """The game, e.g. ``ALE/Breakout-v5``."""
    dataset: str | None = None
    """Hub id (or local path) of the data it was trained on."""
    training_config: dict = field(default_factory=dict)
    """The resolved training configuration."""
    metrics: dict[str, float] = field(default_factory=dict)
    """Evaluation figures, by name."""
    command: str | None = None
    """The command that reproduces the figures."""
    tags: list[str] = field(default_factory=list)


def kind_of(model: torch.nn.Module) -> str:
    for kind, (cls, _) in KINDS.items():
        if isinstance(model, cls):
            return kind
    raise TypeError(f"save_pretrained takes a Tokenizer, WorldModel or ActorCritic, not {type(model).__name__}.")


# ---------------------------------------------------------------------------------------------- one model
def save_pretrained(
    model: torch.nn.Module, folder: str | Path, card: CardInfo | None = None, inputs: dict | None = None
) -> Path:
    """Write ``model`` to ``folder`` as config.json + model.safetensors + README.md. ``inputs`` names the
    manifests it was trained from (recorded in the provenance)."""
    from safetensors.torch import save_file

    kind, folder = kind_of(model), Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, folder / WEIGHTS_FILE, metadata={"format": "pt", "iris_wm_kind": kind})
    config = {
        "iris_wm_format": FORMAT,
        "kind": kind,
        "config": asdict(model.config),
        "parameters": sum(t.numel() for t in state.values()),
        "provenance": {**provenance(), "inputs": inputs or {}},
    }
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=1) + "\n")
    write_card(folder, kind, config, card or CardInfo())
    return folder


def from_pretrained(
    source: str | Path, kind: str | None = None, revision: str | None = None, map_location: str = "cpu"
) -> torch.nn.Module:
    """Load a model from a local folder or a Hub repository id (``owner/name``)."""
    from safetensors.torch import load_file

    folder = resolve(source, revision, "model")
    config = read_config(folder, kind)
    model_class, config_class = KINDS[config["kind"]]
    model = model_class(config_class(**config["config"]))
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise PretrainedError(
            f"{folder} has {CONFIG_FILE} but no {WEIGHTS_FILE}: the folder is incomplete; save or download it again."
        )
    try:
        state = load_file(weights, device=map_location)
    except Exception as error:  # safetensors raises its own error type for damaged headers
        raise PretrainedError(
            f"{weights} cannot be read as safetensors ({error}): the file is damaged; download or save it again."
        ) from error
    _check_weights(folder, model.state_dict(), state)
    model.load_state_dict(state, strict=True)
    return model.to(map_location).eval()


def read_config(folder: Path, kind: str | None = None) -> dict:
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise PretrainedError(
            f"{folder} has no {CONFIG_FILE}: it is not a model saved with save_pretrained "
            "(for a whole agent, load it with load_agent)."
        )
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise PretrainedError(f"{path} is not valid JSON ({error}); save the model again.") from error
    version = config.get("iris_wm_format")
    if version != FORMAT:
        raise PretrainedError(
            f"{path} has format version {version}; this iris-wm reads version {FORMAT}. "
            "Upgrade iris-wm (or save the model again with this version)."
        )
    if config.get("kind") not in KINDS:
        raise PretrainedError(f"{path} names an unknown kind {config.get('kind')!r}; expected one of {list(KINDS)}.")
    if kind is not None and config["kind"] != kind:
        raise PretrainedError(f"{folder} holds a {config['kind']}, not a {kind}.")
    return config


def _check_weights(folder: Path, expected: dict, state: dict) -> None:
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    shapes = [
        f"{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        details = "; ".join(
            part
            for part in (
                f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}" if missing else "",
                f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}" if unexpected else "",
                f"shapes differ ({', '.join(shapes[:3])})" if shapes else "",
            )
            if part
        )
        raise PretrainedError(
            f"The weights in {folder / WEIGHTS_FILE} do not match its {CONFIG_FILE}: {details}. "
            "The folder mixes files of different models; save it again with save_pretrained."
        )


# ---------------------------------------------------------------------------------------------- whole agent
def save_agent(
    folder: str | Path,
    tokenizer: Tokenizer,
    world_model: WorldModel,
    actor_critic: ActorCritic,
    card: CardInfo | None = None,
    inputs: dict | None = None,
) -> Path:
    """Write a whole agent: one folder per component plus ``agent.json`` and a card."""
    folder = Path(folder)
    for name, model in zip(COMPONENTS, (tokenizer, world_model, actor_critic), strict=True):
        save_pretrained(model, folder / name, card, inputs)
    description = {
        "iris_wm_format": FORMAT,
        "kind": "agent",
        "components": list(COMPONENTS),
        "provenance": {**provenance(), "inputs": inputs or {}},
    }
    (folder / AGENT_FILE).write_text(json.dumps(description, indent=1) + "\n")
    write_card(folder, "agent", description, card or CardInfo())
    return folder


def load_agent(source: str | Path, revision: str | None = None, map_location: str = "cpu"):
    """``(tokenizer, world_model, actor_critic)`` from an agent folder or Hub repository."""
    folder = resolve(source, revision, "model")
    if not (folder / AGENT_FILE).is_file():
        raise PretrainedError(f"{folder} has no {AGENT_FILE}: it is not a whole agent saved with save_agent.")
    tok, wm, ac = (from_pretrained(folder / name, name, map_location=map_location) for name in COMPONENTS)
    w = wm.config
    if (tok.vocab_size, tok.tokens_per_frame) != (
        w.vocab_size,
        w.tokens_per_frame,
    ) or ac.config.num_actions != w.num_actions:
        raise PretrainedError(
            f"The components in {folder} do not fit together (tokenizer {tok.tokens_per_frame} x "
            f"{tok.vocab_size}, world model {w.tokens_per_frame} x {w.vocab_size} with "
            f"{w.num_actions} actions, actor-critic {ac.config.num_actions} actions)."
        )
    return tok, wm, ac


# ---------------------------------------------------------------------------------------------- the Hub
def resolve(source: str | Path, revision: str | None, repo_type: str) -> Path:
    """A local folder as it is, otherwise a Hub repository id downloaded (or found in the cache)."""
    path = Path(source)
    if path.exists():
        if not path.is_dir():
            raise PretrainedError(f"{path} is a file; give the folder save_pretrained wrote (or a Hub repository id).")
        return path
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    if str(source).count("/") != 1 or str(source).startswith((".", "/")):
        raise PretrainedError(f"{source} is neither a local folder nor a Hub repository id of the form owner/name.")
    try:
        return Path(snapshot_download(repo_id=str(source), revision=revision, repo_type=repo_type))
    except RepositoryNotFoundError as error:
        raise PretrainedError(
            f"No {repo_type} repository {source} on the Hub (or it is private: set HF_TOKEN)."
        ) from error
    except LocalEntryNotFoundError as error:
        raise PretrainedError(
            f"{source} is not in the local cache and the Hub cannot be reached (offline, or "
            "HF_HUB_OFFLINE=1). Download it once online, or give a local folder."
        ) from error
    except HfHubHTTPError as error:
        raise PretrainedError(f"Downloading {source} failed: {error}") from error


def push_to_hub(
    folder: str | Path,
    repo_id: str,
    token: str | None = None,
    private: bool = False,
    repo_type: str = "model",
    commit_message: str | None = None,
) -> str:
    """Create the repository if needed and upload ``folder`` as one commit; returns the commit URL. The token
    comes from ``token``, else ``HF_TOKEN`` or the stored login."""
    from huggingface_hub import HfApi

    folder = Path(folder)
    if not folder.is_dir():
        raise PretrainedError(f"{folder} is not a folder: save the model first (save_pretrained / save_agent).")
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
    info = api.upload_folder(
        folder_path=str(folder),
        repo_id=repo_id,
        repo_type=repo_type,
        commit_message=commit_message or f"Upload {folder.name} with iris-wm",
    )
    return str(info.commit_url if hasattr(info, "commit_url") else info)


# ---------------------------------------------------------------------------------------------- cards
def write_card(folder: Path, kind: str, config: dict, card: CardInfo) -> Path:
    """README.md with YAML metadata (library, tags, dataset, metrics) and a body a reader can act on."""
    from huggingface_hub import ModelCard, ModelCardData

    data = ModelCardData(
        library_name="iris-wm",
        tags=["world-model", "iris", "reinforcement-learning", kind.replace("_", "-"), *card.tags],
        datasets=[card.dataset] if card.dataset and "/" in card.dataset else None,
        metrics=sorted(card.metrics) or None,
        environment=card.environment,
        training_config=card.training_config or None,
    )
    title = {"agent": "agent (tokenizer, world model, actor-critic)"}.get(kind, kind.replace("_", " "))
    lines = [
        f"# iris-wm {title}",
        "",
        "A component of an IRIS-style tokenized world model (Micheli et al. 2023), trained with iris-wm. Load it with:",
        "",
        "```python",
        "from iris_wm.hub import " + ("load_agent" if kind == "agent" else "from_pretrained"),
        f'model = {"load_agent" if kind == "agent" else "from_pretrained"}("<this repository or folder>")',
        "```",
        "",
    ]
    if card.environment:
        lines += [f"Environment: `{card.environment}`.", ""]
    if card.dataset:
        lines += [f"Training data: `{card.dataset}`.", ""]
    if card.metrics:
        lines += ["## Evaluation", "", "| figure | value |", "| --- | --- |"]
        lines += [f"| {name} | {value:.4g} |" for name, value in card.metrics.items()]
        lines.append("")
    if card.command:
        lines += ["## Reproduce", "", "```bash", card.command, "```", ""]
    if "parameters" in config:
        lines += [f"Parameters: {config['parameters']:,}.", ""]
    lines += ["## Provenance", "", "```json", json.dumps(config.get("provenance", {}), indent=1), "```", ""]
    path = folder / CARD_FILE
    ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines)).save(path)
    return path


# ---------------------------------------------------------------------------------------------- checkpoints
STAGES = {
    "agent": "`iris-wm agent fit`",
    "world_model": "`iris-wm world-model fit`",
    "tokenizer": "`iris-wm tokenizer fit`",
}


def is_checkpoint_path(source: str | Path) -> bool:
    """Whether ``source`` names a Lightning ``.ckpt`` (a file, or a missing ``.ckpt``, refused with its path)
    rather than a pretrained folder or a Hub repository id."""
    path = Path(source)
    return path.is_file() or (path.suffix == ".ckpt" and not path.is_dir())


def load_stage_checkpoint(checkpoint: str | Path, map_location: str = "cpu"):
    """``(stage, module)``: the Lightning module of a ``.ckpt`` written by `iris-wm tokenizer|world-model|agent
    fit`, read with ``weights_only=True`` (a damaged file or a pickle payload is refused, and nothing in it runs)."""
    stage, module, _ = _read_stage_checkpoint(checkpoint, map_location)
    return stage, module


def _read_stage_checkpoint(checkpoint: str | Path, map_location: str = "cpu"):
    """``(stage, module, saved)``, ``saved`` being the checkpoint's dictionary (read once from disk)."""
    import io
    import pickle
    import zipfile

    import iris_wm.training  # noqa: F401  (registers the config classes as safe to load)
    from iris_wm.agent.module import ActorCriticModule
    from sequence_model.module import WorldModelModule
    from tokenizer.module import TokenizerModule

    path = Path(checkpoint)
    if not path.is_file():
        raise PretrainedError(
            f"No checkpoint at {path}: give the .ckpt a stage wrote "
            "(e.g. .../checkpoints/last.ckpt), a pretrained folder, or a Hub repository id."
        )
    try:
        payload = path.read_bytes()
        saved = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
        hparams = saved.get("hyper_parameters", {})
        if "objective" in hparams:
            stage, module_class = "agent", ActorCriticModule
        elif "weight_decay" in hparams:
            stage, module_class = "world_model", WorldModelModule
        elif "l1_weight" in hparams:
            stage, module_class = "tokenizer", TokenizerModule
        else:
            raise PretrainedError(f"{path} is not a checkpoint of `iris-wm tokenizer|world-model|agent fit`.")
        module = module_class.load_from_checkpoint(io.BytesIO(payload), map_location=map_location, weights_only=True)
        return stage, module, saved
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, KeyError, AttributeError) as error:
        raise PretrainedError(
            f"{path} cannot be read as a checkpoint ({type(error).__name__}: {error}). It is "
            "damaged (e.g. truncated by a crash while it was written) or not a checkpoint of "
            "iris-wm; it was read with weights_only=True, so nothing in it ran. Use another "
            "checkpoint (ModelCheckpoint keeps its best, epoch=...-step=....ckpt, beside "
            "last.ckpt)."
        ) from error


def load_model(source: str | Path, kind: str, revision: str | None = None, map_location: str = "cpu"):
    """The ``kind`` model (``tokenizer``, ``world_model`` or ``actor_critic``) from whichever a user has: a
    ``.ckpt`` of a stage that holds it, a folder written by save_pretrained, a whole-agent folder (its
    component), or a Hub repository id of either folder. Returned in eval mode."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {list(KINDS)}, not {kind!r}.")
    path = Path(source)
    if is_checkpoint_path(path):
        stage, module = load_stage_checkpoint(path, map_location)
        model = getattr(module, kind, None)
        if model is None:
            raise PretrainedError(f"{path} is a checkpoint of {STAGES[stage]}; it holds no {kind.replace('_', ' ')}.")
        return model.eval()
    folder = resolve(source, revision, "model")
    if (folder / AGENT_FILE).is_file():
        folder = folder / kind
    return from_pretrained(folder, kind, map_location=map_location)


def export_checkpoint(checkpoint: str | Path, folder: str | Path, card: CardInfo | None = None) -> tuple[str, Path]:
    """Turn a Lightning checkpoint of a stage (tokenizer, world model or agent fit) into a pretrained folder.
    Returns ``(kind, folder)``; the checkpoint is read with ``weights_only=True``. The card's training config
    defaults to the checkpoint's hyperparameters (model and data), and the provenance names the checkpoint
    and the manifest of the store it was trained on."""
    import dataclasses
    import hashlib

    stage, module, saved = _read_stage_checkpoint(checkpoint)
    data = {k: v for k, v in (saved.get("datamodule_hyper_parameters") or {}).items() if not k.startswith("_")}
    inputs = {"checkpoint": str(Path(checkpoint).resolve())}
    manifest = Path(str(data.get("root", ""))) / "manifest.json"
    if data.get("root") and manifest.is_file():
        inputs["data"] = {
            "store": str(manifest.parent.resolve()),
            "manifest_sha256": hashlib.sha256(manifest.read_bytes()).hexdigest(),
        }
    card = dataclasses.replace(card or CardInfo())
    if not card.training_config:
        model = {k: v for k, v in module.hparams.items() if not k.startswith("_")}
        card.training_config = _plain_json({"stage": stage, "model": model, "data": data})
    if stage == "agent":
        return stage, save_agent(folder, module.tokenizer, module.world_model, module.actor_critic, card, inputs)
    return stage, save_pretrained(getattr(module, stage), folder, card, inputs)


def _plain_json(value):
    """Dataclasses, tuples and paths as JSON-ready values (for the card's YAML and config.json)."""
    from dataclasses import asdict, is_dataclass

    if is_dataclass(value):
        return _plain_json(asdict(value))
    if isinstance(value, dict):
        return {str(k): _plain_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_json(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
