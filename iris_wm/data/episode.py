"""One episode in memory, the observation column that describes it, and the buffer collection fills.

One row is one agent step ``t``: the observation ``o_t`` seen before acting (and the state ``s_t``, proprioception,
where the store has one), the action ``a_t`` taken, the reward ``r_t`` received for it, and whether the episode ended
after it (``terminated`` or ``truncated``). Only the last row of an episode may end it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from iris_wm.data.spaces import ActionSpace, StateSpec


@dataclass(frozen=True)
class ObsSpec:
    """The observation column of a store: its name, element type and per-step shape."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape))

    def to_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, d: dict) -> ObsSpec:
        return cls(d["name"], d["dtype"], tuple(d["shape"]))


@dataclass
class Episode:
    """One episode as arrays of length T (observations: ``(T, *spec.shape)``; actions ``(T,)`` integers or ``(T,
    *shape)`` floats; states, when the store has them, ``(T, size)``)."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    states: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.actions)

    def check(self, spec: ObsSpec, actions: int | ActionSpace, state: StateSpec | None = None) -> None:
        """Raise ValueError naming the problem if this episode cannot go into a store with ``spec``, the action space
        ``actions`` (a number: that many discrete actions) and the state column ``state`` (None: no state)."""
        n = len(self.actions)
        if n == 0:
            raise ValueError("An episode must have at least one step.")
        for name in ("observations", "rewards", "terminated", "truncated"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"Episode field {name!r} has {len(getattr(self, name))} steps, actions {n}.")
        obs = self.observations
        if obs.dtype != np.dtype(spec.dtype) or tuple(obs.shape[1:]) != spec.shape:
            raise ValueError(
                f"Observations must be {spec.dtype} of shape (T, {', '.join(map(str, spec.shape))}); "
                f"got {obs.dtype} {tuple(obs.shape)}. Convert them before appending (frames: uint8 CHW)."
            )
        space = ActionSpace.of(actions)
        space.check(self.actions)
        if state is not None:
            state.check(self.states, n)
        elif self.states is not None:
            raise ValueError(
                "The episode has states but the store has no state column: write it to a store created with a "
                "state of its size, or drop the states."
            )
        ends = np.asarray(self.terminated, bool) | np.asarray(self.truncated, bool)
        if ends[:-1].any():
            raise ValueError(f"Only the last step may end an episode; step {int(np.argmax(ends))} does.")
        if not ends[-1]:
            raise ValueError("The last step of an episode must be terminated or truncated.")
        if not np.isfinite(np.asarray(self.rewards, np.float64)).all():
            raise ValueError("Rewards must be finite numbers.")


class EpisodeBuffer:
    """The steps of the episode being played, appended one at a time."""

    def __init__(self):
        self.obs, self.actions, self.rewards, self.terminated, self.truncated = [], [], [], [], []
        self.states = []

    def add(self, obs, action, reward, terminated, truncated, state=None):
        self.obs.append(obs)
        self.actions.append(action)
        self.rewards.append(reward)
        self.terminated.append(terminated)
        self.truncated.append(truncated)
        if state is not None:
            self.states.append(state)

    def __len__(self):
        return len(self.actions)

    def to_episode(self) -> Episode:
        continuous = len(self.actions) and np.ndim(self.actions[0]) > 0
        return Episode(
            np.stack(self.obs),
            np.stack(self.actions).astype(np.float32) if continuous else np.array(self.actions, np.int64),
            np.array(self.rewards, np.float32),
            np.array(self.terminated, bool),
            np.array(self.truncated, bool),
            np.stack(self.states).astype(np.float32) if self.states else None,
        )
