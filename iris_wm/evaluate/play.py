"""`iris-wm evaluate`: episodes of the real game with a trained agent (or the random policy), as IRIS evaluates.

The evaluation protocol (``EnvConfig.evaluation()``): a lost life does not end the episode, one no-op at
reset, the policy sampled at temperature 0.5. ``num_envs`` environments run side by side with one batched
policy call per step; episode ``i`` is seeded with ``seed + i`` whichever environment plays it, and every
episode that starts is played to its end, so the set of episodes does not depend on their lengths.

``record`` keeps what was played as an episode store (frames, actions, rewards, ends, and the state where the task
has one): data from a trained agent or a planner rather than the random policy, for the tokenizer and world model
to learn from.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import shutil
import time
from collections.abc import Callable, Collection
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from iris_wm.agent.emulator_planning import EmulatorMPCPolicy
from iris_wm.agent.mpc import MPCPolicy
from iris_wm.agent.planning import PlannerConfig
from iris_wm.data.collect import store_layout, store_settings
from iris_wm.data.episode import Episode, EpisodeBuffer
from iris_wm.data.sizes import action_sizes, check_sizes
from iris_wm.data.spaces import ActionSpace
from iris_wm.data.store import EpisodeStore
from iris_wm.envs.atari import EnvConfig, make_env, resolve_game_id
from iris_wm.evaluate.scores import summarize
from iris_wm.hub.checkpoints import load_agent, load_model
from iris_wm.runtime.checks import at_least, output_file, output_folder
from iris_wm.runtime.errors import ConfigError
from iris_wm.runtime.files import write_json_atomic
from iris_wm.runtime.provenance import provenance


class RandomPolicy:
    """Uniformly random actions, drawn from a seeded generator: ids in ``[0, n)``, or vectors uniform in a box."""

    def __init__(self, actions: int | ActionSpace, seed: int):
        self.space = ActionSpace.of(actions)
        self.rng = np.random.default_rng(seed)

    def act(self, frames, new_episode, states=None) -> np.ndarray:
        if self.space.is_discrete:
            return self.rng.integers(0, self.space.n, len(frames))
        low, high = np.asarray(self.space.low), np.asarray(self.space.high)
        return (low + self.rng.random((len(frames), len(low))) * (high - low)).astype(np.float32)


def play(
    policy,
    env_config: EnvConfig,
    episodes: int,
    num_envs: int,
    seed: int,
    progress: bool = True,
    record: Callable[[int, Episode], None] | None = None,
    skip: Collection[int] = (),
    ended: Callable[[int, float, int], None] | None = None,
) -> tuple[list[float], list[int]]:
    """Returns and lengths of ``episodes`` episodes, in episode order; ``record(i, episode)`` receives each episode's
    steps as it ends (they end in an order fixed by the seeds, not in episode order), ``ended(i, return, length)``
    its figures. The episodes in ``skip`` are not played (their return and length are left 0): an interrupted
    evaluation resumed. A policy whose ``act`` takes ``active`` is told which environments play an episode, so
    that it spends nothing on the idle ones at the end."""
    skipped = set(skip)
    order = [i for i in range(episodes) if i not in skipped]
    num_envs = max(1, min(num_envs, len(order)))
    envs = [make_env(env_config) for _ in range(num_envs)]
    space, state_spec, _ = store_layout(envs[0])
    frames = np.zeros((num_envs, 3, env_config.size, env_config.size), np.uint8)
    states = np.zeros((num_envs, state_spec.size), np.float32) if state_spec else None
    playing = np.full(num_envs, -1)  # the episode each environment plays, -1 when idle
    new = np.ones(num_envs, bool)
    returns, lengths = np.zeros(episodes), np.zeros(episodes, np.int64)
    buffers = [EpisodeBuffer() for _ in range(num_envs)] if record is not None else None
    started = finished = 0
    told = "active" in inspect.signature(policy.act).parameters
    if hasattr(policy, "bind_envs"):  # a planner whose model is the emulator itself snapshots these
        policy.bind_envs(envs)
    bar = tqdm(total=len(order), desc=f"evaluate {env_config.game}", unit="episode", disable=not progress)
    while finished < len(order):
        for slot in np.flatnonzero(playing < 0):
            if started < len(order):
                frames[slot], info = envs[slot].reset(seed=seed + order[started])
                if states is not None:
                    states[slot] = info["state"]
                playing[slot], new[slot] = order[started], True
                started += 1
        extra = {"active": playing >= 0} if told else {}
        chosen = policy.act(frames, new, states, **extra) if states is not None else policy.act(frames, new, **extra)
        actions = np.asarray(torch.as_tensor(chosen).cpu())
        new[:] = False
        for slot in np.flatnonzero(playing >= 0):
            action = int(actions[slot]) if space.is_discrete else actions[slot].astype(np.float32)
            if buffers is not None:  # the step's own frame and state, before the step replaces them
                seen = (frames[slot].copy(), None if states is None else states[slot].copy())
            frames[slot], reward, terminated, truncated, info = envs[slot].step(action)
            if buffers is not None:
                buffers[slot].add(seen[0], action, float(reward), bool(terminated), bool(truncated), seen[1])
            if states is not None:
                states[slot] = info["state"]
            episode = playing[slot]
            returns[episode] += reward
            lengths[episode] += 1
            if terminated or truncated:
                playing[slot] = -1
                finished += 1
                if ended is not None:
                    ended(int(episode), float(returns[episode]), int(lengths[episode]))
                if buffers is not None:
                    record(int(episode), buffers[slot].to_episode())
                    buffers[slot] = EpisodeBuffer()
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
    planner: PlannerConfig | None = None,
    world_model: str | None = None,
    record: str | None = None,
    resume: bool = False,
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
        planner: plan with the agent's world model instead of acting with its actor-critic (model-predictive
            control, :mod:`iris_wm.agent.planning`: CEM for discrete actions, MPPI for a box); with its ``model``
            ``emulator``, plan with the Atari emulator itself as a perfect model (with the agent's actor prior and
            critic where an agent is given; none is needed).
        world_model: with a planner, plan in this world model (a checkpoint, a folder, a Hub id; an ensemble built by
            ``iris-wm ensemble build`` included) instead of the agent's own.
        record: also write the episodes played to a new episode store in this folder (in the order they end; its
            manifest names the policy). It appears whole when the last episode ends: an interrupted evaluation leaves
            ``<record>.partial``, which the next one with the same ``record`` starts afresh.
        resume: finish an interrupted evaluation. Each episode's return is saved in ``<out>.partial`` as it ends;
            with ``resume`` the episodes saved there are not played again (the settings must be the same), without
            it an existing ``<out>.partial`` is refused rather than overwritten. Episode ``i`` is still seeded with
            ``seed + i``; the policy's own draws get a seed of their own (from ``seed`` and the number of episodes
            done; the result's ``policy_seed``), so a resumed evaluation is another draw of the same protocol, never
            a replay of the first games' actions.
    """
    at_least(1, "evaluate", episodes=episodes, num_envs=num_envs)
    at_least(0, "evaluate", temperature=temperature, seed=seed)
    output_file(out, "result file")
    if world_model is not None and (planner is None or planner.model != "learned" or agent is None):
        raise ConfigError(
            "--world_model is the model a planner plans in: give it with --agent and --planner (model learned)."
        )
    if env.suite == "atari":
        env = dataclasses.replace(env, game=resolve_game_id(env.game))
    progress = _Progress(Path(out), resume)
    draws = progress.policy_seed(seed)
    probe = make_env(env)
    layout, settings = store_layout(probe), store_settings(env, probe)
    space = layout[0]
    probe.close()
    if planner is not None and planner.model == "emulator" and agent is None:
        generator = torch.Generator().manual_seed(draws)
        policy, name = EmulatorMPCPolicy(env, planner, generator).bind(space), "mpc:emulator"
    elif agent is None:
        policy, name = RandomPolicy(space, draws), "random"
    else:
        loaded = load_agent(agent, map_location=device)
        check_sizes(
            fix=f"Evaluate it on the game it was trained on, not {env.game}.",
            actor_critic=loaded.actor_critic,
            game=action_sizes(space),
        )
        generator = torch.Generator(device).manual_seed(draws)
        if planner is None:
            policy, name = loaded.policy(temperature, 0.0, generator), agent
        else:
            if world_model is not None:
                planned_in = load_model(world_model, "world_model", map_location=device)
                loaded = dataclasses.replace(loaded, world_model=planned_in)
            if loaded.world_model is None or loaded.tokenizer is None:
                raise ConfigError(f"Planning needs the agent's world model and tokenizer; {agent} lacks one.")
            if planner.model == "emulator":  # the agent's actor and critic with the emulator's dynamics
                mpc = EmulatorMPCPolicy(env, planner, generator, loaded.actor_critic, loaded.tokenizer, temperature)
            else:
                mpc = MPCPolicy(
                    loaded.tokenizer, loaded.world_model, planner, generator, loaded.actor_critic, temperature
                )
            policy = mpc.bind(space)
            name = f"mpc:{agent}" if planner.model == "learned" else f"mpc:emulator:{agent}"
    protocol = {
        "game": env.game,
        "policy": name,
        "episodes": episodes,
        "temperature": temperature,
        "planner": _plain(planner),
        "world_model": world_model,
        "seed": seed,
        "env": env.to_dict(),
    }
    progress.check(protocol)
    if progress.done and record is not None:
        raise ConfigError(
            f"--resume with --record: the {len(progress.done)} episodes saved in {progress.path} were not recorded, "
            "so the store would miss them. Resume without --record, or delete that file to start afresh."
        )
    recorder = None
    if record is not None:
        settings["recorded"] = {"policy": name, "seed": seed, "temperature": temperature, "planner": _plain(planner)}
        recorder = _recorder(record, EpisodeStore.frame_spec(env.size), layout, settings)
    returns, lengths = play(
        policy, env, episodes, num_envs, seed, record=recorder, skip=progress.done, ended=progress.ended
    )
    if recorder is not None:
        recorder.finish()
    for i, (earned, length) in progress.done.items():
        returns[i], lengths[i] = earned, length
    result = {
        **protocol,
        "returns": returns,
        "lengths": lengths,
        **summarize(env.game, returns),
        "seconds": progress.seconds(),
        "resumed_episodes": progress.resumed,
        "policy_seed": draws,
        "record": record,
        "provenance": provenance(),
    }
    write_json_atomic(out, result)
    progress.path.unlink(missing_ok=True)
    return result


