"""Small LeRobot datasets written by the tests themselves, in codebase versions v3.0 and v2.1: Parquet rows, frames
as MP4 videos (H.264 or AV1 through PyAV) or PNGs in the Parquet, the metadata LeRobot writes."""

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

CAMERA = "observation.images.cam"


def smooth_episodes(lengths, size=64, seed=0):
    """Episodes of a bright blob moving over a gradient (video codecs keep such frames at over 40 dB), with
    3-component states, 2-component actions in [-1, 1] and rewards."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    episodes = []
    for T in lengths:
        centres = rng.uniform(0.2, 0.8, 2) + np.cumsum(rng.normal(0, 0.08, (T, 2)), 0)
        frames = []
        for cy, cx in centres:
            blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 0.03)
            frames.append(
                np.stack([60 + 150 * blob, 40 + 60 * xx + 100 * blob, 80 + 60 * yy + 100 * blob], -1).astype(np.uint8)
            )
        episodes.append(
            dict(
                frames=np.stack(frames),
                state=rng.normal(size=(T, 3)).astype(np.float32),
                action=rng.uniform(-1, 1, (T, 2)).astype(np.float32),
                reward=rng.normal(size=T).astype(np.float32),
            )
        )
    return episodes


def encode_video(path: Path, frames: np.ndarray, fps: int, codec: str) -> None:
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "8"}
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(image).save(out, format="PNG")
    return out.getvalue()


def _rows(episodes, indices, fps, first_index, camera_dtype):
    columns = {
        k: []
        for k in (
            "observation.state",
            "action",
            "next.reward",
            "next.done",
            "timestamp",
            "frame_index",
            "episode_index",
            "index",
            "task_index",
        )
    }
    images, index = [], first_index
    for i in indices:
        e = episodes[i]
        T = len(e["action"])
        columns["observation.state"] += list(e["state"])
        columns["action"] += list(e["action"])
        columns["next.reward"] += list(e["reward"])
        columns["next.done"] += [t == T - 1 for t in range(T)]
        columns["timestamp"] += list((np.arange(T) / fps).astype(np.float32))
        columns["frame_index"] += list(range(T))
        columns["episode_index"] += [i] * T
        columns["index"] += list(range(index, index + T))
        columns["task_index"] += [0] * T
        index += T
        if camera_dtype == "image":
            images += [{"bytes": _png(f), "path": None} for f in e["frames"]]
    table = {
        "observation.state": pa.array(
            [list(map(float, v)) for v in columns["observation.state"]], pa.list_(pa.float32())
        ),
        "action": pa.array([list(map(float, v)) for v in columns["action"]], pa.list_(pa.float32())),
        "next.reward": pa.array(columns["next.reward"], pa.float32()),
        "next.done": pa.array(columns["next.done"], pa.bool_()),
        "timestamp": pa.array(columns["timestamp"], pa.float32()),
        **{k: pa.array(columns[k], pa.int64()) for k in ("frame_index", "episode_index", "index", "task_index")},
    }
    if camera_dtype == "image":
        table[CAMERA] = pa.array(images, pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    return pa.table(table), index


def _features(episodes, camera_dtype, fps):
    h, w = episodes[0]["frames"].shape[1:3]
    return {
        CAMERA: {"dtype": camera_dtype, "shape": [h, w, 3], "names": ["height", "width", "channels"]},
        "observation.state": {
            "dtype": "float32",
            "shape": [len(episodes[0]["state"][0])],
            "names": ["x", "y", "z"][: len(episodes[0]["state"][0])],
        },
        "action": {"dtype": "float32", "shape": [2], "names": ["a", "b"]},
        "next.reward": {"dtype": "float32", "shape": [1], "names": None},
        "next.done": {"dtype": "bool", "shape": [1], "names": None},
        **{k: {"dtype": "int64", "shape": [1], "names": None} for k in ("frame_index", "episode_index", "index")},
        "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    }


def write_lerobot(root: Path, episodes, version="v3.0", camera_dtype="video", codec="libx264", fps=20, per_file=2):
    """``episodes`` as a LeRobot dataset at ``root``; v3.0 packs ``per_file`` episodes into each data and video
    file (episodes after the first of a file start at a nonzero from_timestamp)."""
    root.mkdir(parents=True)
    (root / "meta").mkdir()
    info = {
        "codebase_version": version,
        "fps": fps,
        "chunks_size": 1000,
        "total_episodes": len(episodes),
        "features": _features(episodes, camera_dtype, fps),
    }
    if version == "v3.0":
        info["data_path"] = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
        info["video_path"] = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
        meta, index = [], 0
        for f, first in enumerate(range(0, len(episodes), per_file)):
            indices = list(range(first, min(first + per_file, len(episodes))))
            table, end = _rows(episodes, indices, fps, index, camera_dtype)
            (root / "data" / "chunk-000").mkdir(parents=True, exist_ok=True)
            pq.write_table(table, root / "data" / "chunk-000" / f"file-{f:03d}.parquet")
            start = 0.0
            for i in indices:
                T = len(episodes[i]["action"])
                row = {
                    "episode_index": i,
                    "length": T,
                    "tasks": ["move"],
                    "data/chunk_index": 0,
                    "data/file_index": f,
                    "dataset_from_index": index,
                    "dataset_to_index": index + T,
                }
                if camera_dtype == "video":
                    row |= {
                        f"videos/{CAMERA}/chunk_index": 0,
                        f"videos/{CAMERA}/file_index": f,
                        f"videos/{CAMERA}/from_timestamp": start,
                        f"videos/{CAMERA}/to_timestamp": start + T / fps,
                    }
                meta.append(row)
                index, start = index + T, start + T / fps
            if camera_dtype == "video":
                frames = np.concatenate([episodes[i]["frames"] for i in indices])
                encode_video(root / "videos" / CAMERA / "chunk-000" / f"file-{f:03d}.mp4", frames, fps, codec)
        (root / "meta" / "episodes" / "chunk-000").mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(meta), root / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
    else:
        info["data_path"] = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
        info["video_path"] = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
        lines, index = [], 0
        for i, e in enumerate(episodes):
            table, index = _rows(episodes, [i], fps, index, camera_dtype)
            (root / "data" / "chunk-000").mkdir(parents=True, exist_ok=True)
            pq.write_table(table, root / "data" / "chunk-000" / f"episode_{i:06d}.parquet")
            if camera_dtype == "video":
                encode_video(root / "videos" / "chunk-000" / CAMERA / f"episode_{i:06d}.mp4", e["frames"], fps, codec)
            lines.append(json.dumps({"episode_index": i, "tasks": ["move"], "length": len(e["action"])}))
        (root / "meta" / "episodes.jsonl").write_text("\n".join(lines) + "\n")
    (root / "meta" / "info.json").write_text(json.dumps(info, indent=1))
    return root


def pushed_blob_episodes(count: int, length: int, size: int = 32, seed: int = 0):
    """Episodes of a blob that the actions push: each action in [-1, 1]^2 moves it by a tenth of the frame."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    episodes = []
    for _ in range(count):
        position = rng.uniform(0.3, 0.7, 2)
        actions = rng.uniform(-1, 1, (length, 2)).astype(np.float32)
        frames, states = [], []
        for action in actions:
            blob = np.exp(-((yy - position[0]) ** 2 + (xx - position[1]) ** 2) / 0.01)
            frames.append(np.stack([40 + 200 * blob] * 3, -1).astype(np.uint8))
            states.append(position.astype(np.float32))
            position = np.clip(position + 0.1 * action, 0.1, 0.9)
        episodes.append(
            dict(frames=np.stack(frames), state=np.stack(states), action=actions, reward=np.zeros(length, np.float32))
        )
    return episodes
