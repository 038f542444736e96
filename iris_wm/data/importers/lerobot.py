"""LeRobot datasets, codebase versions v3.0, v2.1 and v2.0: Parquet rows, frames from MP4 videos or the Parquet.

Every path comes from ``meta/info.json``'s ``data_path`` and ``video_path`` templates (never guessed):

- v3.0: ``meta/episodes/chunk-*/file-*.parquet`` lists the episodes: each one's data file
  (``data/chunk_index``, ``data/file_index``), and per camera its video file and ``from_timestamp``, the time its
  first frame starts at in that file (a file holds many episodes);
- v2.1 and v2.0: ``meta/episodes.jsonl`` lists them; one Parquet and one MP4 a camera per episode, in chunk
  ``episode_index // chunks_size``, each video starting at 0.

A row is one step: ``observation.state``, the ``action`` taken, ``next.reward`` (received for it) and ``next.done``.
A frame of a ``video`` feature is the one shown at ``from_timestamp + timestamp`` (within ``tolerance_s``, checked
for every row before anything is written, from the videos' packet times); an ``image`` feature's is the PNG in the
row. ``next.done`` merges terminated and truncated, so an episode's last step is stored as truncated (the episode
was cut) unless ``last_step: terminated`` says the data's episodes end in a terminal state.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from iris_wm.data.episode import Episode
from iris_wm.data.importers.writer import ImportPlan, SourceError, fingerprint, to_frames
from iris_wm.data.spaces import ActionSpace, StateSpec
from iris_wm.data.store import EpisodeStore

VERSIONS = ("v2.0", "v2.1", "v3.0")


@dataclass
class LeRobotOptions:
    camera: str | None = None
    """The image or video feature that is the frame (default: the dataset's only one)."""
    state_key: str | None = "observation.state"
    """The state feature (None: no state)."""
    action_key: str = "action"
    size: int | None = None
    """Resize frames to size x size (needed where the camera's frames are not square)."""
    last_step: Literal["truncated", "terminated"] = "truncated"
    """How an episode's last step ended (LeRobot's ``next.done`` does not say)."""
    tolerance_s: float = 1e-4
    """How far a video frame's time may lie from its row's timestamp (LeRobot's default)."""
    action_low: float | None = None
    """Lower bound of every action component (default: the data's minimum per component)."""
    action_high: float | None = None


def _json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise SourceError(f"{path} is missing: {what}. Give the dataset's root folder (the one holding meta/).")
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        raise SourceError(f"{path} is not valid JSON ({err}): the dataset's metadata is damaged.") from err


def _expand(template: str, root: Path, what: str, **keys) -> Path:
    try:
        path = root / template.format(**keys)
    except (KeyError, IndexError, ValueError) as err:
        raise SourceError(f"meta/info.json's {what} {template!r} cannot be filled from {sorted(keys)}: {err}.") from err
    if not path.is_file():
        raise SourceError(
            f"meta/info.json's {what} gives {path.relative_to(root)} for {keys}, which is missing: download the "
            "whole dataset (every data and video file)."
        )
    return path


def _vectors(table, key: str) -> np.ndarray:
    """A column of vectors (a list per row) or of scalars as ``(rows, size)``."""
    column = table.column(key).combine_chunks()
    kind = column.type
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        return np.asarray(column.flatten().to_numpy(zero_copy_only=False)).reshape(len(table), -1)
    return np.asarray(column.to_numpy(zero_copy_only=False)).reshape(len(table), -1)


@dataclass
class _Episode:
    index: int
    data: Path
    rows: np.ndarray  # row positions in the data file
    video: Path | None
    times: np.ndarray | None  # where each row's frame lies in the video


def _episodes(root: Path, info: dict, camera: str, is_video: bool, columns: list[str]) -> tuple[list[_Episode], dict]:
    """The episodes the index lists, checked against their data files' rows, and each data file's table (its index
    columns and ``columns``), every file read once."""
    version = info["codebase_version"]
    found = []
    if version == "v3.0":
        files = sorted((root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
        if not files:
            raise SourceError(f"{root}/meta/episodes/ holds no chunk-*/file-*.parquet: the episode index is missing.")
        meta = sorted((r for f in files for r in pq.read_table(f).to_pylist()), key=lambda r: r["episode_index"])
        for r in meta:
            keys = {"chunk_index": r["data/chunk_index"], "file_index": r["data/file_index"]}
            data = _expand(info["data_path"], root, "data_path", **keys)
            video, start = None, 0.0
            if is_video:
                keys = {f: r[f"videos/{camera}/{f}"] for f in ("chunk_index", "file_index")}
                video = _expand(info["video_path"], root, "video_path", video_key=camera, **keys)
                start = float(r[f"videos/{camera}/from_timestamp"])
            found.append((int(r["episode_index"]), int(r["length"]), data, video, start))
    else:
        lines = (
            (root / "meta" / "episodes.jsonl").read_text().splitlines()
            if (root / "meta" / "episodes.jsonl").is_file()
            else None
        )
        if lines is None:
            raise SourceError(f"{root}/meta/episodes.jsonl is missing: the episode index of a {version} dataset.")
        chunk = int(info.get("chunks_size", 1000))
        for r in sorted((json.loads(line) for line in lines if line.strip()), key=lambda r: r["episode_index"]):
            i = int(r["episode_index"])
            data = _expand(info["data_path"], root, "data_path", episode_chunk=i // chunk, episode_index=i)
            video = None
            if is_video:
                keys = {"episode_chunk": i // chunk, "episode_index": i, "video_key": camera}
                video = _expand(info["video_path"], root, "video_path", **keys)
            found.append((i, int(r["length"]), data, video, 0.0))
    episodes, tables = [], {}
    for i, length, data, video, start in found:
        if data not in tables:
            tables[data] = pq.read_table(data, columns=["episode_index", "frame_index", "timestamp", *columns])
        table = tables[data]
        rows = np.flatnonzero(table.column("episode_index").to_numpy() == i)
        frame_index = table.column("frame_index").to_numpy()[rows]
        if len(rows) != length or not np.array_equal(frame_index, np.arange(length)):
            raise SourceError(
                f"{data.relative_to(root)}: episode {i} has {len(rows)} rows with frame_index "
                f"{frame_index[:5].tolist()}..., its index says {length} steps from 0: the dataset is damaged."
            )
        times = start + table.column("timestamp").to_numpy()[rows].astype(np.float64) if video else None
        episodes.append(_Episode(i, data, rows, video, times))
    return episodes, tables


def _av():
    try:
        import av
    except ImportError as err:
        raise SourceError(
            f"Decoding LeRobot videos needs PyAV ({err}): pip install -e '.[lerobot]' (make does, in .venv)."
        ) from err
    return av


def _packet_times(video: Path) -> np.ndarray:
    """The presentation times of every frame of ``video``, sorted, from its packets (nothing is decoded)."""
    av = _av()
    try:
        with av.open(str(video)) as container:
            stream = container.streams.video[0]
            times = [float(p.pts * stream.time_base) for p in container.demux(stream) if p.pts is not None]
    except (av.error.FFmpegError, IndexError) as err:
        raise SourceError(f"{video}: not a readable video ({err}). Download it again.") from err
    return np.sort(np.asarray(times))


def _nearest(times: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the time nearest each wanted one, and how far it is."""
    right = np.clip(np.searchsorted(times, wanted), 1, len(times) - 1) if len(times) > 1 else np.zeros(len(wanted), int)
    left = np.maximum(right - 1, 0)
    pick = np.where(np.abs(times[left] - wanted) <= np.abs(times[right] - wanted), left, right)
    return pick, np.abs(times[pick] - wanted) if len(times) else np.full(len(wanted), np.inf)


def _decode(video: Path) -> tuple[np.ndarray, np.ndarray]:
    """Every frame of ``video`` as RGB ``(N, H, W, 3)`` uint8 with its time, sorted by time."""
    av = _av()
    with av.open(str(video)) as container:
        decoded = [(frame.time, frame.to_ndarray(format="rgb24")) for frame in container.decode(video=0)]
    decoded.sort(key=lambda pair: pair[0])
    return np.asarray([t for t, _ in decoded]), np.stack([f for _, f in decoded])


def _png_frames(column, rows: np.ndarray) -> np.ndarray:
    """The PNG frames of an ``image`` feature's column at ``rows``."""
    from PIL import Image

    cells = column.take(pa.array(rows)).to_pylist()
    return np.stack([np.asarray(Image.open(io.BytesIO(cell["bytes"])).convert("RGB")) for cell in cells])


def _camera(info: dict, options: LeRobotOptions) -> tuple[str, bool]:
    cameras = {k: f["dtype"] for k, f in info["features"].items() if f.get("dtype") in ("video", "image")}
    if options.camera is None:
        if len(cameras) != 1:
            raise SourceError(
                f"The dataset has {len(cameras)} cameras ({sorted(cameras)}): choose one with --source.camera."
            )
        ((name, dtype),) = cameras.items()
        return name, dtype == "video"
    if options.camera not in cameras:
        raise SourceError(
            f"--source.camera {options.camera!r} is not an image or video feature: one of {sorted(cameras)}."
        )
    return options.camera, cameras[options.camera] == "video"


def plan_lerobot(src: str | Path, options: LeRobotOptions | None = None, origin: dict | None = None) -> ImportPlan:
    """Read a LeRobot dataset's metadata and rows (and its videos' packet times) and plan its episodes. ``origin``
    (the Hub repo id and revision it was downloaded from) is recorded with the source."""
    options = options or LeRobotOptions()
    root = Path(src)
    info = _json(root / "meta" / "info.json", "every LeRobot dataset has it")
    version = info.get("codebase_version")
    if version not in VERSIONS:
        raise SourceError(
            f"{root}/meta/info.json: codebase_version {version!r} is not one this importer reads "
            f"({', '.join(VERSIONS)}): convert the dataset with LeRobot's conversion script first."
        )
    missing = [k for k in ("fps", "features", "data_path") if k not in info]
    if missing:
        raise SourceError(f"{root}/meta/info.json lacks {missing}: the dataset's metadata is damaged.")
    camera, is_video = _camera(info, options)
    features = info["features"]
    for key in (options.action_key, options.state_key):
        if key is not None and key not in features:
            raise SourceError(f"No feature {key!r} in this dataset: its features are {sorted(features)}.")
    wanted = [k for k in (options.action_key, options.state_key, "next.reward", "next.done") if k and k in features]
    episodes, tables = _episodes(root, info, camera, is_video, wanted)
    if not episodes:
        raise SourceError(f"{root} lists no episodes.")
    columns = {data: {k: _vectors(table, k) for k in wanted} for data, table in tables.items()}  # once a file
    actions, states, rewards, sizes = [], [], [], set()
    for e in episodes:
        column, where = columns[e.data], f"{e.data.relative_to(root)} (episode {e.index})"
        action = column[options.action_key][e.rows]
        state = column[options.state_key][e.rows].astype(np.float32) if options.state_key else None
        reward = column["next.reward"][e.rows, 0] if "next.reward" in wanted else np.zeros(len(e.rows))
        for label, values in (("action", action), ("state", state), ("next.reward", reward)):
            bad = (
                None if values is None else ~np.isfinite(np.asarray(values, np.float64).reshape(len(e.rows), -1)).all(1)
            )
            if bad is not None and bad.any():
                raise SourceError(
                    f"{where}: the {label} of frame_index {int(np.argmax(bad))} is not finite. "
                    "Repair or drop that episode."
                )
        if "next.done" in wanted and np.asarray(column["next.done"][e.rows[:-1]], bool).any():
            raise SourceError(f"{where}: next.done is set before the episode's last row: split it into episodes first.")
        sizes.add((action.shape[1], None if state is None else state.shape[1]))
        actions.append(action)
        states.append(state)
        rewards.append(reward.astype(np.float32))
    if len(sizes) > 1:
        raise SourceError(
            f"{root}: episodes differ in their action and state sizes ({sorted(sizes, key=str)}): "
            "a store holds one layout."
        )
    if is_video:
        packets = {v: _packet_times(v) for v in dict.fromkeys(e.video for e in episodes)}
        for e in episodes:
            _, gap = _nearest(packets[e.video], e.times)
            if (gap > options.tolerance_s).any():
                k = int(np.argmax(gap > options.tolerance_s))
                raise SourceError(
                    f"{e.video.relative_to(root)} has no frame at {e.times[k]:.4f} s (episode {e.index}, frame_index "
                    f"{k}; nearest {gap[k]:.4f} s away): the video is shorter than its rows or its timestamps are off. "
                    "Download it again, or pass --source.tolerance_s if its frames are known to be shifted."
                )
    every = np.concatenate(actions)
    if np.issubdtype(every.dtype, np.integer) and every.shape[1] == 1:
        space = ActionSpace.discrete(int(every.max()) + 1)
    else:
        low = np.full(every.shape[1], options.action_low) if options.action_low is not None else every.min(0)
        high = np.full(every.shape[1], options.action_high) if options.action_high is not None else every.max(0)
        if (every < low).any() or (every > high).any():
            raise SourceError(
                f"Actions lie in [{every.min()}, {every.max()}], outside the bounds given: pass the bounds "
                "the robot accepts with --source.action_low and --source.action_high."
            )
        space = ActionSpace.box(low, high)
    decoded: dict[Path, tuple[np.ndarray, np.ndarray]] = {}  # one file at a time: a v3.0 file holds many episodes
    pictures: dict[Path, object] = {}  # likewise, an image feature's column of the current data file

    def loader(i: int):
        def load() -> Episode:
            e = episodes[i]
            if is_video:
                if e.video not in decoded:
                    decoded.clear()
                    decoded[e.video] = _decode(e.video)
                times, frames = decoded[e.video]
                images = frames[_nearest(times, e.times)[0]]
            else:
                if e.data not in pictures:
                    pictures.clear()
                    pictures[e.data] = pq.read_table(e.data, columns=[camera]).column(camera)
                images = _png_frames(pictures[e.data], e.rows)
            n = len(e.rows)
            ended = np.zeros(n, bool)
            ended[-1] = True
            terminal = options.last_step == "terminated"
            ids = actions[i][:, 0].astype(np.int64) if space.is_discrete else actions[i].astype(np.float32)
            frames = to_frames(images, options.size, str(e.video or e.data))
            return Episode(frames, ids, rewards[i], ended & terminal, ended & ~terminal, states[i])

        return load

    files = sorted(p for p in root.rglob("*") if p.is_file() and ".cache" not in p.parts)
    size = options.size or int(features[camera]["shape"][0])
    state = None
    if options.state_key:
        names = features[options.state_key].get("names")  # a list, or a dict of lists, or nothing
        width = states[0].shape[1]
        named = isinstance(names, list) and len(names) == width and all(isinstance(n, str) for n in names)
        state = StateSpec.named(names) if named else StateSpec(width)
    return ImportPlan(
        source={
            "format": "lerobot",
            "codebase_version": version,
            "path": str(root.resolve()),
            **(origin or {}),
            "fps": info["fps"],
            "camera": camera,
            "state_key": options.state_key,
            "action_key": options.action_key,
            "last_step": options.last_step,
            "size": size,
            "fingerprint": fingerprint(files, root),
        },
        spec=EpisodeStore.frame_spec(size),
        actions=space,
        state=state,
        fps=float(info["fps"]),
        episodes=[loader(i) for i in range(len(episodes))],
        steps=sum(len(e.rows) for e in episodes),
    )
