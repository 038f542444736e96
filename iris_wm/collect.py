"""Collect episodes from an Atari environment into an episode store."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from iris_wm.data.store import Episode, EpisodeStore
from iris_wm.env import EnvConfig, make_env, resolve_game_id
from iris_wm.faults import maybe_fault

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


class EpisodeBuffer:
    def __init__(self):
        self.obs, self.actions, self.rewards, self.terminated, self.truncated = [], [], [], [], []

    def add(self, obs, action, reward, terminated, truncated):
        self.obs.append(obs)
        self.actions.append(action)
        self.rewards.append(reward)
        self.terminated.append(terminated)
        self.truncated.append(truncated)

    def __len__(self):
        return len(self.actions)

    def to_episode(self) -> Episode:
        return Episode(np.stack(self.obs), np.array(self.actions, np.int64), np.array(self.rewards, np.float32),
                       np.array(self.terminated, bool), np.array(self.truncated, bool))  # fmt: skip


def _reseed(env, seed: int, stored_episodes: int) -> np.ndarray:
    """Start a new game seeded by ``(seed, episodes stored)``. Collection does this after every append, so a
    run killed at any point and rerun continues exactly as the uninterrupted run did (the episodes that were
    only in memory are collected again, identically)."""
    rng = np.random.default_rng([seed, stored_episodes])
    env.action_space.seed(int(rng.integers(2**31)))
    obs, _ = env.reset(seed=int(rng.integers(2**31)))
    return obs


def collect(
    out: str | Path,
    steps: int,
    env_config: EnvConfig | None = None,
    seed: int = 0,
    policy: Policy | None = None,
    flush_steps: int = 5_000,
    progress: bool = True,
) -> CollectSummary:
    """Run the environment until the store at ``out`` holds at least ``steps`` steps.

    The store is created if needed; an existing one must have been collected with the same environment
    settings. Because the target is the store's total, rerunning the same command after an interruption
    continues where the stored data ends. Whole episodes are appended every ``flush_steps`` steps, and each
    append is followed by a new game seeded from ``(seed, episodes stored)``; so a rerun after a crash
    collects exactly what the uninterrupted run would have (for the random policy, or any deterministic
    one). When the target is reached mid-episode, that episode is stored with its last step marked
    ``truncated``. Without a ``policy`` actions are uniformly random.
    """
    env_config = dataclasses.replace(env_config or EnvConfig(), game=resolve_game_id((env_config or EnvConfig()).game))
    env = make_env(env_config)
    settings = {"env": env_config.to_dict(), "action_meanings": env.unwrapped.get_action_meanings()}
    store = EpisodeStore.open_or_create(out, EpisodeStore.frame_spec(env_config.size), env.action_space.n, settings)
    start_steps, start_episodes = store.num_steps, store.num_episodes
    todo = steps - start_steps
    returns: list[float] = []
    if todo <= 0:
        env.close()
        return CollectSummary(Path(out), 0, 0, store.num_steps, store.num_episodes, returns)

    obs = _reseed(env, seed, start_episodes)
    pending: list[Episode] = []
    buffer = EpisodeBuffer()
    bar = tqdm(total=todo, desc=f"collect {env_config.game}", unit="step", disable=not progress)
    for i in range(todo):
        maybe_fault(f"collect:{i}")
        action = int(policy(obs)) if policy else int(env.action_space.sample())
        next_obs, reward, terminated, truncated, _ = env.step(action)
        last = i == todo - 1
        buffer.add(obs, action, float(reward), bool(terminated), bool(truncated or (last and not terminated)))
        obs = next_obs
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
                    obs = _reseed(env, seed, store.num_episodes)
            elif not last:
                obs, _ = env.reset()
    bar.close()
    env.close()
    return CollectSummary(Path(out), store.num_steps - start_steps, store.num_episodes - start_episodes,
                          store.num_steps, store.num_episodes, returns)  # fmt: skip
