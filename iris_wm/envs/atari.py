"""Atari environments with the IRIS protocol made explicit.

The wrapper stack, innermost first (each piece is a small gymnasium wrapper, so it can be read and tested
on its own):

1. ``gymnasium.make("ALE/<Game>-v5", frameskip=1, ...)``: the raw emulator, one frame per step. Sticky
   actions are off by default because IRIS used the v4 semantics (Micheli et al. 2023, appendix A).
2. :class:`NoopReset`: 1..``noop_max`` random no-ops after a reset (training only in IRIS).
3. :class:`MaxAndSkip`: repeat each action ``frame_skip`` times, sum the rewards, and max-pool the last two
   frames (Atari sprites flicker between frames).
4. :class:`EpisodicLife`: a lost life ends the *training* episode while the game itself goes on
   (the DQN/IRIS protocol; not gymnasium's ``terminal_on_life_loss``, which resets the game).
5. :class:`ResizeCHW`: bilinear resize to ``size x size`` RGB, returned as ``uint8 (3, H, W)``.
6. ``TimeLimit``: a cap on agent steps per episode; hitting it is *truncation*, not termination.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, field
from typing import Literal

import cv2
import gymnasium as gym
import numpy as np

from iris_wm.runtime.checks import at_least, within
from iris_wm.runtime.errors import ConfigError

ATARI_MAX_STEPS = 27_000
ATARI_FRAME_SKIP = 4
DMC_ACTION_REPEAT = 2
"""The dmc suite's action repeat unless ``frame_skip`` says otherwise (DreamerV3, TD-MPC2)."""
POINT_MASS_STEPS = 50
"""Steps of a point-mass episode unless ``max_episode_steps`` says otherwise."""

__all__ = ["EnvConfig", "make_env", "known_games", "EpisodicLife", "MaxAndSkip", "NoopReset", "ResizeCHW"]


@dataclass
class EnvConfig:
    """How a game is turned into an environment. Defaults follow the IRIS training protocol."""

    game: str = "ALE/Breakout-v5"
    """gymnasium id of the game (``ALE/<Game>-v5``) or a bare name such as ``Breakout``."""
    size: int = 64
    """Observations are resized (bilinear) to ``size x size`` RGB."""
    frame_skip: int = 4
    """Emulator frames per agent step; the reward is summed over them."""
    max_pool: bool = True
    """Max-pool the last two emulator frames of each agent step (removes sprite flicker)."""
    noop_max: int = 30
    """At reset, take a random number in ``[1, noop_max]`` of no-ops; 0 disables."""
    life_loss_terminates: bool = True
    """End the episode (``terminated=True``) when a life is lost; the game continues at the next reset."""
    max_episode_steps: int | None = 27_000  # ATARI_MAX_STEPS
    """Cap on agent steps per episode (27,000 x 4 = 108,000 frames, 30 minutes of play); ``None``: no cap."""
    sticky_action_prob: float = 0.0
    """Probability of repeating the previous action (ALE v5 uses 0.25; IRIS used 0)."""
    full_action_space: bool = False
    """Use all 18 Atari actions instead of the game's minimal set."""
    suite: Literal["atari", "point-mass", "dmc"] = field(default="atari", metadata={"added": "issue 19"})
    """Which environments: Atari games (ale-py, the wrapper stack above); ``point-mass``, the built-in
    continuous-control task (:mod:`iris_wm.envs.point_mass`; of the options above it reads ``size`` and
    ``max_episode_steps``, which becomes 50 when left at Atari's 27,000); or ``dmc``, a DeepMind Control Suite task
    (``task``; MuJoCo rendered headless, :mod:`iris_wm.envs.dmc`; it reads ``size``, ``frame_skip`` as the action
    repeat (2 when left at Atari's 4), and ``max_episode_steps`` only when set apart from Atari's 27,000: the suite's
    own limit ends episodes)."""
    task: str | None = field(default=None, metadata={"added": "issue 19"})
    """The dm_control task of the ``dmc`` suite, ``domain-task``: reacher-easy, cartpole-swingup, ..."""

    def __post_init__(self):
        at_least(8, "env", size=self.size)
        at_least(1, "env", frame_skip=self.frame_skip, max_episode_steps=self.max_episode_steps)
        at_least(0, "env", noop_max=self.noop_max)
        within(0, 1, "env", sticky_action_prob=self.sticky_action_prob)
        if self.suite not in ("atari", "point-mass", "dmc"):
            raise ConfigError(f"env.suite must be 'atari', 'point-mass' or 'dmc'; got {self.suite!r}.")
        if self.suite == "dmc" and not self.task:
            raise ConfigError("The dmc suite needs a task: --env.task reacher-easy (domain-task).")
        if self.suite != "dmc" and self.task:
            raise ConfigError(f"env.task names a dm_control task; it needs --env.suite dmc (got {self.suite!r}).")
        if self.suite == "point-mass":
            self.game = self.suite  # the game names the task in the store's settings
            if self.max_episode_steps in (None, ATARI_MAX_STEPS):  # Atari's cap is 30 minutes of play: use the task's
                self.max_episode_steps = POINT_MASS_STEPS
        if self.suite == "dmc":
            self.game = self.task
            if self.max_episode_steps == ATARI_MAX_STEPS:
                self.max_episode_steps = None  # the suite's own time limit
            if self.frame_skip == ATARI_FRAME_SKIP:
                self.frame_skip = DMC_ACTION_REPEAT

    @classmethod
    def evaluation(cls, **overrides) -> EnvConfig:
        """The IRIS evaluation protocol: no life-loss termination, a single no-op start."""
        settings = dict(noop_max=1, life_loss_terminates=False)
        settings.update(overrides)
        return cls(**settings)

    def to_dict(self) -> dict:
        settings = asdict(self)
        if self.suite == "atari":  # as before the suites: stores collected then still accept appends
            del settings["suite"], settings["task"]
        return settings