class _Progress:
    """``<out>.partial``: the protocol and every finished episode's return and length, rewritten atomically as each
    episode ends, so that an interrupted evaluation loses none of them (``resume`` reads them back)."""

    def __init__(self, out: Path, resume: bool):
        self.path = out.with_name(out.name + ".partial")
        self.done: dict[int, tuple[float, int]] = {}
        self.saved_protocol, self.protocol = None, None
        self.before, self.start = 0.0, time.perf_counter()
        if self.path.exists():
            try:
                saved = json.loads(self.path.read_text())
                episodes = {int(i): (float(r), int(n)) for i, (r, n) in saved["finished"].items()}
                self.saved_protocol, before = saved["protocol"], float(saved["seconds"])
            except (ValueError, KeyError, TypeError) as error:
                raise ConfigError(
                    f"{self.path} is not the progress file of an evaluation ({type(error).__name__}: {error}): "
                    "move it away, then run again."
                ) from error
            if not resume:
                raise ConfigError(
                    f"{self.path} holds {len(episodes)} finished episodes of an interrupted evaluation: pass "
                    "--resume true to play only the others, or delete that file to start afresh."
                )
            self.done, self.before = episodes, before
        self.resumed = len(self.done)

    def policy_seed(self, seed: int) -> int:
        """The seed of the policy's own draws: ``seed``, or on a resume one of its own. Restarting the draws from
        ``seed`` would replay the first games' actions, and where the game ignores its seed (Atari without sticky
        actions starts every episode alike) the resumed games would repeat the first ones exactly."""
        if not self.done:
            return seed
        return int(np.random.SeedSequence([seed, len(self.done)]).generate_state(1)[0])

    def check(self, protocol: dict) -> None:
        """Refuse to resume with other settings than the saved ones."""
        self.protocol = json.loads(json.dumps(protocol))  # as it reads back (tuples become lists)
        if self.saved_protocol is not None:
            saved = self.saved_protocol
            differ = sorted(k for k in self.protocol | saved if self.protocol.get(k) != saved.get(k))
            if differ:
                raise ConfigError(
                    f"{self.path} was written by an evaluation with other settings ({', '.join(differ)}): resume it "
                    "with the same settings, or delete that file to start afresh."
                )
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def seconds(self) -> float:
        return self.before + time.perf_counter() - self.start

    def ended(self, index: int, earned: float, length: int) -> None:
        self.done[index] = (earned, length)
        finished = {str(i): list(v) for i, v in sorted(self.done.items())}
        write_json_atomic(self.path, {"protocol": self.protocol, "finished": finished, "seconds": self.seconds()})


