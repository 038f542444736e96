"""What a store's actions and proprioception are: the action space (``discrete`` or ``box``) and the state column.

A ``discrete`` space holds integer actions in ``[0, n)`` (Atari). A ``box`` space holds float32 vectors of a fixed
shape, each component within ``[low, high]`` (robot commands: joint velocities, end-effector deltas). The state is an
optional float32 vector of fixed size per step (joint positions, velocities, gripper state), with a name for each
component. Both are written in a store's manifest (schema v2) and checked on every append.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np


@dataclass(frozen=True)
class ActionSpace:
    """``discrete`` with ``n`` actions, or ``box`` with a ``shape`` and per-component bounds ``low`` / ``high``."""

    kind: Literal["discrete", "box"]
    n: int = 0
    shape: tuple[int, ...] = ()
    low: tuple[float, ...] = ()
    high: tuple[float, ...] = ()

    def __post_init__(self):
        if self.kind == "discrete":
            if self.n < 1:
                raise ValueError(f"A discrete action space needs at least one action; got n={self.n}.")
            return
        if self.kind != "box":
            raise ValueError(f"An action space is 'discrete' or 'box', not {self.kind!r}.")
        if not self.shape or any(d < 1 for d in self.shape):
            raise ValueError(f"A box action space needs a shape of positive sizes; got {self.shape}.")
        size = int(np.prod(self.shape))
        if len(self.low) != size or len(self.high) != size:
            raise ValueError(
                f"A box action space of shape {self.shape} needs {size} lower and {size} upper bounds; got "
                f"{len(self.low)} and {len(self.high)}."
            )
        low, high = np.asarray(self.low, np.float64), np.asarray(self.high, np.float64)
        if not (np.isfinite(low).all() and np.isfinite(high).all()) or (low > high).any():
            raise ValueError(
                f"A box action space needs finite bounds with low <= high in every component; got low {self.low}, "
                f"high {self.high}. Clip unbounded actions to the range the robot accepts."
            )

    @classmethod
    def discrete(cls, n: int) -> ActionSpace:
        return cls("discrete", n=int(n))

    @classmethod
    def of(cls, actions: int | ActionSpace) -> ActionSpace:
        """``actions`` as an action space: a space as it is, a number as that many discrete actions."""
        return actions if isinstance(actions, ActionSpace) else cls.discrete(actions)

    @classmethod
    def box(cls, low, high) -> ActionSpace:
        """A box of the shape of ``low`` (and ``high``; a number is broadcast to the other's shape)."""
        low, high = np.asarray(low, np.float64), np.asarray(high, np.float64)
        low, high = np.broadcast_arrays(low, high)
        shape = tuple(int(d) for d in low.shape)
        return cls("box", shape=shape, low=tuple(map(float, low.ravel())), high=tuple(map(float, high.ravel())))

    @property
    def is_discrete(self) -> bool:
        return self.kind == "discrete"

    @property
    def size(self) -> int:
        """Components of one action: 1 for a discrete space (one integer), the box's element count otherwise."""
        return 1 if self.is_discrete else int(np.prod(self.shape))

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.int64) if self.is_discrete else np.dtype(np.float32)

    def describe(self) -> str:
        if self.is_discrete:
            return f"discrete {{{self.n}}}"
        return f"box {{shape {list(self.shape)}, low {list(self.low)}, high {list(self.high)}}}"

    def to_dict(self) -> dict:
        if self.is_discrete:
            return {"type": "discrete", "n": self.n}
        return {"type": "box", "shape": list(self.shape), "low": list(self.low), "high": list(self.high)}

    @classmethod
    def from_dict(cls, d: dict) -> ActionSpace:
        if d["type"] == "discrete":
            return cls.discrete(d["n"])
        return cls("box", shape=tuple(d["shape"]), low=tuple(d["low"]), high=tuple(d["high"]))

    def check(self, actions: np.ndarray) -> None:
        """Raise ValueError naming the problem and the fix if ``actions`` (one per step) do not belong here."""
        actions = np.asarray(actions)
        if self.is_discrete:
            if actions.ndim != 1 or not (np.issubdtype(actions.dtype, np.integer) or actions.dtype == bool):
                raise ValueError(
                    f"This store holds discrete actions (integers in [0, {self.n})), one per step; got "
                    f"{actions.dtype} of shape {actions.shape}. A store holds one action space: write continuous "
                    "actions to a store created with a box action space."
                )
            if len(actions) and (actions.min() < 0 or actions.max() >= self.n):
                raise ValueError(f"Actions must lie in [0, {self.n}); got range [{actions.min()}, {actions.max()}].")
            return
        if actions.shape[1:] != self.shape or not np.issubdtype(actions.dtype, np.floating):
            raise ValueError(
                f"This store holds box actions: float vectors of shape {self.shape}, one per step, so (T, "
                f"{', '.join(map(str, self.shape))}); got {actions.dtype} of shape {actions.shape}. A store holds one "
                "action space: write discrete actions to a store created with a discrete one."
            )
        flat = actions.reshape(len(actions), -1).astype(np.float64)
        bad = ~np.isfinite(flat)
        if bad.any():
            step, component = np.argwhere(bad)[0]
            raise ValueError(
                f"Action component {component} of step {step} is {flat[step, component]}: actions must be finite. "
                "Drop or repair the steps with NaN or infinite actions before writing them."
            )
        low, high = np.asarray(self.low), np.asarray(self.high)
        outside = (flat < low) | (flat > high)
        if outside.any():
            step, component = np.argwhere(outside)[0]
            raise ValueError(
                f"Action component {component} of step {step} is {flat[step, component]}, outside its bounds "
                f"[{low[component]}, {high[component]}]. Clip the actions to the bounds, or create the store with "
                "the bounds the data really has."
            )


@dataclass(frozen=True)
class StateSpec:
    """Proprioception: a float32 vector of ``size`` components per step, named by ``names``."""

    size: int
    names: tuple[str, ...] = ()

    def __post_init__(self):
        if self.size < 1:
            raise ValueError(f"A state needs at least one component; got size {self.size}.")
        if self.names and len(self.names) != self.size:
            raise ValueError(f"A state of {self.size} components needs {self.size} names; got {len(self.names)}.")

    @classmethod
    def named(cls, names) -> StateSpec:
        return cls(len(names), tuple(str(n) for n in names))

    def to_dict(self) -> dict:
        return {"size": self.size, "names": list(self.names)}

    @classmethod
    def from_dict(cls, d: dict) -> StateSpec:
        return cls(int(d["size"]), tuple(d.get("names") or ()))

    def check(self, states: np.ndarray | None, steps: int) -> None:
        """Raise ValueError naming the problem and the fix if ``states`` are not ``(steps, size)`` finite floats."""
        if states is None:
            raise ValueError(
                f"This store holds a state of {self.size} components at every step; the episode has none. Give "
                "each episode its states, or write it to a store without a state column."
            )
        states = np.asarray(states)
        if states.shape != (steps, self.size) or not np.issubdtype(states.dtype, np.floating):
            raise ValueError(
                f"States must be floats of shape ({steps}, {self.size}) (steps, components); got {states.dtype} of "
                f"shape {states.shape}. Every step of a store has a state of the same size."
            )
        if not np.isfinite(states.astype(np.float64)).all():
            step = int(np.argwhere(~np.isfinite(states.astype(np.float64)))[0][0])
            raise ValueError(f"The state of step {step} is not finite: repair or drop it before writing.")
