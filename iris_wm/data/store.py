"""Append-only stores of episodes on disk: Arrow shards in the `datasets` format plus a manifest.

Layout of a store folder::

    manifest.json            what the store holds, its settings and the list of shards (the source of truth)
    shards/shard-000000.arrow  one Arrow IPC stream per append, readable by ``datasets.Dataset.from_file``

One row is one agent step ``t`` of one episode: the observation ``o_t`` seen before acting (and the state ``s_t``,
proprioception, where the store has a state column), the action ``a_t`` taken, the reward ``r_t`` received for it,
and whether the episode ended after it (``terminated`` or ``truncated``). Only the last row of an episode may end it.

Schema version 2 (what this version writes) names the action space in the manifest, ``discrete {n}`` or ``box
{shape, low, high}``, and may add a ``state`` column (float32 vectors of a fixed size, with names) and a control
frequency ``fps``. Version 1 stores (``num_actions`` only) open unchanged as ``discrete``: their shards are the
same columns.

Shards are written, read and locked by :mod:`iris_wm.data.shards`. Writes are atomic: a shard is written under
a temporary name, synced and renamed, and only then is the manifest replaced (also by rename). A crash at any
point leaves the manifest, and so the store, as it was; an orphaned shard that no manifest names is ignored and
overwritten by the next append. Reads are zero-copy views of memory-mapped shards: the observations are never
loaded into RAM as a whole.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import pyarrow as pa

from iris_wm.data.episode import Episode, ObsSpec
from iris_wm.data.manifest import (  # noqa: F401  (FORMAT_VERSION, READABLE_VERSIONS: part of this module's API)
    FORMAT_VERSION,
    MANIFEST,
    READABLE_VERSIONS,
    WrongStoreKind,
    layout,
    layout_differences,
    new_manifest,
    read_manifest,
)
from iris_wm.data.shards import (
    Shard,
    StoreError,
    StoreLock,
    episodes_table,
    ipc_bytes,
    read_shard,
    step_schema,
    write_file,
)
from iris_wm.data.spaces import ActionSpace, StateSpec
from iris_wm.runtime.files import FolderLock

SHARD_DIR = "shards"

Verify = Literal["checksum", "size"]


@dataclass
class _Index:
    """In-memory columns of everything but the observations (about 20 bytes per step)."""

    episode: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    step: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    action: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (N,) or (N, *box shape) float32
    reward: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    terminated: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    truncated: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    state: np.ndarray | None = None  # (N, size) float32 where the store has a state column


def _column(table: pa.Table, name: str) -> np.ndarray:
    """A column as numpy: fixed-size lists (box actions, states) as ``(rows, size)``."""
    column = table.column(name)
    if pa.types.is_fixed_size_list(column.type):
        flat = column.combine_chunks()
        return flat.values.to_numpy().reshape(table.num_rows, column.type.list_size)
    return column.to_numpy()


class StepStore:
    """An append-only store of episodes whose observation column is described by an :class:`ObsSpec`."""

    kind: ClassVar[str] = "steps"

    def __init__(self, root: Path, manifest: dict, verify: Verify = "checksum"):
        self.root = Path(root)
        self.manifest = manifest
        self.spec = ObsSpec.from_dict(manifest["observation"])
        self.action_space, self.state, self.fps = layout(manifest)
        self.verify = verify
        self._obs: list[np.ndarray] = []  # one memory-mapped view per shard
        self._tables: list[pa.Table] = []
        self._index = _Index(
            action=np.zeros((0, *self.action_space.shape), self.action_space.dtype),
            state=None if self.state is None else np.zeros((0, self.state.size), np.float32),
        )
        self._load_shards(manifest["shards"])
        self._check_counts()

    def _check_counts(self) -> None:
        """The manifest's counts must be its shards': appends number episodes from them."""
        m, ids = self.manifest, self.episode_ids
        problems = [
            f"{name} {m[name]} but its shards hold {held}"
            for name, held in (("num_steps", self.num_steps), ("num_episodes", self.num_episodes))
            if m[name] != held
        ]
        if len(ids) and not np.array_equal(ids, np.arange(len(ids))):
            problems.append("episode ids that are not 0, 1, 2, ... in order")
        if problems:
            raise StoreError(
                f"The manifest of {self.root} records {'; '.join(problems)}: it was edited or damaged, and appending "
                "would reuse episode ids. Restore it from a backup, or collect the store again."
            )

    # ------------------------------------------------------------------ creation and opening
    @classmethod
    def create(
        cls,
        root: str | Path,
        spec: ObsSpec,
        actions: int | ActionSpace,
        settings: dict,
        state: StateSpec | None = None,
        fps: float | None = None,
    ) -> StepStore:
        """Make a new empty store. ``actions`` is the action space (a number: that many discrete actions), ``state``
        the proprioception column (None: none), ``fps`` the control frequency where it is fixed, ``settings`` where
        the data comes from (env, tokenizer...)."""
        root = Path(root)
        space = ActionSpace.of(actions)
        if fps is not None and not (np.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be a positive number of steps per second; got {fps}.")
        if spec.numel == 0 and state is None:
            raise ValueError("A store without observations (shape (0,)) needs a state column: it would hold nothing.")
        if (root / MANIFEST).exists():
            raise StoreError(f"{root} already holds a store; open it with {cls.__name__}.open(...) instead.")
        if root.exists() and any(p.name != FolderLock.FILE for p in root.iterdir()):
            raise StoreError(f"{root} exists and is not empty: choose a new folder for the store.")
        try:
            (root / SHARD_DIR).mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StoreError(
                f"Cannot create the store folder {root} ({err.strerror or err}): choose a folder you can write to."
            ) from err
        manifest = new_manifest(cls.kind, spec, space, settings, state, fps)
        write_file(root / MANIFEST, manifest)
        return cls(root, manifest)

    @classmethod
    def open(cls, root: str | Path, verify: Verify = "checksum") -> StepStore:
        """Open a store, checking its format version, kind and every shard (size, and checksum by default)."""
        return cls(Path(root), read_manifest(Path(root), cls.kind), verify)

    @classmethod
    def open_or_create(
        cls,
        root: str | Path,
        spec: ObsSpec,
        actions: int | ActionSpace,
        settings: dict,
        state: StateSpec | None = None,
        fps: float | None = None,
    ) -> StepStore:
        """Open the store at ``root`` if there is one (it must match), otherwise create it."""
        if not (Path(root) / MANIFEST).exists():
            return cls.create(root, spec, actions, settings, state, fps)
        store = cls.open(root)
        store.check_compatible(spec, actions, settings, state, fps)
        return store

    def check_compatible(
        self,
        spec: ObsSpec,
        actions: int | ActionSpace,
        settings: dict,
        state: StateSpec | None = None,
        fps: float | None = None,
    ) -> None:
        """Raise StoreError if appending data made with these settings would mix incompatible episodes."""
        space = ActionSpace.of(actions)
        found = {"observation": self.spec, "actions": self.action_space, "state": self.state, "fps": self.fps}
        problems = layout_differences(found, {"observation": spec, "actions": space, "state": state, "fps": fps})
        for key, value in settings.items():
            stored = self.manifest["settings"].get(key)
            if stored != value:
                problems.append(f"{key}={value!r} vs stored {stored!r}")
        if problems:
            raise StoreError(
                f"The store at {self.root} was made with other settings ({'; '.join(problems)}). "
                "Write to a new folder, or use the stored settings."
            )

    # ------------------------------------------------------------------ reading
    def _load_shards(self, shards: list[dict]) -> None:
        names = [k for k in _Index.__dataclass_fields__ if k != "state" or self.state is not None]
        columns: dict[str, list[np.ndarray]] = {k: [] for k in names}
        for entry in shards:
            table, obs = read_shard(
                self.root / SHARD_DIR, Shard(**entry), self.spec, self.verify, self.action_space, self.state
            )
            self._tables.append(table)
            self._obs.append(obs)
            for name in columns:
                columns[name].append(_column(table, name))
        if shards:
            idx = self._index
            self._index = _Index(**{k: np.concatenate([getattr(idx, k), *v]) for k, v in columns.items()})
        self._refresh_episode_table()

    def _refresh_episode_table(self) -> None:
        episode = self._index.episode
        starts = np.flatnonzero(np.r_[True, episode[1:] != episode[:-1]]) if len(episode) else np.zeros(0, int)
        self.episode_ids = episode[starts]
        self.episode_starts = starts.astype(np.int64)
        self.episode_lengths = np.diff(np.r_[starts, len(episode)]).astype(np.int64)
        sizes = [len(o) for o in self._obs]
        self._shard_starts = np.cumsum([0, *sizes[:-1]]).astype(np.int64) if sizes else np.zeros(0, np.int64)

    @property
    def num_actions(self) -> int:
        """The number of discrete actions (a store of box actions has none: read ``action_space``)."""
        if not self.action_space.is_discrete:
            raise StoreError(
                f"{self.root} holds continuous actions ({self.action_space.describe()}), not a number of discrete "
                "ones: this step needs a discrete action space (Atari), or read store.action_space."
            )
        return self.action_space.n

    @property
    def num_steps(self) -> int:
        return len(self._index.episode)

    @property
    def num_episodes(self) -> int:
        return len(self.episode_ids)

    def __len__(self) -> int:
        return self.num_steps

    @property
    def columns(self) -> _Index:
        """Episode index, step index, action, reward, terminated, truncated (and state) of every row (in RAM)."""
        return self._index

    def observations(self, rows: np.ndarray) -> np.ndarray:
        """Observations of the given global rows, shaped ``rows.shape + spec.shape`` (a copy)."""
        rows = np.asarray(rows, dtype=np.int64)
        flat = rows.reshape(-1)
        if flat.size and (flat.min() < 0 or flat.max() >= self.num_steps):
            raise IndexError(f"Rows must lie in [0, {self.num_steps}); got [{flat.min()}, {flat.max()}].")
        out = np.empty((flat.size, *self.spec.shape), dtype=self.spec.dtype)
        shard_of = np.searchsorted(self._shard_starts, flat, side="right") - 1
        for shard in np.unique(shard_of):
            hit = shard_of == shard
            out[hit] = self._obs[shard][flat[hit] - self._shard_starts[shard]]
        return out.reshape(*rows.shape, *self.spec.shape)

    def episode(self, position: int) -> Episode:
        """The episode at ``position`` in storage order (0 .. num_episodes - 1)."""
        start, length = int(self.episode_starts[position]), int(self.episode_lengths[position])
        rows = np.arange(start, start + length)
        idx = self._index
        return Episode(
            self.observations(rows),
            idx.action[rows],
            idx.reward[rows],
            idx.terminated[rows],
            idx.truncated[rows],
            None if idx.state is None else idx.state[rows],
        )

    def to_dataset(self):
        """The whole store as a memory-mapped ``datasets.Dataset`` (no copy of the shards)."""
        import datasets

        parts = [datasets.Dataset.from_file(str(self.root / SHARD_DIR / s["file"])) for s in self.manifest["shards"]]
        if not parts:
            raise StoreError(f"The store at {self.root} is empty.")
        return datasets.concatenate_datasets(parts)

    # ------------------------------------------------------------------ writing
    def schema(self) -> pa.Schema:
        return step_schema(self.spec, self.action_space, self.state)

    def append(self, episodes: Sequence[Episode]) -> str:
        """Append whole episodes as one new shard; returns its file name. Stored data is never rewritten."""
        if not episodes:
            raise ValueError("append() needs at least one episode.")
        for i, episode in enumerate(episodes):
            try:
                episode.check(self.spec, self.action_space, self.state)
            except ValueError as err:
                raise ValueError(f"Episode {i} of this append cannot go into {self.root}: {err}") from err
        with StoreLock(self.root):
            self._reload_if_changed()
            first_id = int(self.manifest["num_episodes"])
            table = episodes_table(episodes, self.spec, first_id, self.action_space, self.state)
            payload = ipc_bytes(table)
            name = f"shard-{len(self.manifest['shards']):06d}.arrow"
            write_file(self.root / SHARD_DIR / name, payload)
            entry = Shard(name, table.num_rows, len(episodes), len(payload), hashlib.sha256(payload).hexdigest())
            manifest = dict(self.manifest)
            manifest["shards"] = [*self.manifest["shards"], entry.__dict__]
            manifest["num_episodes"] = first_id + len(episodes)
            manifest["num_steps"] = int(self.manifest["num_steps"]) + table.num_rows
            write_file(self.root / MANIFEST, manifest)
            self.manifest = manifest
            self._load_shards([entry.__dict__])
        return name

    def rollback(self, num_shards: int) -> int:
        """Forget the shards after the first ``num_shards`` (the online loop's uncommitted appends after a
        crash, collected again on resume). The manifest is rewritten atomically before the files are removed,
        so a crash here leaves either the old or the new store. Returns the number of shards dropped."""
        with StoreLock(self.root):
            self._reload_if_changed()
            shards = self.manifest["shards"]
            if not 0 <= num_shards <= len(shards):
                raise StoreError(f"Cannot roll {self.root} back to {num_shards} shards: it has {len(shards)}.")
            dropped = shards[num_shards:]
            if not dropped:
                return 0
            kept = shards[:num_shards]
            manifest = dict(
                self.manifest,
                shards=kept,
                num_episodes=sum(s["episodes"] for s in kept),
                num_steps=sum(s["rows"] for s in kept),
            )
            write_file(self.root / MANIFEST, manifest)
            for shard in dropped:
                (self.root / SHARD_DIR / shard["file"]).unlink(missing_ok=True)
        self.__init__(self.root, manifest, verify="size")
        return len(dropped)

    def _reload_if_changed(self) -> None:
        """Pick up shards that another writer appended since this store was opened."""
        on_disk = json.loads((self.root / MANIFEST).read_text())
        known = len(self.manifest["shards"])
        if on_disk["shards"][:known] != self.manifest["shards"]:
            raise StoreError(f"The manifest of {self.root} changed under this process; reopen the store.")
        if len(on_disk["shards"]) > known:
            self.manifest = on_disk
            self._load_shards(on_disk["shards"][known:])


class EpisodeStore(StepStore):
    """Frames as ``uint8 (3, H, W)`` with actions, rewards and episode ends: what `iris-wm collect` writes."""

    kind = "episodes"

    @staticmethod
    def frame_spec(size: int = 64) -> ObsSpec:
        return ObsSpec("frame", "uint8", (3, size, size))


class TokenStore(StepStore):
    """Tokens per frame (``int16 (K,)``) aligned row by row with an episode store: what the world model reads."""

    kind = "tokens"

    @staticmethod
    def token_spec(tokens_per_frame: int) -> ObsSpec:
        return ObsSpec("tokens", "int16", (tokens_per_frame,))


def open_store(root: str | Path, verify: Verify = "checksum") -> StepStore:
    """Open an episode store or a token store, whichever ``root`` holds."""
    manifest = Path(root) / MANIFEST
    try:
        kind = json.loads(manifest.read_text()).get("kind") if manifest.exists() else None
    except (ValueError, AttributeError, OSError):
        kind = None  # the store's own open names what is wrong with the manifest
    return (TokenStore if kind == "tokens" else EpisodeStore).open(root, verify=verify)


def require_token_store(store: StepStore, needed_by: str) -> TokenStore:
    """``store`` if it holds tokens; otherwise the error that says to encode it first."""
    if not isinstance(store, TokenStore):
        raise WrongStoreKind(
            f"{store.root} holds frames, but {needed_by} trains on tokens: encode it into a token store first "
            "(the tokenizer's predict stage).",
            "encode",
        )
    return store
