"""The files of a store: its Arrow shards (their columns, written from episodes, read back checked and zero-copy),
its atomic writes, and the writer's lock."""

from __future__ import annotations

import fcntl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from iris_wm.data.episode import Episode, ObsSpec
from iris_wm.data.spaces import ActionSpace, StateSpec
from iris_wm.runtime.errors import IrisError
from iris_wm.runtime.files import sha256_file, write_atomic, write_json_atomic
from iris_wm.runtime.schema import Schema


class StoreError(IrisError, RuntimeError):
    """A store on disk is missing, damaged, or does not match what the caller expects."""


class _ObsSpecEntry(Schema):
    name: str
    dtype: Literal["uint8", "int16", "int32", "int64", "float32"]
    shape: list[Annotated[int, Field(ge=0)]]  # (0,): no observation column, a store of proprioception alone


class _ShardEntry(Schema):
    file: str
    rows: Annotated[int, Field(ge=1)]
    episodes: Annotated[int, Field(ge=1)]
    nbytes: Annotated[int, Field(ge=1)]
    sha256: Annotated[str, Field(pattern="^[0-9a-f]{64}$")]


class _ActionSpaceEntry(Schema):
    type: Literal["discrete", "box"]
    n: Annotated[int, Field(ge=1)] | None = None
    shape: list[Annotated[int, Field(ge=1)]] | None = None
    low: list[float] | None = None
    high: list[float] | None = None


class _StateEntry(Schema):
    size: Annotated[int, Field(ge=1)]
    names: list[str] = []


class Manifest(Schema):
    """``manifest.json`` of a store. Version 1 has ``num_actions`` only (discrete actions); version 2 names the
    ``action_space``, and may add a ``state`` column and a control frequency ``fps``."""

    format_version: int
    kind: Literal["episodes", "tokens"]
    observation: _ObsSpecEntry
    num_actions: Annotated[int, Field(ge=1)] | None = None
    action_space: _ActionSpaceEntry | None = None
    state: _StateEntry | None = None
    fps: Annotated[float, Field(gt=0)] | None = None
    settings: dict
    created_with: dict
    num_episodes: Annotated[int, Field(ge=0)]
    num_steps: Annotated[int, Field(ge=0)]
    shards: list[_ShardEntry]


@dataclass
class Shard:
    """A shard's entry in the manifest."""

    file: str
    rows: int
    episodes: int
    nbytes: int
    sha256: str


def step_schema(spec: ObsSpec, actions: ActionSpace | None = None, state: StateSpec | None = None) -> pa.Schema:
    """The columns of a store's shards: one row per step. Discrete actions are an int64 column (as in version 1),
    box actions a fixed-size list of float32; the state, where there is one, a fixed-size list of float32."""
    from datasets import Features, List, Value

    box = actions is not None and not actions.is_discrete
    columns = {
        "episode": Value("int64"),
        "step": Value("int32"),
        **({spec.name: List(Value(spec.dtype), length=spec.numel)} if spec.numel else {}),  # none: state only
        "action": List(Value("float32"), length=actions.size) if box else Value("int64"),
    }
    if state is not None:
        columns["state"] = List(Value("float32"), length=state.size)
    columns |= {"reward": Value("float32"), "terminated": Value("bool"), "truncated": Value("bool")}
    return Features(columns).arrow_schema


def _vectors(rows: np.ndarray, size: int) -> pa.FixedSizeListArray:
    return pa.FixedSizeListArray.from_arrays(pa.array(rows.reshape(-1).astype(np.float32)), size)


