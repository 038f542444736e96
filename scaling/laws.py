"""Scaling-law forms and their fits: power laws, and L(N, D) = E + A / N^alpha + B / D^beta.

The parametric law is fitted as Hoffmann et al. (2022, appendix D.2) do: in log space,
``log L = LSE(a - alpha log N, b - beta log D, e)`` with ``A = exp(a)``, ``B = exp(b)``, ``E = exp(e)``,
minimising the Huber loss of the residuals in log L with L-BFGS-B from many starting points. Following
Besiroglu et al. (2024) the Huber losses are *summed* and the optimiser runs to convergence (the original
averaged them and stopped early). A least-squares fit in loss levels is the cross-check.

Only numpy and scipy: the scaling package fits and plots without torch.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
from scipy.optimize import minimize

Objective = Literal["huber_log", "squares_level"]

# Hoffmann et al.'s initialisation grid (appendix D.2), in the log-parameters (e, a, b) and exponents.
GRID_E = (-1.0, -0.5, 0.0, 0.5, 1.0)
GRID_A = GRID_B = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0)
GRID_EXPONENT = (0.0, 0.5, 1.0, 1.5, 2.0)
# Box for L-BFGS-B: (e, a, b, alpha, beta). An estimate on the box's edge is reported as a warning.
BOUNDS = ((-5.0, 5.0), (-10.0, 60.0), (-10.0, 60.0), (0.0, 3.0), (0.0, 3.0))


@dataclass(frozen=True)
class ParametricLaw:
    """L(N, D) = E + A / N^alpha + B / D^beta."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float

    @property
    def a(self) -> float:
        """Exponent of N_opt ~ C^a under C = 6ND (closed form beta / (alpha + beta))."""
        return self.beta / (self.alpha + self.beta)

    @property
    def b(self) -> float:
        """Exponent of D_opt ~ C^b under C = 6ND (closed form alpha / (alpha + beta))."""
        return self.alpha / (self.alpha + self.beta)

    def __call__(self, N, D):
        N, D = np.asarray(N, float), np.asarray(D, float)
        return self.E + self.A / N**self.alpha + self.B / D**self.beta

    def to_dict(self) -> dict:
        return {**asdict(self), "a": self.a, "b": self.b}

    @classmethod
    def from_theta(cls, theta) -> ParametricLaw:
        e, a, b, alpha, beta = (float(t) for t in theta)
        return cls(E=float(np.exp(e)), A=float(np.exp(a)), B=float(np.exp(b)), alpha=alpha, beta=beta)

    def theta(self) -> np.ndarray:
        return np.array([np.log(self.E), np.log(self.A), np.log(self.B), self.alpha, self.beta])


@dataclass
class ParametricFit:
    """A converged fit with the facts needed to trust it."""

    law: ParametricLaw
    objective: Objective
    value: float
    converged: bool
    gradient_norm: float
    starts: int
    starts_at_best: int  # optimiser runs that ended within 1e-6 (relative) of the best objective
    at_bounds: list[str]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["law"] = self.law.to_dict()
        return d


def _log_prediction(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray):
    """log L-hat and the softmax weights of its three terms (the pieces of the gradient)."""
    e, a, b, alpha, beta = theta
    t_n, t_d = a - alpha * log_n, b - beta * log_d
    top = np.maximum(np.maximum(t_n, t_d), e)
    w_n, w_d, w_e = np.exp(t_n - top), np.exp(t_d - top), np.exp(e - top)
    total = w_n + w_d + w_e
    return top + np.log(total), (w_n / total, w_d / total, w_e / total)


def huber(r: np.ndarray, delta: float) -> np.ndarray:
    small = np.abs(r) <= delta
    return np.where(small, 0.5 * r**2, delta * (np.abs(r) - 0.5 * delta))


def _objective(theta, log_n, log_d, loss, objective: Objective, delta: float):
    """Value and analytic gradient of the fitting objective at ``theta`` = (e, a, b, alpha, beta)."""
    pred, w = _log_prediction(theta, log_n, log_d)
    if objective == "huber_log":
        r = pred - np.log(loss)
        d_pred = np.clip(r, -delta, delta)  # dHuber/dr
        value = float((d_pred * (r - 0.5 * d_pred)).sum())  # the Huber loss, from its derivative
    else:
        level = np.exp(pred)
        r = level - loss
        value = 0.5 * (r**2).sum()
        d_pred = r * level
    g_n, g_d = d_pred * w[0], d_pred * w[1]
    grad = np.array([(d_pred * w[2]).sum(), g_n.sum(), g_d.sum(), -(g_n @ log_n), -(g_d @ log_d)])
    return value, grad