class _Recorder:
    """Appends each episode played to a store in ``<folder>.partial``, renamed to ``folder`` at the end."""

    def __init__(self, folder: Path, store: EpisodeStore):
        self.folder, self.store = folder, store

    def __call__(self, index: int, episode: Episode) -> None:
        self.store.append([episode])

    def finish(self) -> None:
        self.store.root.rename(self.folder)


def _recorder(folder: str, frames, layout: tuple, settings: dict) -> _Recorder:
    """A new store for the episodes played: ``layout`` (action space, state, fps) and ``settings`` as
    :func:`~iris_wm.data.collect.store_layout` and :func:`~iris_wm.data.collect.store_settings` give them."""
    path = output_folder(folder, "episode store")
    if path.exists() and any(path.iterdir()):
        raise ConfigError(
            f"--record {path} exists already: the episodes played go into a new store. Choose another folder, or "
            "delete that one if it is an earlier recording you do not need."
        )
    partial = path.with_name(path.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)  # an interrupted recording of the same folder: start again
    partial.parent.mkdir(parents=True, exist_ok=True)
    space, state, fps = layout
    store = EpisodeStore.create(partial, frames, space, settings, state, fps)
    return _Recorder(path, store)


def _plain(planner: PlannerConfig | None) -> dict | None:
    return None if planner is None else dataclasses.asdict(planner)
