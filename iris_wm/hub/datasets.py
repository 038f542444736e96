"""Episode and token stores as HuggingFace datasets: Parquet files, the store's manifest, a dataset card.

``export_store`` writes ``data/train-NNNNN.parquet`` (one per shard, zstd), ``iris_wm_store.json`` (the
manifest: kind, observation spec, actions, settings, provenance) and ``README.md``. ``push_store`` uploads
that folder as a dataset repository; ``load_store`` reads one back (a local folder or a Hub id) through
``datasets`` and rebuilds a store with identical rows.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from iris_wm.data.episode import Episode, ObsSpec
from iris_wm.data.manifest import layout
from iris_wm.data.shards import Manifest
from iris_wm.data.store import EpisodeStore, TokenStore, open_store
from iris_wm.hub.pretrained import PretrainedError, check_push, push_to_hub, resolve
from iris_wm.runtime.files import complete_or_absent
from iris_wm.runtime.schema import SchemaError, read

MANIFEST_FILE = "iris_wm_store.json"


class ExportManifest(Manifest):
    """``iris_wm_store.json``: a store's manifest without its shard list."""

    shards: list = []


def export_store(root: str | Path, folder: str | Path) -> Path:
    """Write the store at ``root`` as a Parquet dataset folder with its manifest and card."""
    import pyarrow.parquet as pq
    from huggingface_hub import DatasetCard, DatasetCardData

    store, folder = open_store(root), Path(folder)
    if store.num_steps == 0:
        raise ValueError(f"The store at {root} is empty: there is nothing to export.")
    (folder / "data").mkdir(parents=True, exist_ok=True)
    for i, table in enumerate(store._tables):
        pq.write_table(table, folder / "data" / f"train-{i:05d}.parquet", compression="zstd")
    manifest = {k: v for k, v in store.manifest.items() if k != "shards"}
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1) + "\n")
    settings = store.manifest["settings"]
    env = (settings.get("env") or {}).get("game") if isinstance(settings.get("env"), dict) else settings.get("env")
    data = DatasetCardData(
        tags=["iris-wm", "world-model", "reinforcement-learning", store.kind],
        configs=[{"config_name": "default", "data_files": "data/*.parquet"}],
    )
    body = [
        f"# iris-wm {store.kind} store",
        "",
        f"{store.num_episodes} episodes, {store.num_steps} steps of `{env}`; observations `{store.spec.name}` "
        f"{store.spec.dtype} {tuple(store.spec.shape)}; actions {store.action_space.describe()}"
        + (f"; a state of {store.state.size} components" if store.state else "")
        + (f"; {store.fps:g} steps a second" if store.fps else "")
        + ".",
        "",
        "One row per agent step: `episode`, `step`, the observation (flattened), `action`, (`state`,) `reward`, "
        "`terminated`, `truncated`. Rebuild the store with `iris_wm.hub.datasets.load_store`.",
        "",
        "```json",
        json.dumps(manifest, indent=1),
        "```",
        "",
    ]
    DatasetCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body)).save(folder / "README.md")
    return folder


def push_store(root: str | Path, repo_id: str, token: str | None = None, private: bool = False) -> str:
    """Export the store and upload it as a dataset repository; returns the commit URL."""
    token = check_push(repo_id, token)
    with tempfile.TemporaryDirectory() as folder:
        export_store(root, folder)
        return push_to_hub(
            folder,
            repo_id,
            token=token,
            private=private,
            repo_type="dataset",
            commit_message=f"Upload the iris-wm store {Path(root).name}",
        )


def load_store(source: str | Path, out: str | Path, revision: str | None = None, chunk: int = 256):
    """Rebuild a store at ``out`` from an exported folder or a Hub dataset repository."""
    import datasets

    folder = resolve(source, revision, "dataset")
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise PretrainedError(f"{folder} has no {MANIFEST_FILE}: it is not a store exported by iris-wm.")
    try:
        manifest = read(path, ExportManifest, "exported store manifest", "Export or download the store again.")
    except SchemaError as error:
        raise PretrainedError(str(error)) from error
    files = sorted(str(p) for p in (folder / "data").glob("*.parquet"))
    if not files:
        raise PretrainedError(f"{folder / 'data'} holds no Parquet files: the export is incomplete.")
    store_class = TokenStore if manifest.kind == "tokens" else EpisodeStore
    spec = ObsSpec(manifest.observation.name, manifest.observation.dtype, tuple(manifest.observation.shape))
    rows = datasets.load_dataset("parquet", data_files=files, split="train").with_format("numpy")
    if len(rows) != manifest.num_steps:
        raise PretrainedError(f"{folder} has {len(rows)} rows but its manifest says {manifest.num_steps}.")
    # Complete or absent: an interrupted download leaves no store that could be trained on.
    with complete_or_absent(out, "store") as partial:
        actions, state, fps = layout(manifest.model_dump())
        store = store_class.create(partial, spec, actions, manifest.settings, state, fps)
        _append_rows(store, rows, spec, chunk)
    return store_class.open(out)


def _append_rows(store, rows, spec: ObsSpec, chunk: int) -> None:
    episode_ids = rows["episode"]
    bounds = np.flatnonzero(np.diff(episode_ids)) + 1
    starts, ends = np.r_[0, bounds], np.r_[bounds, len(episode_ids)]
    for first in range(0, len(starts), chunk):
        lo, hi = int(starts[first]), int(ends[min(first + chunk, len(starts)) - 1])
        part = rows[lo:hi]
        obs = np.asarray(part[spec.name], dtype=spec.dtype).reshape(-1, *spec.shape)
        episodes = [
            Episode(
                obs[s - lo : e - lo],
                np.asarray(part["action"][s - lo : e - lo], store.action_space.dtype),
                part["reward"][s - lo : e - lo],
                part["terminated"][s - lo : e - lo],
                part["truncated"][s - lo : e - lo],
                np.asarray(part["state"][s - lo : e - lo], np.float32) if store.state else None,
            )
            for s, e in zip(starts[first : first + chunk], ends[first : first + chunk], strict=True)
        ]
        store.append(episodes)
