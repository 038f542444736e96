"""Three estimators of the compute-optimal model size on the same annealed points (Hoffmann et al. 2022).

1. Frontier: at each budget, the lowest-loss point; power laws N*(C), D*(C), L*(C) through them.
2. IsoFLOP: at each budget, a parabola of log loss in log N; its vertex is N_opt(C). A budget whose lowest
   point is the smallest or largest size tried, or whose vertex falls outside the sizes (an edge minimum), is
   rejected and said so. (Log loss, not loss: starved large models at small budgets sit far up the steep side,
   and in levels they pull the vertex of the parabola towards themselves.)
3. Parametric: L(N, D) fitted to every point; N_opt(C) found numerically with the exact FLOPs per token of
   the ladder (not the 6ND closed form), and the closed-form a = beta / (alpha + beta) beside it.

Every estimator returns a plain result with the exponents a (N_opt ~ C^a) and b (D_opt ~ C^b).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize_scalar

from scaling.laws import ParametricFit, ParametricLaw, fit_parametric, fit_power_law


@dataclass
class Points:
    """Annealed (N, D) points: parameters, training tokens, compute, held-out loss, and the run they belong to."""

    N: np.ndarray
    D: np.ndarray
    C: np.ndarray
    L: np.ndarray
    group: np.ndarray  # training run (trunk) of each point: the unit the bootstrap resamples
    budget: np.ndarray  # the isoFLOP budget line the point was placed on (nan when none)

    def __post_init__(self):
        for name in ("N", "D", "C", "L", "budget"):
            setattr(self, name, np.asarray(getattr(self, name), float))
        self.group = np.asarray(self.group)

    def __len__(self) -> int:
        return len(self.N)

    def take(self, index: np.ndarray) -> Points:
        return Points(self.N[index], self.D[index], self.C[index], self.L[index], self.group[index], self.budget[index])

    def resample_groups(self, rng: np.random.Generator) -> Points:
        """A bootstrap replicate: whole training runs drawn with replacement (all points of a run together)."""
        groups = np.unique(self.group)
        drawn = rng.choice(groups, size=len(groups), replace=True)
        index = np.concatenate([np.flatnonzero(self.group == g) for g in drawn])
        return self.take(index)


class FlopsPerToken:
    """Training FLOPs per token as a function of N, interpolated in log-log space through the ladder's exact
    counts (extrapolated along the end segments). Used to turn a budget C into D = C / f(N)."""

    def __init__(self, params, flops):
        order = np.argsort(params)
        self.log_n = np.log(np.asarray(params, float)[order])
        self.log_f = np.log(np.asarray(flops, float)[order])
        _, unique = np.unique(self.log_n, return_index=True)
        self.log_n, self.log_f = self.log_n[unique], self.log_f[unique]
        if len(self.log_n) < 2:
            raise ValueError("FLOPs per token needs at least two model sizes to interpolate.")

    def __call__(self, N):
        x = np.log(np.asarray(N, float))
        xs, ys = self.log_n, self.log_f
        y = np.interp(x, xs, ys)
        lo_slope = (ys[1] - ys[0]) / (xs[1] - xs[0])
        hi_slope = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
        y = np.where(x < xs[0], ys[0] + lo_slope * (x - xs[0]), y)
        y = np.where(x > xs[-1], ys[-1] + hi_slope * (x - xs[-1]), y)
        return np.exp(y)


@dataclass
class Estimate:
    """What one estimator says: exponents, and N_opt / D_opt / loss at each budget it could use."""

    name: str
    a: float
    b: float
    budgets: list[float]
    n_opt: list[float]
    d_opt: list[float]
    loss: list[float]
    ok: bool = True
    warnings: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    def n_opt_at(self, C) -> np.ndarray:
        """N_opt at budgets ``C`` from the power law through this estimator's optima."""
        law = fit_power_law(self.budgets, self.n_opt)
        return law(C)


def _unique_budgets(points: Points) -> np.ndarray:
    return np.unique(points.budget[np.isfinite(points.budget)])


