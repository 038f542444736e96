"""Imagination behind the gymnasium API, for the agents of other libraries (Stable-Baselines3, TorchRL, CleanRL).

- :class:`ImaginationGymEnv`: one imagined environment, a ``gymnasium.Env``.
- :class:`ImaginationVectorEnv`: ``num_envs`` of them in one batched world-model call a step, a
  ``gymnasium.vector.VectorEnv`` with gymnasium 1.x's next-step autoreset: the step after an episode ends
  returns the first observation of a new one (reward 0, neither terminated nor truncated) and ignores its
  action.

Episodes start from real windows (``starts``: tokens ``(N, C, K)`` and the ``C - 1`` actions between them, e.g.
from :func:`iris_wm.data.windows.start_windows`), chosen at random on each reset. ``terminated`` is the world
model's predicted episode end, ``truncated`` comes at ``horizon`` imagined steps. Observations are the frame's
``K`` tokens (``MultiDiscrete``) or its decoded ``uint8 (3, H, W)`` frame (``observation="frames"``).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from iris_wm.envs.imagination import ImaginationConfig, ImaginationEnv

OBSERVATIONS = ("tokens", "frames")


class _Imagined:
    """What both faces share: the spaces, the start windows, seeding and observing."""

    def _setup(self, world_model, starts, start_actions, tokenizer, observation, horizon, config, device) -> None:
        starts = torch.as_tensor(np.asarray(starts)).long()
        if starts.dim() != 3 or starts.shape[2] != world_model.config.tokens_per_frame:
            raise ValueError(
                f"starts must be tokens (N, C, K) with K={world_model.config.tokens_per_frame}, the world model's "
                f"tokens per frame; got shape {tuple(starts.shape)}."
            )
        n, c, k = starts.shape
        actions = torch.zeros(n, c - 1, dtype=torch.long) if start_actions is None else torch.as_tensor(start_actions)
        if tuple(actions.shape) != (n, c - 1):
            raise ValueError(f"start_actions must be (N, C - 1) = ({n}, {c - 1}); got {tuple(actions.shape)}.")
        if observation not in OBSERVATIONS:
            raise ValueError(f"observation must be one of {OBSERVATIONS}, not {observation!r}.")
        if observation == "frames" and tokenizer is None:
            raise ValueError('observation="frames" decodes the tokens: pass the tokenizer.')
        if horizon < 1:
            raise ValueError(f"horizon must be at least 1 imagined step, got {horizon}.")
        self.starts, self.start_actions = starts, actions.long()
        self.observation, self.horizon, self.tokenizer = observation, int(horizon), tokenizer
        self.device = torch.device(device) if device is not None else next(world_model.parameters()).device
        self.generator = torch.Generator(self.device)
        self.imagination = ImaginationEnv(world_model, tokenizer, config or ImaginationConfig(), self.generator)
        if observation == "tokens":
            self.frame_space = gym.spaces.MultiDiscrete(np.full(k, world_model.config.vocab_size, dtype=np.int64))
        else:
            size = tokenizer.config.resolution
            self.frame_space = gym.spaces.Box(0, 255, (3, size, size), np.uint8)
        self.num_actions = int(world_model.config.num_actions)

    def _seed_sampling(self, seed: int | None) -> None:
        # The world model's sampling follows the reset seed, so that the same seed gives the same episode.
        self.generator.manual_seed(int(self.np_random.integers(2**62)) if seed is None else seed)

    def _pick(self, count: int) -> np.ndarray:
        return self.np_random.integers(len(self.starts), size=count)

    def _observe(self, tokens: torch.Tensor) -> np.ndarray:
        if self.observation == "tokens":
            return tokens.cpu().numpy().astype(np.int64)
        return self.imagination.frames(tokens).cpu().numpy()

    def _actions(self, actions, count: int) -> torch.Tensor:
        actions = np.asarray(actions).reshape(-1)
        if actions.shape != (count,) or not np.all((actions >= 0) & (actions < self.num_actions)):
            raise ValueError(f"expected {count} action(s) in [0, {self.num_actions}); got {actions.tolist()}.")
        return torch.as_tensor(actions.astype(np.int64))


class ImaginationGymEnv(_Imagined, gym.Env):
    """One imagined environment (see the module's docstring)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 15}

    def __init__(
        self,
        world_model,
        starts,
        start_actions=None,
        tokenizer=None,
        observation: str = "tokens",
        horizon: int = 1000,
        config: ImaginationConfig | None = None,
        render_mode: str | None = None,
        device=None,
    ):
        self._setup(world_model, starts, start_actions, tokenizer, observation, horizon, config, device)
        self.observation_space, self.action_space = self.frame_space, gym.spaces.Discrete(self.num_actions)
        if render_mode is not None and (render_mode not in self.metadata["render_modes"] or tokenizer is None):
            raise ValueError('render_mode "rgb_array" (the decoded frame) needs the tokenizer; no other is offered.')
        self.render_mode = render_mode

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._seed_sampling(seed)
        pick = self._pick(1)
        tokens = self.imagination.reset(self.starts[pick], self.start_actions[pick])
        self.elapsed = 0
        return self._observe(tokens)[0], {"start": int(pick[0])}

    def step(self, action):
        step = self.imagination.step(self._actions(action, 1))
        self.elapsed += 1
        terminated = bool(step.terminated[0])
        truncated = not terminated and self.elapsed >= self.horizon
        return self._observe(step.tokens)[0], float(step.reward[0]), terminated, truncated, {}

    def render(self):
        if self.render_mode == "rgb_array":
            return self.imagination.frames()[0].permute(1, 2, 0).cpu().numpy()
        return None


class ImaginationVectorEnv(_Imagined, gym.vector.VectorEnv):
    """``num_envs`` imagined environments stepped together (see the module's docstring)."""

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(
        self,
        world_model,
        starts,
        num_envs: int,
        start_actions=None,
        tokenizer=None,
        observation: str = "tokens",
        horizon: int = 1000,
        config: ImaginationConfig | None = None,
        device=None,
    ):
        if num_envs < 1:
            raise ValueError(f"num_envs must be at least 1, got {num_envs}.")
        self._setup(world_model, starts, start_actions, tokenizer, observation, horizon, config, device)
        self.num_envs = int(num_envs)
        self.single_observation_space = self.frame_space
        self.single_action_space = gym.spaces.Discrete(self.num_actions)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._seed_sampling(seed)
        picks = self._pick(self.num_envs)
        tokens = self.imagination.reset(self.starts[picks], self.start_actions[picks])
        self.elapsed = np.zeros(self.num_envs, np.int64)
        self.ended = np.zeros(self.num_envs, bool)
        return self._observe(tokens), {"start": picks}

    def step(self, actions):
        step = self.imagination.step(self._actions(actions, self.num_envs))
        rewards = step.reward.float().cpu().numpy()
        terminated = step.terminated.cpu().numpy().copy()
        self.elapsed += 1
        truncated = ~terminated & (self.elapsed >= self.horizon)
        info = {}
        restart = self.ended  # ended at the previous step: they start again now, whatever their action
        if restart.any():
            picks = self._pick(int(restart.sum()))
            mask = torch.from_numpy(restart)
            self.imagination.restart(mask, self.starts[picks], self.start_actions[picks])
            rewards[restart], terminated[restart], truncated[restart] = 0.0, False, False
            self.elapsed[restart] = 0
            start = np.full(self.num_envs, -1)
            start[restart] = picks
            info = {"start": start, "_start": restart.copy()}  # gymnasium's vector info: values and their mask
        self.ended = terminated | truncated
        return (
            self._observe(self.imagination.observations[:, -1, : self.imagination.K]),
            rewards,
            terminated,
            truncated,
            info,
        )
