"""A built-in continuous-control task that needs no simulator: a point mass pushed by a 2-D force.

The mass moves in the unit square: each step its velocity decays by ``damping`` and gains ``gain`` times the
action (a force in ``[-1, 1]^2``), and its position moves by the velocity, stopping at the walls. The frame draws the
mass (white) and a target (green) on black, ``uint8 (3, size, size)``; the state (proprioception) is the position and
velocity ``(x, y, vx, vy)``, in ``info["state"]``. The reward is 1 on every step that ends within ``radius`` of the
target, else 0. Episodes are cut after ``max_steps`` (truncation). It is small enough for tests to collect in
milliseconds, and its frames depend on the actions, which is what action-conditioning tests need.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

STATE_NAMES = ("x", "y", "vx", "vy")


class PointMass(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(
        self,
        size: int = 64,
        max_steps: int = 50,
        damping: float = 0.8,
        gain: float = 0.08,
        radius: float = 0.1,
        dot: int = 2,
    ):
        if size < 8:
            raise ValueError(f"size must be at least 8 pixels; got {size}.")
        if max_steps < 1:
            raise ValueError(f"max_steps must be at least 1; got {max_steps}.")
        self.size, self.max_steps, self.damping, self.gain, self.radius, self.dot = (
            size,
            max_steps,
            damping,
            gain,
            radius,
            dot,
        )
        self.observation_space = gym.spaces.Box(0, 255, (3, size, size), np.uint8)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.state_names = STATE_NAMES

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.position = self.np_random.uniform(0.1, 0.9, 2)
        self.velocity = np.zeros(2)
        self.target = self.np_random.uniform(0.1, 0.9, 2)
        self.steps = 0
        return self._frame(), {"state": self._state()}

    def step(self, action):
        action = np.asarray(action, np.float64)
        if action.shape != (2,) or not np.isfinite(action).all():
            raise ValueError(f"The point mass takes a finite force of shape (2,); got {action}.")
        action = np.clip(action, -1.0, 1.0)
        self.velocity = self.damping * self.velocity + self.gain * action
        moved = self.position + self.velocity
        hit = (moved < 0) | (moved > 1)
        self.velocity[hit] = 0.0
        self.position = np.clip(moved, 0.0, 1.0)
        self.steps += 1
        reward = float(np.linalg.norm(self.position - self.target) < self.radius)
        truncated = self.steps >= self.max_steps
        return self._frame(), reward, False, truncated, {"state": self._state()}

    def _state(self) -> np.ndarray:
        return np.concatenate([self.position, self.velocity]).astype(np.float32)

    def _pixel(self, point: np.ndarray) -> tuple[int, int]:
        column, row = np.minimum((point * self.size).astype(int), self.size - 1)
        return int(row), int(column)

    def _frame(self) -> np.ndarray:
        frame = np.zeros((3, self.size, self.size), np.uint8)
        for point, colour in ((self.target, (0, 200, 0)), (self.position, (255, 255, 255))):
            row, column = self._pixel(point)
            top, left = max(0, row - self.dot // 2), max(0, column - self.dot // 2)
            frame[:, top : top + self.dot, left : left + self.dot] = np.asarray(colour, np.uint8)[:, None, None]
        return frame

    def render(self) -> np.ndarray:
        return self._frame().transpose(1, 2, 0)
