"""DreamerV3 replay data, in the two forms users have.

- ``episodes`` (NM512/dreamerv3-torch): one file an episode, ``{time}-{uuid}-{length}.npz``. Row ``t`` holds
  ``o_t`` with the action and reward that *led to it*; row 0's action is zeros and its reward 0.
- ``chunks`` (danijar/dreamerv3's replay): ``{time}-{uuid}-{succ}-{length}.npz``, up to 1024 consecutive steps of
  one worker; ``succ`` names the chunk that continues it, so an episode is followed across chunks and split on
  ``is_first``. Row ``t`` holds ``o_t``, the reward received *on arriving* at it and the action *chosen at* it.

A store row ``t`` holds ``o_t``, the action taken at it and the reward for that action. So an episode of ``N``
source rows becomes ``N - 1`` store steps (its last observation has no action after it, as in a collected store):

- ``episodes``: the action and the reward of store row ``t`` are those of source row ``t + 1``;
- ``chunks``: the action is source row ``t``'s, the reward source row ``t + 1``'s;
- both: the episode terminated if ``is_terminal`` (else ``discount == 0``) at its last source row, and was
  truncated otherwise.

One-hot actions become discrete ids (``actions: auto`` tells them apart), others a box over ``action_low`` /
``action_high`` (DreamerV3's continuous actions lie in [-1, 1]). ``state_keys`` concatenates vector observations
(``position``, ``velocity``...) into the state column, named ``<key>.<i>``.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from iris_wm.data.episode import Episode
from iris_wm.data.importers.writer import ImportPlan, SourceError, fingerprint, to_frames
from iris_wm.data.spaces import ActionSpace, StateSpec
from iris_wm.data.store import EpisodeStore


@dataclass
class DreamerOptions:
    form: Literal["auto", "episodes", "chunks"] = "auto"
    """Which form the folder holds (auto: from the file names: three dash-separated parts or four)."""
    image_key: str = "image"
    """The key of the frames: uint8 (steps, height, width, 1 or 3)."""
    action_key: str = "action"
    state_keys: tuple[str, ...] = ()
    """Vector observations concatenated into the state column, in this order (none: no state)."""
    actions: Literal["auto", "discrete", "box"] = "auto"
    """``discrete``: one-hot rows become ids; ``box``: vectors within the bounds; ``auto``: discrete where every
    action is one-hot."""
    action_low: float = -1.0
    """Lower bound of every box action component (actions below it are refused)."""
    action_high: float = 1.0
    size: int | None = None
    """Resize frames to size x size (default: keep them; they must be square)."""
    fps: float | None = None
    """The control frequency, steps a second, where it is fixed (recorded in the store)."""

    def __post_init__(self):
        self.state_keys = tuple(self.state_keys)  # a list from a command line or YAML


@dataclass
class _File:
    path: Path
    columns: dict[str, np.ndarray]  # every key used but the image, loaded
    rows: int
    image_shape: tuple[int, ...]


def _npy_shape(archive: np.lib.npyio.NpzFile, key: str, where: str) -> tuple[tuple[int, ...], np.dtype]:
    """An array's shape and dtype from its header, without reading it."""
    with archive.zip.open(f"{key}.npy") as handle:
        version = np.lib.format.read_magic(handle)
        reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = reader(handle)
    return tuple(shape), dtype


def _read(path: Path, options: DreamerOptions, extra: tuple[str, ...]) -> _File:
    where = path.name
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise SourceError(
            f"{where}: not a readable .npz file ({err}). Remove it from the folder or re-save it."
        ) from err
    with archive:
        needed = (options.image_key, options.action_key, "reward", *options.state_keys, *extra)
        missing = [k for k in needed if k not in archive.files]
        if missing:
            raise SourceError(
                f"{where}: no {', '.join(map(repr, missing))} among its keys {sorted(archive.files)}. Name the keys "
                "with --image-key, --action-key, --state-keys."
            )
        optional = [k for k in ("is_first", "is_last", "is_terminal", "discount") if k in archive.files]
        columns = {k: archive[k] for k in dict.fromkeys((*needed[1:], *optional))}
        image_shape, image_dtype = _npy_shape(archive, options.image_key, where)
    if image_dtype != np.uint8 or len(image_shape) != 4:
        raise SourceError(
            f"{where}: {options.image_key!r} must be uint8 (steps, height, width, channels); got "
            f"{image_dtype} {image_shape}."
        )
    rows = image_shape[0]
    for key, value in columns.items():
        if len(value) != rows:
            raise SourceError(
                f"{where}: {key!r} has {len(value)} rows, {options.image_key!r} {rows}: every key "
                "of a file holds one row per step. The file is damaged: re-save or remove it."
            )
    return _File(path, columns, rows, image_shape)


def _state(file: _File, keys: tuple[str, ...]) -> np.ndarray | None:
    if not keys:
        return None
    return np.concatenate([file.columns[k].reshape(file.rows, -1).astype(np.float32) for k in keys], axis=1)