def known_games() -> list[str]:
    """All registered ``ALE/*-v5`` ids."""
    _register_ale()
    return sorted(name for name in gym.registry if name.startswith("ALE/") and name.endswith("-v5"))


def _register_ale() -> None:
    import ale_py

    gym.register_envs(ale_py)


def resolve_game_id(game: str) -> str:
    """Turn ``Breakout`` or ``ALE/Breakout-v5`` into a registered id, or fail with suggestions."""
    games = known_games()
    candidate = game if game.startswith("ALE/") else f"ALE/{game}-v5"
    if candidate in games:
        return candidate
    lowered = {g.lower(): g for g in games}
    if candidate.lower() in lowered:
        return lowered[candidate.lower()]
    close = difflib.get_close_matches(candidate, games, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(close)}?" if close else " known_games() lists them."
    raise ConfigError(f"Unknown Atari game id {game!r}: no registered ALE v5 environment has that name.{hint}", "games")


class NoopReset(gym.Wrapper):
    """Take a random number of no-op actions (1..noop_max) after each real reset."""

    def __init__(self, env: gym.Env, noop_max: int):
        super().__init__(env)
        meanings = env.unwrapped.get_action_meanings()
        if meanings[0] != "NOOP":
            raise ValueError(f"Action 0 of {env.spec.id} is {meanings[0]!r}, not NOOP: cannot do no-op starts.")
        self.noop_max = noop_max

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        count = int(self.np_random.integers(1, self.noop_max + 1)) if self.noop_max > 0 else 0
        for _ in range(count):
            obs, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:
                obs, info = self.env.reset()
        return obs, info


class MaxAndSkip(gym.Wrapper):
    """Repeat an action ``skip`` times; reward is the sum, observation the max of the last two frames."""

    def __init__(self, env: gym.Env, skip: int = 4, max_pool: bool = True):
        super().__init__(env)
        if skip < 1:
            raise ValueError(f"frame_skip must be at least 1, got {skip}.")
        self.skip = skip
        self.max_pool = max_pool

    def step(self, action):
        total_reward = 0.0
        last_two: list[np.ndarray] = []
        for _ in range(self.skip):
            obs, reward, terminated, truncated, info = self.env.step(action)
            total_reward += float(reward)
            last_two = [*last_two[-1:], obs]
            if terminated or truncated:
                break
        if self.max_pool and len(last_two) == 2:
            obs = np.maximum(last_two[0], last_two[1])
        return obs, total_reward, terminated, truncated, info


