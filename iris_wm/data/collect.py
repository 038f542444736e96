"""Collect episodes from an Atari environment into an episode store."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import gymnasium as gym
import numpy as np
from tqdm.auto import tqdm

from iris_wm.data.episode import Episode, EpisodeBuffer
from iris_wm.data.spaces import ActionSpace, StateSpec
from iris_wm.data.store import EpisodeStore, StoreError
from iris_wm.envs.atari import EnvConfig, make_env, resolve_game_id
from iris_wm.runtime.checks import at_least, output_folder
from iris_wm.runtime.errors import ConfigError
from iris_wm.runtime.faults import maybe_fault
from iris_wm.runtime.files import FolderLock

Policy = Callable[[np.ndarray], int]
"""Maps one observation ``uint8 (3, H, W)`` to an action index."""


@dataclass
class CollectSummary:
    store: Path
    steps_added: int
    episodes_added: int
    total_steps: int
    total_episodes: int
    returns: list[float]  # undiscounted return of every episode added


def _reseed(env, seed: int, stored_episodes: int) -> tuple[np.ndarray, dict]:
    """Start a new game seeded by ``(seed, episodes stored)``. Collection does this after every append, so a
    run killed at any point and rerun continues exactly as the uninterrupted run did (the episodes that were
    only in memory are collected again, identically)."""
    rng = np.random.default_rng([seed, stored_episodes])
    env.action_space.seed(int(rng.integers(2**31)))
    return env.reset(seed=int(rng.integers(2**31)))


def collect(
    out: str | Path,
    steps: int,
    env_config: EnvConfig | None = None,
    seed: int = 0,
    policy: Policy | None = None,
    flush_steps: int = 5_000,
    progress: bool = True,
    progress_position: int = 0,
    exclusive: bool = True,
) -> CollectSummary:
    """Run the environment until the store at ``out`` holds at least ``steps`` steps.

    The store is created if needed; an existing one must have been collected with the same environment
    settings. Because the target is the store's total, rerunning the same command after an interruption
    continues where the stored data ends. Whole episodes are appended every ``flush_steps`` steps, and each
    append is followed by a new game seeded from ``(seed, episodes stored)``; so a rerun after a crash
    collects exactly what the uninterrupted run would have (for the random policy, or any deterministic
    one). When the target is reached mid-episode, that episode is stored with its last step marked
    ``truncated``. Without a ``policy`` actions are uniformly random.

    One process writes a store at a time: ``out`` is locked for the whole call (``exclusive``; the workers of
    :func:`collect_parallel` write share 0 under their parent's lock), and a second collection into it is refused
    at once. A parallel collection's unfinished plan beside ``out`` is refused too: finish it with its workers.
    """
    out = Path(out)
    _check_arguments(steps, seed, flush_steps, 1)
    _make_folder(out)
    if not exclusive:
        return _collect(out, steps, env_config, seed, policy, flush_steps, progress, progress_position)
    with FolderLock(out, "episode store"):
        plan_file = _plan_file(out)
        if plan_file.exists():
            raise StoreError(
                f"{plan_file} records an unfinished parallel collection into {out} "
                f"({plan_file.read_text().strip()}); rerun it with the same number of workers to finish and merge "
                "its shares. Collecting into the store without them would leave their episodes out of it."
            )
        return _collect(out, steps, env_config, seed, policy, flush_steps, progress, progress_position)


MAX_FLUSH_STEPS = 100_000
"""Steps held in memory before an append: 100,000 64x64 frames are 1.2 GB, and a crash loses what is held."""


def store_layout(env) -> tuple[ActionSpace, StateSpec | None, float | None]:
    """What an environment's episodes are in a store: its action space, its state (``state_names`` on the env, the
    values in ``info["state"]``) and its control frequency (``metadata["render_fps"]``) where it has them."""
    if isinstance(env.action_space, gym.spaces.Discrete):
        return ActionSpace.discrete(int(env.action_space.n)), None, None
    space = ActionSpace.box(env.action_space.low, env.action_space.high)
    names = getattr(env.unwrapped, "state_names", None)
    return space, StateSpec.named(names) if names else None, env.metadata.get("render_fps")


def store_settings(env_config: EnvConfig, env) -> dict:
    """Where a store's episodes come from, as its manifest records them: the environment's settings, and an Atari
    game's action meanings."""
    settings = {"env": env_config.to_dict()}
    if env_config.suite == "atari":
        settings["action_meanings"] = env.unwrapped.get_action_meanings()
    return settings


