"""Writing an import: the plan an importer made from its whole source, appended to an episode store in order.

A rerun of a killed import goes on from the episodes the store holds (each append is atomic, and the plan's order
is the source's), so it ends in the store an uninterrupted import makes. The source is recorded in the manifest
(``settings["source"]``), with a fingerprint of its files: a store is never completed from another source.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm.auto import tqdm

from iris_wm.data.episode import Episode, ObsSpec
from iris_wm.data.spaces import ActionSpace, StateSpec
from iris_wm.data.store import EpisodeStore, StepStore, StoreError
from iris_wm.runtime.checks import at_least, output_folder
from iris_wm.runtime.faults import maybe_fault
from iris_wm.runtime.files import FolderLock


class SourceError(ValueError):
    """The source cannot be imported as it is; the message names the file, the problem and the fix."""


@dataclass
class ImportPlan:
    """What an importer found: the store's layout and a loader per episode, in the order they are stored."""

    source: dict
    """Where the data comes from (format, path, options, fingerprint), kept in the store's manifest."""
    spec: ObsSpec
    actions: ActionSpace
    state: StateSpec | None
    fps: float | None
    episodes: list[Callable[[], Episode]]
    steps: int
    """Steps the episodes hold together."""
    skipped: list[str] = field(default_factory=list)
    """What the source held that could not become an episode, and why (reported, never silently dropped)."""
    store: type[StepStore] = EpisodeStore
    """The kind of store written: episodes of frames, or a token store of 0 tokens a step for states alone."""
    settings: dict = field(default_factory=dict)
    """More of the manifest's settings (a state-only token store's sizes: 0 tokens of 0 codes)."""


@dataclass
class ImportSummary:
    out: Path
    episodes: int  # appended by this run
    steps: int
    total_episodes: int  # in the store now
    total_steps: int
    skipped: list[str]


def fingerprint(files: list[Path], root: Path) -> str:
    """A short hash of the source files' names (relative to ``root``) and sizes, in order."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.relative_to(root).as_posix()}:{path.stat().st_size};".encode())
    return digest.hexdigest()[:16]


def to_frames(images: np.ndarray, size: int | None, where: str) -> np.ndarray:
    """``(T, H, W, C)`` uint8 images (C 1 or 3) -> the store's ``(T, 3, S, S)``, resized to ``size`` if given."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise SourceError(
            f"{where}: frames must be uint8 images of shape (steps, height, width, 1 or 3); got {images.dtype} of "
            f"shape {images.shape}. Name the image key with --image-key."
        )
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    height, width = images.shape[1:3]
    if size is None and height != width:
        raise SourceError(f"{where}: frames are {height}x{width}, not square: pass --size N to resize them to NxN.")
    if size is not None and (height, width) != (size, size):
        images = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in images])
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2))


def write_import(out: str | Path, plan: ImportPlan, flush_steps: int = 5_000, progress: bool = True) -> ImportSummary:
    """Append ``plan``'s episodes to the episode store at ``out`` (created if absent), ``flush_steps`` at a time."""
    at_least(1, "import", flush_steps=flush_steps)
    out = Path(out)
    output_folder(out, "store")
    out.mkdir(parents=True, exist_ok=True)
    with FolderLock(out, "store"):
        settings = {"source": plan.source, **plan.settings}
        store = plan.store.open_or_create(out, plan.spec, plan.actions, settings, plan.state, plan.fps)
        start_episodes, start_steps = store.num_episodes, store.num_steps
        if start_episodes > len(plan.episodes):
            raise StoreError(
                f"{out} holds {start_episodes} episodes, more than the {len(plan.episodes)} this source gives: it "
                "was not made by this import. Write to a new folder."
            )
        pending: list[Episode] = []
        bar = tqdm(total=plan.steps, initial=start_steps, desc="import", unit="step", disable=not progress)
        for index in range(start_episodes, len(plan.episodes)):
            maybe_fault(f"import:{index}")
            pending.append(plan.episodes[index]())
            bar.update(len(pending[-1]))
            if sum(len(e) for e in pending) >= flush_steps or index == len(plan.episodes) - 1:
                store.append(pending)
                pending = []
        bar.close()
        return ImportSummary(
            out,
            store.num_episodes - start_episodes,
            store.num_steps - start_steps,
            store.num_episodes,
            store.num_steps,
            plan.skipped,
        )