def _state_names(file: _File, keys: tuple[str, ...]) -> list[str]:
    return [f"{k}.{i}" for k in keys for i in range(int(np.prod(file.columns[k].shape[1:])))]


def _ended(file: _File, row: int) -> bool:
    """Whether the episode terminated at ``row`` (as opposed to being cut off)."""
    if "is_terminal" in file.columns:
        return bool(file.columns["is_terminal"][row])
    return "discount" in file.columns and float(file.columns["discount"][row]) == 0.0


def _forms(paths: list[Path]) -> set[str]:
    return {"chunks" if len(p.stem.split("-")) >= 4 else "episodes" for p in paths}


@dataclass
class _Segment:
    """One episode's source rows: file index and row of each, in order; ``ended``: terminated at its last row."""

    files: np.ndarray
    rows: np.ndarray
    ended: bool


def _gather(files: list[_File], segment: _Segment, get) -> np.ndarray:
    """``get(file)`` (an array over the file's rows) at the segment's rows, concatenated in order."""
    order = list(dict.fromkeys(segment.files.tolist()))
    return np.concatenate([get(files[f])[segment.rows[segment.files == f]] for f in order])


def _episode_files(files: list[_File]) -> tuple[list[_Segment], list[str]]:
    segments, skipped = [], []
    for i, file in enumerate(files):
        if file.rows < 2:
            skipped.append(f"{file.path.name}: {file.rows} row, no action taken: not an episode")
            continue
        segments.append(_Segment(np.full(file.rows, i), np.arange(file.rows), _ended(file, file.rows - 1)))
    return segments, skipped


def _chains(files: list[_File]) -> list[tuple[list[int], str]]:
    """Chunks linked by their successor into chains, each in order, with the successor id that ended it."""
    by_id: dict[str, tuple[int, str]] = {}
    for i, file in enumerate(files):
        *_, uuid, succ, _length = file.path.stem.split("-")
        if uuid in by_id:
            raise SourceError(f"{file.path.name} and {files[by_id[uuid][0]].path.name} have the same chunk id {uuid}.")
        by_id[uuid] = (i, succ)
    successors = {succ for _, succ in by_id.values()}
    chains, seen = [], set()
    for uuid in by_id:  # in file (time) order
        if uuid in successors:
            continue
        chain, at = [], uuid
        while at in by_id and at not in seen:
            seen.add(at)
            chain.append(by_id[at][0])
            at = by_id[at][1]
        chains.append((chain, at))
    if len(seen) != len(by_id):
        names = sorted(files[i].path.name for u, (i, _) in by_id.items() if u not in seen)
        raise SourceError(f"Chunks {names[:3]} succeed each other in a cycle: the folder is damaged.")
    return chains


def _chunk_files(files: list[_File]) -> tuple[list[_Segment], list[str]]:
    segments, skipped = [], []
    for chain, end in _chains(files):
        fid = np.concatenate([np.full(files[i].rows, i) for i in chain])
        rid = np.concatenate([np.arange(files[i].rows) for i in chain])
        first = np.concatenate([files[i].columns["is_first"] for i in chain]).astype(bool)
        last = np.concatenate([files[i].columns.get("is_last", np.zeros(files[i].rows)) for i in chain]).astype(bool)
        starts = np.flatnonzero(first | np.concatenate([[False], last[:-1]]))
        head = files[chain[0]].path.name
        if len(starts) == 0 or starts[0] > 0:
            lead = starts[0] if len(starts) else len(fid)
            skipped.append(f"{head}: {lead} rows before the chain's first is_first (that episode's start is not here)")
        if set(end) != {"0"} and end not in {files[i].path.stem.split("-")[-3] for i in chain}:
            skipped.append(f"{head}: the chain goes on in chunk {end}, not in the folder; its last episode is cut")
        for a, b in zip(starts, [*starts[1:], len(fid)], strict=True):
            if b - a < 2:
                skipped.append(f"{files[fid[a]].path.name} row {rid[a]}: an episode of one row, no action taken")
                continue
            f, r = files[fid[b - 1]], rid[b - 1]
            complete = bool(last[b - 1])
            segments.append(_Segment(fid[a:b], rid[a:b], complete and _ended(f, r)))
    return segments, skipped


def _where(files: list[_File], segment: _Segment, index: int) -> str:
    return f"{files[segment.files[index]].path.name} row {segment.rows[index]}"


def _action_space(actions: list[np.ndarray], options: DreamerOptions) -> ActionSpace:
    """Discrete (one-hot rows) or a box, checked on every action that will be stored."""
    every = np.concatenate(actions)
    dim = every.shape[1]
    one_hot = bool(((every == 0) | (every == 1)).all() and (every.sum(1) == 1).all())
    kind = options.actions if options.actions != "auto" else ("discrete" if one_hot and dim > 1 else "box")
    if kind == "discrete":
        if not one_hot:
            raise SourceError("--actions discrete: the actions are not one-hot rows; import them as --actions box.")
        return ActionSpace.discrete(dim)
    low, high = float(every.min()), float(every.max())
    if low < options.action_low or high > options.action_high:
        raise SourceError(
            f"Actions lie in [{low}, {high}], outside the box [{options.action_low}, {options.action_high}]: pass the "
            "bounds the robot accepts with --action-low and --action-high."
        )
    return ActionSpace.box(np.full(dim, options.action_low), np.full(dim, options.action_high))