def _check_arguments(steps: int, seed: int, flush_steps: int, workers: int) -> None:
    at_least(1, "collect", steps=steps, flush_steps=flush_steps, workers=workers)
    at_least(0, "collect", seed=seed)
    if flush_steps > MAX_FLUSH_STEPS:
        raise ConfigError(
            f"collect: flush_steps={flush_steps:,} would hold that many frames in memory before the first write "
            f"(and lose them all in a crash); use at most {MAX_FLUSH_STEPS:,} (the default, 5,000, costs nothing)."
        )


def _make_folder(out: Path) -> None:
    output_folder(out, "episode store")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise StoreError(
            f"Cannot create the store folder {out} ({err.strerror or err}): choose a folder you can write to."
        ) from err


def _collect(out, steps, env_config, seed, policy, flush_steps, progress, progress_position) -> CollectSummary:
    env_config = env_config or EnvConfig()
    if env_config.suite == "atari":
        env_config = dataclasses.replace(env_config, game=resolve_game_id(env_config.game))
    env = make_env(env_config)
    space, state, fps = store_layout(env)
    settings = store_settings(env_config, env)
    frames = EpisodeStore.frame_spec(env_config.size)
    store = EpisodeStore.open_or_create(out, frames, space, settings, state, fps)
    start_steps, start_episodes = store.num_steps, store.num_episodes
    todo = steps - start_steps
    returns: list[float] = []
    if todo <= 0:
        env.close()
        return CollectSummary(Path(out), 0, 0, store.num_steps, store.num_episodes, returns)

    obs, info = _reseed(env, seed, start_episodes)
    pending: list[Episode] = []
    buffer = EpisodeBuffer()
    bar = tqdm(
        total=todo, desc=f"collect {env_config.game}", unit="step", disable=not progress, position=progress_position
    )
    for i in range(todo):
        maybe_fault(f"collect:{i}")
        action = policy(obs) if policy else env.action_space.sample()
        action = int(action) if space.is_discrete else np.asarray(action, np.float32)
        next_obs, reward, terminated, truncated, next_info = env.step(action)
        last = i == todo - 1
        ended = bool(truncated or (last and not terminated))
        buffer.add(obs, action, float(reward), bool(terminated), ended, info.get("state") if state else None)
        obs, info = next_obs, next_info
        bar.update(1)
        if terminated or truncated or last:
            returns.append(float(np.sum(buffer.rewards)))
            pending.append(buffer.to_episode())
            buffer = EpisodeBuffer()
            if sum(len(e) for e in pending) >= flush_steps or last:
                store.append(pending)
                pending = []
                bar.set_postfix(episodes=store.num_episodes)
                if not last:
                    obs, info = _reseed(env, seed, store.num_episodes)
            elif not last:
                obs, info = env.reset()
    bar.close()
    env.close()
    return CollectSummary(
        Path(out),
        store.num_steps - start_steps,
        store.num_episodes - start_episodes,
        store.num_steps,
        store.num_episodes,
        returns,
    )


def part_seed(seed: int, part: int) -> int:
    """Seed of share ``part`` of a parallel collection. Share 0 keeps ``seed``, so it is exactly the beginning of
    what a serial ``collect`` with that seed stores; the others draw theirs from ``(seed, part)``."""
    return seed if part == 0 else int(np.random.SeedSequence([seed, part]).generate_state(1)[0] >> 1)


def _plan_file(out: Path) -> Path:
    return out.with_name(f"{out.name}.parts.json")


def _read_plan(plan_file: Path) -> dict:
    try:
        plan = json.loads(plan_file.read_text())
    except (OSError, ValueError) as error:
        plan = error
    if not (isinstance(plan, dict) and isinstance(plan.get("workers"), int)):
        raise StoreError(
            f"{plan_file}, the plan of an unfinished parallel collection, is damaged ({plan}). Delete it and the "
            f"{plan_file.name.removesuffix('.parts.json')}.part* folders beside it, then collect again."
        )
    return plan


def _part_folder(out: Path, part: int) -> Path:
    return out.with_name(f"{out.name}.part{part}")


def _remove_parts(out: Path, plan_file: Path) -> None:
    """Remove the part stores of the plan in ``plan_file``, then the plan (last, so a crash here is finished by a
    rerun)."""
    if not plan_file.exists():
        return
    for w in range(1, _read_plan(plan_file)["workers"]):
        shutil.rmtree(_part_folder(out, w), ignore_errors=True)
    plan_file.unlink()