class EpisodicLife(gym.Wrapper):
    """A lost life ends the episode for learning; the game only really resets when it is over."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.lives = 0
        self.game_over = True

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.game_over = terminated or truncated
        lives = self.env.unwrapped.ale.lives()
        life_lost = 0 < lives < self.lives
        self.lives = lives
        info["life_loss"] = life_lost
        return obs, reward, terminated or life_lost, truncated, info

    def reset(self, **kwargs):
        # A seeded reset always starts a new game: the caller asked for a reproducible start.
        if self.game_over or kwargs.get("seed") is not None:
            obs, info = self.env.reset(**kwargs)
        else:
            # Continue the same game: one no-op moves past the life-loss frame.
            obs, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:
                obs, info = self.env.reset(**kwargs)
        self.game_over = False
        self.lives = self.env.unwrapped.ale.lives()
        return obs, info


class ResizeCHW(gym.ObservationWrapper):
    """Bilinear resize of the RGB frame to ``size x size``, returned channel-first as uint8."""

    def __init__(self, env: gym.Env, size: int):
        super().__init__(env)
        self.size = size
        self.observation_space = gym.spaces.Box(0, 255, (3, size, size), dtype=np.uint8)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        resized = cv2.resize(observation, (self.size, self.size), interpolation=cv2.INTER_LINEAR)
        return np.ascontiguousarray(resized.transpose(2, 0, 1))  # (H, W, C) -> (C, H, W)


def make_raw_env(config: EnvConfig) -> gym.Env:
    """The bare emulator env (one frame per step) that :func:`make_env` wraps."""
    _register_ale()
    return gym.make(
        resolve_game_id(config.game),
        frameskip=1,
        repeat_action_probability=config.sticky_action_prob,
        full_action_space=config.full_action_space,
        obs_type="rgb",
        max_num_frames_per_episode=None,
        max_episode_steps=None,
        disable_env_checker=True,
    )


def make_env(config: EnvConfig | None = None, seed: int | None = None) -> gym.Env:
    """Build the wrapped environment. ``reset(seed=...)`` still seeds it; ``seed`` is a convenience."""
    config = config or EnvConfig()
    if config.suite == "point-mass":
        from iris_wm.envs.point_mass import PointMass

        env = PointMass(size=config.size, max_steps=config.max_episode_steps)
    if config.suite == "dmc":
        from iris_wm.envs.dmc import DMCEnv

        env = DMCEnv(config.task, size=config.size, action_repeat=config.frame_skip)
        if config.max_episode_steps is not None:
            env = gym.wrappers.TimeLimit(env, config.max_episode_steps)
    if config.suite != "atari":
        if seed is not None:
            env.reset(seed=seed)
            env.action_space.seed(seed)
        return env
    if not 0.0 <= config.sticky_action_prob < 1.0:
        raise ValueError(f"sticky_action_prob must be in [0, 1), got {config.sticky_action_prob}.")
    if config.size < 8:
        raise ValueError(f"size must be at least 8 pixels, got {config.size}.")
    env = make_raw_env(config)
    if config.noop_max > 0:
        env = NoopReset(env, config.noop_max)
    env = MaxAndSkip(env, config.frame_skip, config.max_pool)
    if config.life_loss_terminates:
        env = EpisodicLife(env)
    env = ResizeCHW(env, config.size)
    if config.max_episode_steps is not None:
        env = gym.wrappers.TimeLimit(env, config.max_episode_steps)
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env


def env_snapshot(env: gym.Env) -> dict:
    """Everything needed to continue ``env`` exactly where it is: the emulator (with its RNG), the env's
    numpy RNG (no-op starts), and the counters of the wrappers. Plain values and a uint8 tensor only, so it
    can be saved in a checkpoint that is read with ``weights_only=True``."""
    import torch

    base = env.unwrapped
    snapshot = {
        "ale": torch.frombuffer(
            bytearray(base.ale.cloneState(include_rng=True).serialize()), dtype=torch.uint8
        ).clone(),
        "np_random": base.np_random.bit_generator.state,
        "wrappers": [],
    }
    layer = env
    while isinstance(layer, gym.Wrapper):
        if isinstance(layer, EpisodicLife):
            snapshot["wrappers"].append({"lives": layer.lives, "game_over": layer.game_over})
        elif isinstance(layer, gym.wrappers.TimeLimit):
            snapshot["wrappers"].append({"elapsed_steps": layer._elapsed_steps})
        layer = layer.env
    return snapshot


def restore_env(env: gym.Env, snapshot: dict) -> None:
    """Put ``env`` (built with the same config and reset once) into the state of :func:`env_snapshot`."""
    import ale_py

    base = env.unwrapped
    base.ale.restoreState(ale_py.ALEState(bytes(snapshot["ale"].numpy().tobytes())))
    base.np_random.bit_generator.state = snapshot["np_random"]
    states = iter(snapshot["wrappers"])
    layer = env
    while isinstance(layer, gym.Wrapper):
        if isinstance(layer, EpisodicLife):
            saved = next(states)
            layer.lives, layer.game_over = saved["lives"], saved["game_over"]
        elif isinstance(layer, gym.wrappers.TimeLimit):
            layer._elapsed_steps = next(states)["elapsed_steps"]
        layer = layer.env