def plan_dreamerv3(src: str | Path, options: DreamerOptions | None = None) -> ImportPlan:
    """Read a folder of DreamerV3 ``.npz`` files (every key but the frames) and plan its episodes."""
    options = options or DreamerOptions()
    src = Path(src)
    paths = sorted(src.glob("*.npz")) if src.is_dir() else []
    if not paths:
        raise SourceError(f"{src} is not a folder of .npz files: give the folder DreamerV3 saved its episodes in.")
    form = options.form
    if form == "auto":
        found = _forms(paths)
        if len(found) > 1:
            raise SourceError(f"{src} mixes episode files and replay chunks: pass --form episodes or --form chunks.")
        form = found.pop()
    files = [_read(p, options, ("is_first",) if form == "chunks" else ()) for p in paths]
    segments, skipped = _episode_files(files) if form == "episodes" else _chunk_files(files)
    if not segments:
        raise SourceError(f"{src} holds no episode of two rows or more: {'; '.join(skipped[:3])}.")
    shapes = {f.image_shape[1:] for f in files}
    sizes = {tuple(_state_names(f, options.state_keys)) for f in files}
    if len(shapes) > 1 or len(sizes) > 1:
        what = (
            f"frames of shapes {sorted(shapes)}"
            if len(shapes) > 1
            else f"states of {sorted(map(len, sizes))} components"
        )
        raise SourceError(f"{src} mixes {what}: a store holds one layout; import the files apart.")
    offset = 1 if form == "episodes" else 0  # where a step's action lies (module docstring)
    actions, rewards, states, names = [], [], [], sizes.pop()
    for s in segments:
        n = len(s.rows)
        action = _gather(files, s, lambda f: f.columns[options.action_key].reshape(f.rows, -1))[offset : offset + n - 1]
        reward = _gather(files, s, lambda f: f.columns["reward"].reshape(f.rows))[1:]
        for label, values in (("action", action), ("reward", reward)):
            bad = ~np.isfinite(values.astype(np.float64)).reshape(n - 1, -1).all(1)
            if bad.any():
                row = int(np.argmax(bad)) + (offset if label == "action" else 1)
                raise SourceError(f"{_where(files, s, row)}: the {label} is not finite. Repair or drop that episode.")
        state = None
        if options.state_keys:
            state = _gather(files, s, lambda f: _state(f, options.state_keys))[: n - 1]
            if not np.isfinite(state).all():
                raise SourceError(
                    f"{_where(files, s, int(np.argmax(~np.isfinite(state).all(1))))}: the state is not "
                    "finite. Repair or drop that episode."
                )
        actions.append(action)
        rewards.append(reward.astype(np.float32))
        states.append(state)
    space = _action_space(actions, options)
    size = options.size or files[0].image_shape[1]

    frames_of: dict[Path, np.ndarray] = {}  # the frames of the files the current episode lies in

    def loader(segment: _Segment, action: np.ndarray, reward: np.ndarray, state: np.ndarray | None):
        def load() -> Episode:
            n = len(segment.rows)
            needed = {files[i].path for i in segment.files.tolist()}  # consecutive episodes share replay chunks
            for path in set(frames_of) - needed:
                del frames_of[path]
            for path in needed - set(frames_of):
                with np.load(path, allow_pickle=False) as archive:
                    frames_of[path] = archive[options.image_key]
            images = _gather(files, segment, lambda f: frames_of[f.path])[: n - 1]
            frames = to_frames(images, options.size, files[segment.files[0]].path.name)
            ids = action.argmax(1) if space.is_discrete else action.astype(np.float32).reshape(n - 1, *space.shape)
            ends = np.zeros(n - 1, bool)
            terminated, truncated = ends.copy(), ends.copy()
            (terminated if segment.ended else truncated)[-1] = True
            return Episode(frames, ids, reward, terminated, truncated, state)

        return load

    source = {
        "format": "dreamerv3",
        "form": form,
        "path": str(src.resolve()),
        "files": len(paths),
        "fingerprint": fingerprint(paths, src),
        "image_key": options.image_key,
        "action_key": options.action_key,
        "state_keys": list(options.state_keys),
        "size": size,
    }
    return ImportPlan(
        source=source,
        spec=EpisodeStore.frame_spec(size),
        actions=space,
        state=StateSpec.named(names) if options.state_keys else None,
        fps=options.fps,
        episodes=[loader(*parts) for parts in zip(segments, actions, rewards, states, strict=True)],
        steps=sum(len(s.rows) - 1 for s in segments),
        skipped=skipped,
    )