def frontier(points: Points) -> Estimate:
    budgets, n, d, loss = [], [], [], []
    for c in _unique_budgets(points):
        on = np.flatnonzero(points.budget == c)
        best = on[np.argmin(points.L[on])]
        budgets.append(float(c))
        n.append(float(points.N[best]))
        d.append(float(points.D[best]))
        loss.append(float(points.L[best]))
    if len(set(budgets)) < 2:
        return Estimate(
            "frontier", np.nan, np.nan, budgets, n, d, loss, ok=False, warnings=["frontier: fewer than 2 budgets"]
        )
    warnings = []
    if len(set(n)) == 1:
        warnings.append("frontier: the same size is best at every budget (the ladder is too coarse or short)")
    a = fit_power_law(budgets, n).exponent
    b = fit_power_law(budgets, d).exponent
    loss_law = fit_power_law(budgets, loss)
    return Estimate(
        "frontier", a, b, budgets, n, d, loss, warnings=warnings, extra={"loss_exponent": loss_law.exponent}
    )


def isoflop(points: Points, flops: FlopsPerToken, min_sizes: int = 3) -> Estimate:
    budgets, n, d, loss, warnings, parabolas = [], [], [], [], [], {}
    for c in _unique_budgets(points):
        on = np.flatnonzero(points.budget == c)
        x, y = np.log(points.N[on]), np.log(points.L[on])
        if len(np.unique(x)) < min_sizes:
            warnings.append(f"isoFLOP: budget {c:.3g} has fewer than {min_sizes} sizes; not used")
            continue
        p2, p1, p0 = np.polyfit(x, y, 2)
        vertex = -p1 / (2 * p2) if p2 > 0 else np.nan
        parabolas[f"{c:.6g}"] = [float(p2), float(p1), float(p0)]
        lowest = x[np.argmin(y)]
        if lowest in (x.min(), x.max()) or not (np.isfinite(vertex) and x.min() < vertex < x.max()):
            warnings.append(f"isoFLOP: budget {c:.3g} has its minimum at the edge of the sizes tried; not used")
            continue
        budgets.append(float(c))
        n.append(float(np.exp(vertex)))
        d.append(float(c / flops(np.exp(vertex))))
        loss.append(float(np.exp(p0 + p1 * vertex + p2 * vertex**2)))
    extra = {"parabolas": parabolas}
    if len(budgets) < 2:
        warnings.append("isoFLOP: fewer than 2 budgets with an interior minimum; no exponent")
        return Estimate("isoflop", np.nan, np.nan, budgets, n, d, loss, ok=False, warnings=warnings, extra=extra)
    a = fit_power_law(budgets, n).exponent
    b = fit_power_law(budgets, d).exponent
    return Estimate("isoflop", a, b, budgets, n, d, loss, warnings=warnings, extra=extra)


def optimal_size(law: ParametricLaw, C: float, flops: FlopsPerToken, n_range=(1e2, 1e12)) -> float:
    """argmin over N of L(N, C / f(N)): the compute-optimal size with exact FLOPs per token."""
    log_lo, log_hi = np.log(n_range[0]), np.log(n_range[1])
    grid = np.linspace(log_lo, log_hi, 400)
    values = law(np.exp(grid), C / flops(np.exp(grid)))
    i = int(np.argmin(values))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    if hi <= lo:
        return float(np.exp(grid[i]))
    res = minimize_scalar(
        lambda x: float(law(np.exp(x), C / flops(np.exp(x)))),
        bounds=(lo, hi),
        method="bounded",
        options={"xatol": 1e-6},
    )
    return float(np.exp(res.x))


def parametric(
    points: Points,
    flops: FlopsPerToken,
    budgets,
    starts: np.ndarray | None = None,
    keep: int = 64,
    objective: str = "huber_log",
    delta: float = 1e-3,
) -> tuple[Estimate, ParametricFit]:
    """Fit L(N, D) and read N_opt numerically at ``budgets``; a and b are the log-log slopes across them."""
    fit = fit_parametric(points.N, points.D, points.L, objective=objective, delta=delta, starts=starts, keep=keep)
    law = fit.law
    budgets = [float(c) for c in budgets]
    n = [optimal_size(law, c, flops) for c in budgets]
    d = [c / float(flops(x)) for c, x in zip(budgets, n, strict=True)]
    loss = [float(law(x, y)) for x, y in zip(n, d, strict=True)]
    a = fit_power_law(budgets, n).exponent
    b = fit_power_law(budgets, d).exponent
    warnings = [f"parametric: {name} is at its bound" for name in fit.at_bounds]
    if not fit.converged:
        warnings.append("parametric: the optimiser did not converge")
    extra = {
        "law": law.to_dict(),
        "closed_form_a": law.a,
        "closed_form_b": law.b,
        "starts": fit.starts,
        "starts_at_best": fit.starts_at_best,
    }
    return Estimate("parametric", a, b, budgets, n, d, loss, ok=fit.converged, warnings=warnings, extra=extra), fit