def grid_starts() -> np.ndarray:
    """The 4,500 starting points of Hoffmann et al.'s grid, as (e, a, b, alpha, beta) rows."""
    rows = itertools.product(GRID_E, GRID_A, GRID_B, GRID_EXPONENT, GRID_EXPONENT)
    return np.array([(e, a, b, al, be) for e, a, b, al, be in rows])


def screen_starts(starts: np.ndarray, N, D, L, objective: Objective, delta: float, keep: int) -> np.ndarray:
    """The ``keep`` starting points with the lowest objective, evaluated all at once (a cheap first pass)."""
    log_n, log_d, loss = np.log(N), np.log(D), np.asarray(L, float)
    e, a, b, al, be = (starts[:, i : i + 1] for i in range(5))
    terms = np.stack([a - al * log_n, b - be * log_d, np.broadcast_to(e, (len(starts), len(log_n)))])
    pred = np.logaddexp(np.logaddexp(terms[0], terms[1]), terms[2])  # (S, P)
    if objective == "huber_log":
        values = huber(pred - np.log(loss), delta).sum(axis=1)
    else:
        values = 0.5 * ((np.exp(pred) - loss) ** 2).sum(axis=1)
    return starts[np.argsort(values)[:keep]]


def fit_parametric(
    N,
    D,
    L,
    objective: Objective = "huber_log",
    delta: float = 1e-3,
    starts: np.ndarray | None = None,
    keep: int = 64,
    tolerance: float = 1e-12,
) -> ParametricFit:
    """Fit L(N, D) to points by multi-start L-BFGS-B.

    ``starts`` default to Hoffmann et al.'s grid, screened to the ``keep`` best before optimising (the
    optimiser is run from each of those). ``converged`` requires the best run to report success with a
    projected gradient below 1e-4 of the objective's scale.
    """
    N, D, L = (np.asarray(x, float) for x in (N, D, L))
    if not (len(N) == len(D) == len(L)) or len(N) < 5:
        raise ValueError(f"A parametric fit needs at least 5 points with N, D and L each; got {len(N)}.")
    if (N <= 0).any() or (D <= 0).any() or (L <= 0).any():
        raise ValueError("N, D and L must all be positive.")
    starts = grid_starts() if starts is None else np.atleast_2d(starts)
    if len(starts) > keep:
        starts = screen_starts(starts, N, D, L, objective, delta, keep)
    log_n, log_d = np.log(N), np.log(D)
    results = []
    for x0 in starts:
        res = minimize(
            _objective,
            np.clip(x0, *zip(*BOUNDS, strict=True)),
            args=(log_n, log_d, L, objective, delta),
            jac=True,
            method="L-BFGS-B",
            bounds=BOUNDS,
            options={"maxiter": 5000, "ftol": tolerance, "gtol": 1e-10},
        )
        results.append(res)
    best = min(results, key=lambda r: r.fun)
    values = np.array([r.fun for r in results])
    scale = max(abs(best.fun), 1e-12)
    at_best = int((np.abs(values - best.fun) <= 1e-6 * scale + 1e-14).sum())
    grad = _projected_gradient(best.x, best.jac)
    names = ("E", "A", "B", "alpha", "beta")
    at_bounds = [n for n, x, (lo, hi) in zip(names, best.x, BOUNDS, strict=True) if min(x - lo, hi - x) < 1e-6]
    converged = bool(best.success) and np.linalg.norm(grad) <= 1e-4 * max(1.0, scale) + 1e-8
    return ParametricFit(
        law=ParametricLaw.from_theta(best.x),
        objective=objective,
        value=float(best.fun),
        converged=converged,
        gradient_norm=float(np.linalg.norm(grad)),
        starts=len(starts),
        starts_at_best=at_best,
        at_bounds=at_bounds,
    )


def _projected_gradient(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """The gradient with components that push against an active bound zeroed (KKT at the box)."""
    lo, hi = np.array(BOUNDS).T
    g = g.copy()
    g[(x <= lo + 1e-9) & (g > 0)] = 0.0
    g[(x >= hi - 1e-9) & (g < 0)] = 0.0
    return g


@dataclass(frozen=True)
class PowerLaw:
    """y = k * x^exponent, fitted by least squares in log-log space."""

    k: float
    exponent: float

    def __call__(self, x):
        return self.k * np.asarray(x, float) ** self.exponent


def fit_power_law(x, y) -> PowerLaw:
    x, y = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    if len(x) < 2 or np.ptp(x) == 0:
        raise ValueError("A power law needs at least two distinct x values.")
    slope, intercept = np.polyfit(x, y, 1)
    return PowerLaw(k=float(np.exp(intercept)), exponent=float(slope))
