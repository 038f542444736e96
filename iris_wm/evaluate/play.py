"""`iris-wm evaluate`: episodes of the real game with a trained agent (or the random policy), as IRIS evaluates.

The evaluation protocol (``EnvConfig.evaluation()``): a lost life does not end the episode, one no-op at
reset, the policy sampled at temperature 0.5. ``num_envs`` environments run side by side with one batched
policy call per step; episode ``i`` is seeded with ``seed + i`` whichever environment plays it, and every
episode that starts is played to its end, so the set of episodes does not depend on their lengths.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from iris_wm.data.sizes import check_sizes
from iris_wm.envs.atari import EnvConfig, make_env, resolve_game_id
from iris_wm.evaluate.scores import summarize
from iris_wm.hub.checkpoints import load_agent
from iris_wm.runtime.checks import at_least, output_file
from iris_wm.runtime.provenance import provenance


class RandomPolicy:
    """Uniformly random actions, drawn from a seeded generator."""

    def __init__(self, num_actions: int, seed: int):
        self.num_actions = num_actions
        self.rng = np.random.default_rng(seed)

    def act(self, frames, new_episode) -> np.ndarray:
        return self.rng.integers(0, self.num_actions, len(frames))


def play(
    policy, env_config: EnvConfig, episodes: int, num_envs: int, seed: int, progress: bool = True
) -> tuple[list[float], list[int]]:
    """Returns and lengths of ``episodes`` episodes, in episode order."""
    num_envs = max(1, min(num_envs, episodes))
    envs = [make_env(env_config) for _ in range(num_envs)]
    frames = np.zeros((num_envs, 3, env_config.size, env_config.size), np.uint8)
    playing = np.full(num_envs, -1)  # the episode each environment plays, -1 when idle
    new = np.ones(num_envs, bool)
    returns, lengths = np.zeros(episodes), np.zeros(episodes, np.int64)
    started = finished = 0
    bar = tqdm(total=episodes, desc=f"evaluate {env_config.game}", unit="episode", disable=not progress)
    while finished < episodes:
        for slot in np.flatnonzero(playing < 0):
            if started < episodes:
                frames[slot], _ = envs[slot].reset(seed=seed + started)
                playing[slot], new[slot] = started, True
                started += 1
        actions = np.asarray(torch.as_tensor(policy.act(frames, new)).cpu())
        new[:] = False
        for slot in np.flatnonzero(playing >= 0):
            frames[slot], reward, terminated, truncated, _ = envs[slot].step(int(actions[slot]))
            episode = playing[slot]
            returns[episode] += reward
            lengths[episode] += 1
            if terminated or truncated:
                playing[slot] = -1
                finished += 1
                bar.update(1)
    bar.close()
    for env in envs:
        env.close()
    return returns.tolist(), lengths.tolist()


def evaluate(
    out: str,
    agent: str | None = None,
    env: EnvConfig = EnvConfig.evaluation(),  # noqa: B008  (never mutated)
    episodes: int = 16,
    num_envs: int = 4,
    temperature: float = 0.5,
    seed: int = 0,
    device: str = "cpu",
) -> dict:
    """Play episodes of the real game with an agent and write their returns to a JSON file.

    Args:
        out: JSON file for the per-episode returns and their summary.
        agent: the agent: a checkpoint of the agent stage, an agent folder (as the online loop exports one), or
            a Hub id; without one the policy is uniformly random (the baseline).
        env: the environment protocol (default: IRIS evaluation, no life-loss episodes).
        episodes: episodes to play.
        num_envs: environments played side by side (one batched policy call per step).
        temperature: sampling temperature of the policy (IRIS: 0.5; 0 takes the most likely action).
        seed: episode ``i`` is seeded with ``seed + i``; also seeds the policy's sampling.
        device: where the agent runs.
    """
    at_least(1, "evaluate", episodes=episodes, num_envs=num_envs)
    at_least(0, "evaluate", temperature=temperature, seed=seed)
    output_file(out, "result file")
    env = dataclasses.replace(env, game=resolve_game_id(env.game))
    probe = make_env(env)
    num_actions = int(probe.action_space.n)
    probe.close()
    if agent is None:
        policy, name = RandomPolicy(num_actions, seed), "random"
    else:
        loaded = load_agent(agent, map_location=device)
        check_sizes(
            fix=f"Evaluate it on the game it was trained on, not {env.game}.",
            actor_critic=loaded.actor_critic,
            game={"num_actions": num_actions},
        )
        generator = torch.Generator(device).manual_seed(seed)
        policy, name = loaded.policy(temperature, 0.0, generator), agent
    start = time.perf_counter()
    returns, lengths = play(policy, env, episodes, num_envs, seed)
    result = {
        "game": env.game,
        "policy": name,
        "episodes": episodes,
        "temperature": temperature,
        "seed": seed,
        "returns": returns,
        "lengths": lengths,
        **summarize(env.game, returns),
        "seconds": time.perf_counter() - start,
        "env": env.to_dict(),
        "provenance": provenance(),
    }
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    return result
