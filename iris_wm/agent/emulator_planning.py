"""The real emulator as a perfect model for the planner: a check of the planner apart from the world model's errors.

At every real step each environment's emulator state is cloned (with its random generator), and every candidate
sequence is played from it in a second emulator of the same configuration, restored before each sequence; it is
played on the ALE itself, ``frame_skip`` frames an action as the environment's wrappers do, with no screen read (a
few times faster than stepping the wrapped environment). A sequence's score is the one :class:`ImaginedReturns` gives: the
discounted rewards up to the first end, minus ``end_penalty`` discounted at the end, where an end is the episode's or
a lost life (what the world model is trained to predict as an end on Atari). Only Atari environments snapshot.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from iris_wm.agent.planning import Planner, PlannerConfig
from iris_wm.data.spaces import ActionSpace
from iris_wm.envs.atari import EnvConfig, make_raw_env
from iris_wm.runtime.errors import ConfigError


class EmulatorReturns:
    """``score`` for a :class:`Planner` from the emulator itself; :meth:`set_context` takes the real environments'
    snapshots."""

    def __init__(self, config: EnvConfig, gamma: float = 0.99, end_penalty: float = 0.0):
        if config.suite != "atari":
            raise ConfigError(f"The emulator as a model needs snapshots, which only Atari has; got suite {config.suite}.")
        self.sim = make_raw_env(config)
        self.sim.reset(seed=0)
        self.frame_skip = config.frame_skip
        self.gamma, self.end_penalty = gamma, end_penalty
        self.states: list | None = None
        self.lives: list[int] = []

    def set_context(self, envs: list[gym.Env]) -> None:
        self.states = [env.unwrapped.ale.cloneState(include_rng=True) for env in envs]
        self.lives = [env.unwrapped.ale.lives() for env in envs]

    def play(self, e: int, actions: np.ndarray) -> float:
        """The score of one sequence ``actions (H,)`` from environment ``e``'s state."""
        ale, action_set = self.sim.unwrapped.ale, self.sim.unwrapped._action_set
        ale.restoreState(self.states[e])
        total = 0.0
        for t, action in enumerate(actions):
            reward = 0.0
            for _ in range(self.frame_skip):
                reward += ale.act(action_set[int(action)])
                if ale.game_over():
                    break
            total += self.gamma**t * reward
            if ale.game_over() or ale.lives() < self.lives[e]:
                return total - self.gamma**t * self.end_penalty
        return total

    def __call__(self, actions: torch.Tensor) -> torch.Tensor:
        if self.states is None:
            raise RuntimeError("EmulatorReturns: set_context(envs) with the real environments before scoring.")
        E, N = actions.shape[:2]
        plans = actions.cpu().numpy()
        values = [[self.play(e, plans[e, n]) for n in range(N)] for e in range(E)]
        return torch.tensor(values, dtype=torch.float32, device=actions.device)

    def close(self) -> None:
        self.sim.close()


class EmulatorMPCPolicy:
    """Model-predictive control with the emulator as the model (no learned part). :func:`~iris_wm.evaluate.play.play`
    hands it the environments it plays (:meth:`bind_envs`); same ``act`` as the other policies."""

    def __init__(self, config: EnvConfig, planner: PlannerConfig, generator: torch.Generator | None = None):
        self.scorer = EmulatorReturns(config, planner.gamma, planner.end_penalty)
        self.config, self.generator = planner, generator
        self.planner: Planner | None = None
        self.envs: list[gym.Env] | None = None

    def bind(self, space: ActionSpace) -> EmulatorMPCPolicy:
        if not space.is_discrete:
            raise ConfigError("The emulator as a model is Atari's: its actions are discrete.")
        self.planner = Planner(self.config, num_actions=space.n)
        return self

    def bind_envs(self, envs: list[gym.Env]) -> None:
        self.envs = envs

    @torch.no_grad()
    def act(self, frames, new_episode, states=None) -> torch.Tensor:
        if self.planner is None or self.envs is None:
            raise RuntimeError("EmulatorMPCPolicy: bind(space) and bind_envs(envs) before acting.")
        self.planner.forget(torch.as_tensor(new_episode, dtype=torch.bool))
        self.scorer.set_context(self.envs)
        return self.planner.plan(self.scorer, len(self.envs), generator=self.generator)
