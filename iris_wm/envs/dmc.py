"""DeepMind Control Suite tasks (MuJoCo, through dm_control, which ships the models) as gymnasium environments.

Frames are rendered headless by MuJoCo's EGL backend (Mesa on a CPU; ``make`` installs its Debian packages where it
runs as root), ``uint8 (3, size, size)`` from the task's camera 0. The task's observation vector (joint positions,
velocities, the vector to the target...) is the proprioceptive state, in ``info["state"]``, its components named
``<key>.<i>``. Actions are the task's box. Each action is repeated ``action_repeat`` times (DreamerV3 and TD-MPC2
use 2), summing the rewards. The suite's time limit ends an episode as truncation; a task that ends itself (a zero
discount) ends it as termination.
"""

from __future__ import annotations

import os

import gymnasium as gym
import numpy as np

from iris_wm.runtime.errors import ConfigError


def _suite():
    os.environ.setdefault("MUJOCO_GL", "egl")  # headless; must be set before dm_control imports MuJoCo's renderer
    try:
        from dm_control import suite
    except ImportError as err:
        raise ConfigError(
            f"The dmc suite needs dm_control and MuJoCo ({err}): install the project with its control extra, "
            "pip install -e '.[control]' (make does, in .venv)."
        ) from err
    return suite


def split_task(task: str) -> tuple[str, str]:
    """``reacher-easy`` -> ``("reacher", "easy")``, checked against the suite's tasks."""
    suite = _suite()
    names = {f"{domain}-{name}" for domain, name in suite.ALL_TASKS}
    if task not in names:
        close = sorted(n for n in names if n.split("-")[0] == task.split("-")[0]) or sorted(names)[:8]
        raise ConfigError(f"Unknown dm_control task {task!r}: give domain-task, e.g. {', '.join(close)}.")
    domain, name = task.split("-", 1)
    return domain, name


class DMCEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, task: str = "reacher-easy", size: int = 64, action_repeat: int = 2, camera: int = 0):
        if size < 8 or action_repeat < 1:
            raise ValueError(f"size must be at least 8 and action_repeat at least 1; got {size} and {action_repeat}.")
        self.task, self.size, self.action_repeat, self.camera = task, size, action_repeat, camera
        self.domain, self.name = split_task(task)
        self._env = self._load(0)
        spec = self._env.action_spec()
        self.action_space = gym.spaces.Box(spec.minimum.astype(np.float32), spec.maximum.astype(np.float32))
        self.observation_space = gym.spaces.Box(0, 255, (3, size, size), np.uint8)
        observation = self._env.observation_spec()
        self.state_names = tuple(
            f"{key}.{i}" for key, value in observation.items() for i in range(int(np.prod(value.shape)) or 1)
        )
        self.metadata = {**self.metadata, "render_fps": 1.0 / (self._env.control_timestep() * action_repeat)}

    def _load(self, seed: int):
        return _suite().load(self.domain, self.name, task_kwargs={"random": seed})

    def _state(self, observation) -> np.ndarray:
        return np.concatenate([np.asarray(v, np.float32).reshape(-1) for v in observation.values()])

    def _frame(self) -> np.ndarray:
        pixels = self._env.physics.render(self.size, self.size, camera_id=self.camera)
        return np.ascontiguousarray(pixels.transpose(2, 0, 1))

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._env = self._load(seed)
        step = self._env.reset()
        return self._frame(), {"state": self._state(step.observation)}

    def step(self, action):
        action = np.asarray(action, np.float64)
        if action.shape != self.action_space.shape or not np.isfinite(action).all():
            raise ValueError(f"{self.task} takes a finite action of shape {self.action_space.shape}; got {action}.")
        reward, terminated, truncated = 0.0, False, False
        for _ in range(self.action_repeat):
            step = self._env.step(np.clip(action, self.action_space.low, self.action_space.high))
            reward += float(step.reward or 0.0)
            if step.last():
                terminated, truncated = step.discount == 0, step.discount != 0
                break
        return self._frame(), reward, terminated, truncated, {"state": self._state(step.observation)}

    def render(self) -> np.ndarray:
        return self._frame().transpose(1, 2, 0)
