"""A store's manifest: written new, read back checked, and compared with what an append would bring.

Format version 2 (written now) names the ``action_space`` and may add ``state`` and ``fps``; version 1 has
``num_actions`` only and reads as a discrete action space (its shards hold the same columns).
"""

from __future__ import annotations

from pathlib import Path

from iris_wm.data.episode import ObsSpec
from iris_wm.data.shards import Manifest, StoreError
from iris_wm.data.spaces import ActionSpace, StateSpec
from iris_wm.runtime.provenance import provenance
from iris_wm.runtime.schema import SchemaError, check, read_json

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
MANIFEST = "manifest.json"


class WrongStoreKind(StoreError, ValueError):
    """A store of one kind (episodes, tokens) where the other is needed."""


def new_manifest(
    kind: str, spec: ObsSpec, space: ActionSpace, settings: dict, state: StateSpec | None, fps: float | None
) -> dict:
    """The manifest of a new, empty store (discrete stores also keep version 1's ``num_actions``)."""
    return {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "observation": spec.to_dict(),
        "action_space": space.to_dict(),
        **({"num_actions": space.n} if space.is_discrete else {}),
        "state": state.to_dict() if state is not None else None,
        "fps": float(fps) if fps is not None else None,
        "settings": settings,
        "created_with": provenance(),
        "num_episodes": 0,
        "num_steps": 0,
        "shards": [],
    }


def layout(manifest: dict) -> tuple[ActionSpace, StateSpec | None, float | None]:
    """The action space, state and fps a manifest (of either version) names: version 1 has ``num_actions`` only."""
    space = manifest.get("action_space")
    actions = ActionSpace.from_dict(space) if space else ActionSpace.discrete(manifest["num_actions"])
    state = StateSpec.from_dict(manifest["state"]) if manifest.get("state") else None
    return actions, state, manifest.get("fps")


def read_manifest(root: Path, kind: str) -> dict:
    """The manifest of the store at ``root``, checked: present, readable, a version this code reads, of ``kind``,
    with every field it needs."""
    path = root / MANIFEST
    if not path.exists():
        raise StoreError(
            f"No store at {root}: {path} is missing. Create one first (collect episodes into it).", "collect"
        )
    fix = "Restore the manifest from a backup, or collect the store again."
    try:
        manifest = read_json(path, "store manifest", fix)
    except SchemaError as err:
        raise StoreError(str(err).replace("the store manifest is damaged", "the store's manifest is damaged")) from err
    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    if version not in READABLE_VERSIONS:
        raise StoreError(
            f"{path} has store format version {version}, but this iris-wm reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}. Use the iris-wm version that wrote it, or re-create the "
            "store with this one."
        )
    if manifest.get("kind") != kind:
        names = {"tokens": "a token store", "episodes": "an episode store"}
        held = names.get(manifest.get("kind"), f"a store of unknown kind {manifest.get('kind')!r}")
        raise WrongStoreKind(
            f"{root} holds {held}, but {names[kind]} is needed here: give {names[kind]} (in code, open "
            f"this one as {'TokenStore' if manifest.get('kind') == 'tokens' else 'EpisodeStore'})."
        )
    try:
        check(manifest, Manifest, path, "store manifest", fix)
    except SchemaError as err:
        raise StoreError(str(err)) from err
    needed = "num_actions" if version == 1 else "action_space"
    if not manifest.get(needed):
        raise StoreError(f"{path} (format version {version}) names no {needed}: it is damaged. {fix}")
    try:
        if version > 1:
            ActionSpace.from_dict(manifest["action_space"])
    except (ValueError, TypeError, KeyError) as err:
        raise StoreError(f"{path} has an invalid action_space ({err}). {fix}") from err
    return manifest


def layout_differences(stored: dict, given: dict) -> list[str]:
    """What differs between a store's ``observation``, ``actions`` (an ActionSpace), ``state`` and ``fps`` and those
    of data about to be appended, in words."""
    problems = []
    if given["observation"] != stored["observation"]:
        problems.append(f"observation {given['observation']} vs stored {stored['observation']}")
    new, old = given["actions"], stored["actions"]
    if new != old:
        both_discrete = new.is_discrete and old.is_discrete
        problems.append(
            f"{new.n} actions vs {old.n} stored"
            if both_discrete
            else f"actions {new.describe()} vs stored {old.describe()}"
        )
    for name in ("state", "fps"):
        if given[name] != stored[name]:
            problems.append(f"{name} {given[name]} vs stored {stored[name]}")
    return problems