def episodes_table(
    episodes: Sequence[Episode],
    spec: ObsSpec,
    first_id: int,
    actions: ActionSpace | None = None,
    state: StateSpec | None = None,
) -> pa.Table:
    """Whole episodes as one table, their ids counting from ``first_id``."""
    lengths = [len(e) for e in episodes]
    columns = {
        "episode": np.repeat(np.arange(first_id, first_id + len(episodes), dtype=np.int64), lengths),
        "step": np.concatenate([np.arange(n, dtype=np.int32) for n in lengths]),
    }
    if spec.numel:  # a zero-width observation (a store of proprioception alone) has no column: Arrow has none
        obs = np.concatenate([np.ascontiguousarray(e.observations).reshape(len(e), -1) for e in episodes])
        values = pa.array(obs.reshape(-1), type=pa.from_numpy_dtype(np.dtype(spec.dtype)))
        columns[spec.name] = pa.FixedSizeListArray.from_arrays(values, spec.numel)
    if actions is None or actions.is_discrete:
        columns["action"] = np.concatenate([np.asarray(e.actions, np.int64) for e in episodes])
    else:
        columns["action"] = _vectors(np.concatenate([np.asarray(e.actions) for e in episodes]), actions.size)
    if state is not None:
        columns["state"] = _vectors(np.concatenate([np.asarray(e.states) for e in episodes]), state.size)
    columns |= {
        "reward": np.concatenate([np.asarray(e.rewards, np.float32) for e in episodes]),
        "terminated": np.concatenate([np.asarray(e.terminated, bool) for e in episodes]),
        "truncated": np.concatenate([np.asarray(e.truncated, bool) for e in episodes]),
    }
    return pa.table(columns, schema=step_schema(spec, actions, state))


def read_shard(
    folder: Path,
    shard: Shard,
    spec: ObsSpec,
    verify: str = "checksum",
    actions: ActionSpace | None = None,
    state: StateSpec | None = None,
) -> tuple[pa.Table, np.ndarray]:
    """The table of a shard, checked against its manifest entry (size, and checksum when ``verify`` asks), and
    a zero-copy view of its observations ``(rows, *spec.shape)``."""
    path = folder / shard.file
    if not path.exists():
        raise StoreError(f"Shard {path} named in the manifest is missing: the store is incomplete.")
    size = path.stat().st_size
    if size != shard.nbytes:
        raise StoreError(
            f"Shard {path} has {size} bytes but the manifest records {shard.nbytes}: it is truncated or "
            "was changed. Restore it from a backup or re-collect the store."
        )
    if verify == "checksum" and sha256_file(path) != shard.sha256:
        raise StoreError(
            f"Shard {path} does not match its checksum in the manifest: it is corrupted. "
            "Restore it from a backup or re-collect the store."
        )
    try:
        table = pa.ipc.open_stream(pa.memory_map(str(path))).read_all()
    except (pa.ArrowInvalid, OSError) as err:
        raise StoreError(f"Shard {path} cannot be read as Arrow ({err}); it is damaged.") from err
    if table.num_rows != shard.rows or not table.schema.equals(step_schema(spec, actions, state), check_metadata=False):
        raise StoreError(f"Shard {path} does not have the rows or columns its manifest records.")
    # A shard is one record batch: take its chunk as it is. combine_chunks() copies even a single chunk into
    # anonymous memory, which held every frame of the store in RAM (a 1M-frame store was OOM-killed at
    # 12 GB; benchmarks/store_memory.py).
    if not spec.numel:
        return table, np.zeros((table.num_rows, *spec.shape), np.dtype(spec.dtype))
    column = table.column(spec.name)
    array = column.chunk(0) if column.num_chunks == 1 and column.chunk(0).offset == 0 else column.combine_chunks()
    obs = array.values.to_numpy(zero_copy_only=True).reshape(table.num_rows, *spec.shape)
    return table, obs


class StoreLock:
    """An exclusive advisory lock on the store folder for the duration of an append."""

    def __init__(self, root: Path):
        self.path = root / ".lock"

    def __enter__(self):
        try:
            self.handle = open(self.path, "a")
        except OSError as err:
            raise StoreError(
                f"Cannot write to the store {self.path.parent} ({err.strerror or err}): the folder is "
                "read-only or not yours. The store is unchanged; make it writable (or copy it to a "
                "folder you can write) and try again."
            ) from err
        fcntl.flock(self.handle, fcntl.LOCK_EX)

    def __exit__(self, *exc):
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def ipc_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def write_file(path: Path, payload: bytes | dict) -> None:
    """Atomic write of a shard (bytes) or the manifest (a dict, as JSON); a failure leaves the store unchanged."""
    try:
        write_json_atomic(path, payload) if isinstance(payload, dict) else write_atomic(path, payload)
    except OSError as err:
        raise StoreError(
            f"Could not write {path} ({err.strerror or err}). The store is unchanged; free disk space or "
            "fix the folder's permissions and try again."
        ) from err