def _collect_share(args: tuple) -> CollectSummary:
    folder, steps, env_config, seed, flush_steps, progress, position = args
    # Share 0 is the parent's own store, which the parent holds locked for the whole command.
    return collect(
        folder,
        steps,
        env_config,
        seed=seed,
        flush_steps=flush_steps,
        progress=progress,
        progress_position=position,
        exclusive=position != 0,
    )


def collect_parallel(
    out: str | Path,
    steps: int,
    env_config: EnvConfig | None = None,
    seed: int = 0,
    workers: int = 2,
    flush_steps: int = 5_000,
    progress: bool = True,
) -> CollectSummary:
    """:func:`collect` in ``workers`` processes: the emulator runs on one core, so 2 workers on 2 cores take
    about half the time (random policy only).

    The steps are split into ``workers`` shares. Share 0 goes into ``out`` itself, exactly what a serial
    collection with ``seed`` stores first; share ``w`` goes into a store beside it, ``<out>.part<w>``, seeded from
    ``(seed, w)``. Then the shares' episodes are appended to ``out`` in order, and the part stores removed. Every
    stage resumes: a rerun finishes the shares, then appends only the episodes ``out`` does not hold yet (it
    counts its steps), so a crash anywhere ends in the same store as an uninterrupted run. The plan (steps,
    workers, seed) is kept in ``<out>.parts.json`` until the end, and a rerun with another plan is refused.
    """
    out = Path(out)
    _check_arguments(steps, seed, flush_steps, workers)
    _make_folder(out)
    with FolderLock(out, "episode store"):
        return _collect_parallel(out, steps, env_config, seed, workers, flush_steps, progress)


def _collect_parallel(out, steps, env_config, seed, workers, flush_steps, progress) -> CollectSummary:
    shares = [steps // workers + (w < steps % workers) for w in range(workers)]
    plan_file = _plan_file(out)
    plan = {"steps": steps, "workers": workers, "seed": seed, "shares": shares}
    if plan_file.exists() and _read_plan(plan_file) != plan:
        raise StoreError(
            f"{plan_file} records an unfinished parallel collection with other settings "
            f"({plan_file.read_text().strip()}); rerun it with those (the same steps, seed and number of workers) "
            f"to finish it, or delete it and the {out.name}.part* folders to start the shares again."
        )
    start = EpisodeStore.open(out, verify="size") if (out / "manifest.json").exists() else None
    start_steps, start_episodes = (start.num_steps, start.num_episodes) if start else (0, 0)
    if start_steps >= steps:
        _remove_parts(out, plan_file)  # a crash after the last append left them
        # Nothing to do; this checks the settings (the store is locked by this command already).
        return collect(out, steps, env_config, seed=seed, progress=False, exclusive=False)
    out.parent.mkdir(parents=True, exist_ok=True)
    plan_file.write_text(json.dumps(plan))
    folders = [out] + [_part_folder(out, w) for w in range(1, workers)]
    jobs = [(folders[w], shares[w], env_config, part_seed(seed, w), flush_steps, progress, w) for w in range(workers)]
    try:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            summaries = list(pool.map(_collect_share, jobs))
    except BrokenProcessPool as error:
        raise StoreError(
            f"A collection worker died ({error}). Every episode it appended is kept: rerun the same "
            "command to finish the shares and merge them."
        ) from error
    store = EpisodeStore.open(out)
    for w in range(1, workers):
        _append_share(store, EpisodeStore.open(folders[w]), offset=sum(shares[:w]), flush_steps=flush_steps, index=w)
    _remove_parts(out, plan_file)
    return CollectSummary(
        out,
        store.num_steps - start_steps,
        store.num_episodes - start_episodes,
        store.num_steps,
        store.num_episodes,
        [r for s in summaries for r in s.returns],
    )


def _append_share(store: EpisodeStore, part: EpisodeStore, offset: int, flush_steps: int, index: int) -> None:
    """Append ``part``'s episodes to ``store`` after its first ``offset`` steps, skipping those already there."""
    have = store.num_steps - offset
    lengths = np.cumsum(part.episode_lengths)
    if have < 0 or (have and have not in lengths):
        raise StoreError(
            f"{store.root} holds {store.num_steps} steps, which is not the end of an episode of "
            f"{part.root} after its first {offset}; the stores do not belong together. Collect again "
            "into a new folder."
        )
    pending: list[Episode] = []
    chunk = 0
    for position in range(int(np.searchsorted(lengths, have, side="right")), part.num_episodes):
        pending.append(part.episode(position))
        if sum(len(e) for e in pending) >= flush_steps or position == part.num_episodes - 1:
            store.append(pending)
            pending = []
            maybe_fault(f"collect-merge:{index}:{chunk}")
            chunk += 1
