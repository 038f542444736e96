"""TD-MPC2's offline datasets: ``torch.save``d TensorDicts of state-based episodes, one task or many.

Each file holds ``obs (episodes, length, obs_dim)``, ``action (episodes, length, action_dim)``, ``reward`` and
``task (episodes, length)``, and may hold ``terminated``. Row ``t`` holds ``o_t`` with the action and reward that led
to it, so row 0's action and reward are NaN; a store row ``t`` holds ``o_t`` with the action and reward of source
row ``t + 1``, and an episode of ``L`` rows gives ``L - 1`` steps, terminated if ``terminated`` is set at its last
row and truncated otherwise. Datasets of many tasks pad every observation and action with zeros to the largest of
the task set: one task is imported at a time (``task``), and its trailing components that are zero at every step
of its episodes are the padding and are removed (or give the task's sizes, ``obs_dim`` and ``action_dim``).

The observations are states, not frames: the store is a token store of 0 tokens a step with the state column, which
the world-model stage trains on directly (proprioception alone; no tokenizer).

Reading these files unpickles them (``torch.load(weights_only=False)``, as TD-MPC2 does), and unpickling runs
whatever code a file carries. This project otherwise never unpickles: the importer refuses unless told to trust
the files (``trust_pickle``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from iris_wm.data.episode import Episode
from iris_wm.data.importers.writer import ImportPlan, SourceError, fingerprint
from iris_wm.data.spaces import ActionSpace, StateSpec
from iris_wm.data.store import TokenStore


@dataclass
class TDMPC2Options:
    trust_pickle: bool = False
    """Unpickle the files (they can run code when loaded): only for files from a source you trust."""
    task: int | None = None
    """The task index to import (needed where the data holds several)."""
    obs_dim: int | None = None
    """The task's observation size (default: found from its padding)."""
    action_dim: int | None = None
    """The task's action size (default: found from its padding)."""
    action_low: float = -1.0
    """Lower bound of every action component (TD-MPC2's actions lie in [-1, 1])."""
    action_high: float = 1.0
    fps: float | None = None


def _load(path: Path) -> dict[str, np.ndarray]:
    import torch

    try:
        data = torch.load(path, map_location="cpu", weights_only=False)
    except ModuleNotFoundError as err:
        raise SourceError(
            f"{path.name} needs {err.name} to be read: pip install -e '.[tdmpc2]' (make does, in .venv)."
        ) from err
    except Exception as err:  # noqa: BLE001  (any failure to unpickle: the file is not a TD-MPC2 dataset)
        raise SourceError(f"{path.name} cannot be loaded ({type(err).__name__}: {err}).") from err
    keys = list(data.keys()) if hasattr(data, "keys") else []
    missing = [k for k in ("obs", "action", "reward") if k not in keys]
    if missing:
        raise SourceError(
            f"{path.name}: no {missing} among its keys {keys}; a TD-MPC2 dataset has obs, action, reward."
        )
    return {k: np.asarray(data[k].float().numpy() if k != "task" else data[k].numpy()) for k in keys}


def _trailing_width(values: np.ndarray) -> int:
    """Components up to the last one that is nonzero somewhere (the rest is padding)."""
    used = np.flatnonzero(np.any(values.reshape(-1, values.shape[-1]) != 0, axis=0))
    return int(used[-1]) + 1 if len(used) else 0


