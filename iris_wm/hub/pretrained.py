"""Sharing models and data the HuggingFace way: folders (or Hub repositories) of config, safetensors and card.

A model folder holds ``config.json`` (kind, the dataclass config, the format version, provenance),
``model.safetensors`` and ``README.md`` (a model card with YAML metadata). A whole agent is a folder with
``agent.json`` and one such folder per component (``tokenizer/``, ``world_model/``, ``actor_critic/``).
Loading never unpickles: weights are safetensors, configs JSON; a folder whose weights do not match its
config, a missing file or a newer format is refused with the reason.

Hub access goes through huggingface_hub (``HF_TOKEN`` for pushing, ``HF_HUB_OFFLINE=1`` to use only the
local cache). Its ``PyTorchModelHubMixin`` is not used: it loads with ``strict=False`` by default (missing
weights pass silently) and drops init arguments that are not plain JSON (huggingface_hub 2.4).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Literal

import torch

from iris_wm.agent.actor_critic import ActorCritic, ActorCriticConfig
from iris_wm.agent.bundle import COMPONENTS, Agent
from iris_wm.data.sizes import SizeMismatch
from iris_wm.hub.cards import CardInfo, write_card
from iris_wm.runtime.errors import IrisError
from iris_wm.runtime.files import write_atomic
from iris_wm.runtime.provenance import provenance
from iris_wm.runtime.schema import Schema, SchemaError, check, config_from_dict, read, read_json
from sequence_model.ensemble import EnsembleConfig, WorldModelEnsemble
from sequence_model.world_model import WorldModel, WorldModelConfig
from tokenizer.model import Tokenizer, TokenizerConfig

FORMAT = 1
CONFIG_FILE, WEIGHTS_FILE, AGENT_FILE = "config.json", "model.safetensors", "agent.json"
KINDS = {
    "tokenizer": (Tokenizer, TokenizerConfig),
    "world_model": (WorldModel, WorldModelConfig),
    "actor_critic": (ActorCritic, ActorCriticConfig),
    "world_model_ensemble": (WorldModelEnsemble, EnsembleConfig),
}
SERVES = {"world_model": ("world_model", "world_model_ensemble")}
"""Kinds a folder may hold where a kind is asked for: an ensemble imagines wherever a world model does."""


class ConfigFile(Schema):
    """``config.json`` of a pretrained folder."""

    iris_wm_format: int
    kind: str
    config: dict
    parameters: int
    provenance: dict


class AgentFile(Schema):
    """``agent.json`` of a whole-agent folder."""

    iris_wm_format: int
    kind: Literal["agent"]
    components: list[str]
    provenance: dict


class PretrainedError(IrisError, ValueError):
    """A folder or repository that cannot be loaded as it is; the message says why and what to do."""


def kind_of(model: torch.nn.Module) -> str:
    for kind, (cls, _) in KINDS.items():
        if isinstance(model, cls):
            return kind
    raise TypeError(
        f"save_pretrained takes a Tokenizer, WorldModel, WorldModelEnsemble or ActorCritic, not {type(model).__name__}."
    )


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
        "config": asdict(getattr(model, "saved_config", model.config)),
        "parameters": sum(t.numel() for t in state.values()),
        "provenance": {**provenance(), "inputs": inputs or {}},
    }
    write_atomic(folder / CONFIG_FILE, (json.dumps(config, indent=1) + "\n").encode())
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
    try:
        model = model_class(config_from_dict(config_class, config["config"], str(folder / CONFIG_FILE)))
    except SchemaError as error:
        raise PretrainedError(f"{error} Save or download the folder again.") from error
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
    fix = "Save or download the folder again."
    try:
        config = read_json(path, "model config", fix)
        version = config.get("iris_wm_format") if isinstance(config, dict) else None
        if version == FORMAT:
            check(config, ConfigFile, path, "model config", fix)
    except SchemaError as error:
        raise PretrainedError(str(error)) from error
    if version != FORMAT:
        raise PretrainedError(
            f"{path} has format version {version}; this iris-wm reads version {FORMAT}. "
            "Upgrade iris-wm (or save the model again with this version)."
        )
    if config.get("kind") not in KINDS:
        raise PretrainedError(f"{path} names an unknown kind {config.get('kind')!r}; expected one of {list(KINDS)}.")
    if kind is not None and config["kind"] not in SERVES.get(kind, (kind,)):
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
def save_agent(folder: str | Path, agent: Agent, card: CardInfo | None = None, inputs: dict | None = None) -> Path:
    """Write a whole agent: one folder per component plus ``agent.json`` and a card."""
    folder = Path(folder)
    missing = [name for name in COMPONENTS if getattr(agent, name) is None]
    if missing:
        raise PretrainedError(f"A whole agent needs all three components; this one has no {', '.join(missing)}.")
    for name, model in agent.components.items():
        save_pretrained(model, folder / name, card, inputs)
    description = {
        "iris_wm_format": FORMAT,
        "kind": "agent",
        "components": list(COMPONENTS),
        "provenance": {**provenance(), "inputs": inputs or {}},
    }
    write_atomic(folder / AGENT_FILE, (json.dumps(description, indent=1) + "\n").encode())
    write_card(folder, "agent", description, card or CardInfo())
    return folder


def agent_from_folder(folder: Path, map_location: str = "cpu") -> Agent:
    """The :class:`~iris_wm.agent.bundle.Agent` in a local folder written by :func:`save_agent`."""
    if not (folder / AGENT_FILE).is_file():
        raise PretrainedError(f"{folder} has no {AGENT_FILE}: it is not a whole agent saved with save_agent.")
    try:
        described = read(folder / AGENT_FILE, AgentFile, "agent description", "Save or download the agent again.")
    except SchemaError as error:
        raise PretrainedError(str(error)) from error
    if described.iris_wm_format != FORMAT or sorted(described.components) != sorted(COMPONENTS):
        raise PretrainedError(
            f"{folder / AGENT_FILE} describes format {described.iris_wm_format} with components {described.components};"
            f" this iris-wm reads format {FORMAT} with {list(COMPONENTS)}. Upgrade iris-wm, or save the agent again."
        )
    models = {name: from_pretrained(folder / name, name, map_location=map_location) for name in COMPONENTS}
    try:
        return Agent(**models)
    except SizeMismatch as error:
        raise PretrainedError(f"The components in {folder} do not fit together: {error}") from error


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


def check_push(repo_id: str, token: str | None = None) -> str:
    """Before any work is done for a push: ``repo_id`` must be a valid Hub id and a token must be at hand
    (``token``, else ``HF_TOKEN`` or the stored login). Returns the token."""
    from huggingface_hub import get_token
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise PretrainedError(
            f"{repo_id!r} is not a Hub repository id: use owner/name (letters, digits, '-', '_', '.'; at most 96 "
            "characters)."
        ) from None
    token = token or get_token()
    if not token:
        raise PretrainedError(
            f"No Hugging Face token to push {repo_id} with: set HF_TOKEN or log in (`hf auth login`); nothing was "
            "exported or uploaded."
        )
    return token


def push_to_hub(
    folder: str | Path,
    repo_id: str,
    token: str | None = None,
    private: bool = False,
    repo_type: str = "model",
    commit_message: str | None = None,
) -> str:
    """Create the repository if needed and upload ``folder`` as one commit; returns the commit URL. The token
    comes from ``token``, else ``HF_TOKEN`` or the stored login. A network failure or a refusal by the Hub is one
    :class:`PretrainedError` (the folder is left as it is)."""
    from huggingface_hub import HfApi

    folder = Path(folder)
    if not folder.is_dir():
        raise PretrainedError(f"{folder} is not a folder: save the model first (save_pretrained / save_agent).")
    api = HfApi(token=check_push(repo_id, token))
    try:
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
        info = api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            repo_type=repo_type,
            commit_message=commit_message or f"Upload {folder.name} with iris-wm",
        )
    except Exception as error:  # the network boundary: any failure there is the same to the user
        reason = (str(error).strip().splitlines() or [""])[0][:300]
        raise PretrainedError(
            f"Uploading {folder} to the Hub repository {repo_id} failed ({type(error).__name__}: {reason}). Check "
            "the network, the token's write access and the id; the folder is kept, so push it again."
        ) from error
    return str(info.commit_url if hasattr(info, "commit_url") else info)