def plan_tdmpc2(src: str | Path, options: TDMPC2Options | None = None) -> ImportPlan:
    """Load a TD-MPC2 dataset file (or a folder of ``*.pt`` files) and plan the chosen task's episodes."""
    options = options or TDMPC2Options()
    src = Path(src)
    paths = sorted(src.glob("*.pt")) if src.is_dir() else [src] if src.is_file() else []
    if not paths:
        raise SourceError(f"{src} is neither a .pt file nor a folder of them: give TD-MPC2's dataset file(s).")
    if not options.trust_pickle:
        raise SourceError(
            f"TD-MPC2's datasets are pickles: loading {paths[0].name} runs any code it carries, which this project "
            "otherwise never allows. If the files come from a source you trust (e.g. the TD-MPC2 authors' release), "
            "pass --source.trust_pickle true."
        )
    parts = [_load(p) for p in paths]
    obs = np.concatenate([p["obs"] for p in parts])
    action = np.concatenate([p["action"] for p in parts])
    reward = np.concatenate([p["reward"] for p in parts]).reshape(obs.shape[:2])
    if obs.ndim != 3 or action.ndim != 3 or action.shape[:2] != obs.shape[:2]:
        raise SourceError(
            f"Expected obs (episodes, length, size) and action of the same episodes and length; got {obs.shape} and "
            f"{action.shape}. Pixel-based TD-MPC2 data is not supported."
        )
    task = np.concatenate([p["task"] for p in parts]).reshape(obs.shape[:2]) if "task" in parts[0] else None
    terminated = (
        np.concatenate([p["terminated"] for p in parts]).reshape(obs.shape[:2]) if "terminated" in parts[0] else None
    )
    chosen = np.arange(len(obs))
    if task is not None:
        if (task != task[:, :1]).any():
            raise SourceError(f"{src}: an episode changes task midway: the file is damaged.")
        tasks, counts = np.unique(task[:, 0], return_counts=True)
        if options.task is None and len(tasks) > 1:
            listing = ", ".join(f"{int(t)} ({c} episodes)" for t, c in zip(tasks, counts, strict=True))
            raise SourceError(
                f"{src} holds several tasks: {listing}. Choose one with --source.task (a store holds one)."
            )
        pick = int(tasks[0]) if options.task is None else options.task
        chosen = np.flatnonzero(task[:, 0] == pick)
        if len(chosen) == 0:
            raise SourceError(f"{src} has no episode of task {pick}: its tasks are {tasks.tolist()}.")
    if obs.shape[1] < 2:
        raise SourceError(f"{src}: episodes of {obs.shape[1]} row hold no step (row 0 has no action).")
    taken = action[chosen, 1:]
    for label, values in (("obs", obs[chosen]), ("action", taken), ("reward", reward[chosen, 1:])):
        bad = ~np.isfinite(values)
        if bad.any():
            e, t = np.argwhere(bad.reshape(len(chosen), values.shape[1], -1).any(-1))[0]
            row = t + (0 if label == "obs" else 1)
            raise SourceError(f"{src}: the {label} of episode {int(chosen[e])}, row {row}, is not finite.")
    obs_dim = options.obs_dim or _trailing_width(obs[chosen])
    action_dim = options.action_dim or _trailing_width(taken)
    if obs_dim < 1 or action_dim < 1 or obs_dim > obs.shape[2] or action_dim > action.shape[2]:
        raise SourceError(
            f"Observation size {obs_dim} and action size {action_dim} must lie in 1..{obs.shape[2]} and "
            f"1..{action.shape[2]}: set --source.obs_dim and --source.action_dim to the task's sizes."
        )
    if (taken[..., :action_dim] < options.action_low).any() or (taken[..., :action_dim] > options.action_high).any():
        raise SourceError(
            f"Actions outside [{options.action_low}, {options.action_high}]: pass the task's bounds with "
            "--source.action_low and --source.action_high."
        )
    length = obs.shape[1] - 1

    def loader(e: int):
        def load() -> Episode:
            ends = np.zeros(length, bool)
            ends[-1] = True
            done = bool(terminated[e, -1]) if terminated is not None else False
            return Episode(
                np.zeros((length, 0), np.int16),
                action[e, 1:, :action_dim].astype(np.float32),
                reward[e, 1:].astype(np.float32),
                ends & done,
                ends & (not done),
                obs[e, :-1, :obs_dim].astype(np.float32),
            )

        return load

    return ImportPlan(
        source={
            "format": "tdmpc2",
            "path": str(src.resolve()),
            "files": len(paths),
            "fingerprint": fingerprint(paths, src if src.is_dir() else src.parent),
            "task": None if task is None else int(task[chosen[0], 0]),
            "obs_dim": obs_dim,
            "action_dim": action_dim,
        },
        spec=TokenStore.token_spec(0),
        actions=ActionSpace.box(np.full(action_dim, options.action_low), np.full(action_dim, options.action_high)),
        state=StateSpec.named([f"obs.{i}" for i in range(obs_dim)]),
        fps=options.fps,
        episodes=[loader(int(e)) for e in chosen],
        steps=len(chosen) * length,
        store=TokenStore,
        settings={"tokens_per_frame": 0, "vocab_size": 0},
    )
