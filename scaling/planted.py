"""Planted laws: does a sweep's design identify the exponent a of N_opt ~ C^a before anything trains?

Synthetic losses are drawn from a known L(N, D) = E + A / N^alpha + B / D^beta on exactly the points a spec's
ladder records (every size on every budget, the repeated seeds, several seeds where asked), with log-normal
noise; the parametric fit and its bootstrap by training run then run as on real records. Over many laws drawn
with random coefficients (SCALING.md's ranges: E in [1, 3], A and B in 10^[1.5, 3], alpha and beta in
[0.2, 0.55]) the study reports the median absolute error of a, how often the 95% interval covers the true a,
and the worst draw. Three budgets a decade apart do not identify a even at small noise: E, A and alpha trade
off (docs/LOG.md); this is how a design is checked before a sweep spends hours on it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scaling.estimators import FlopsPerToken, Points, parametric
from scaling.fit import FitConfig, bootstrap, interval
from scaling.laws import ParametricLaw

RANDOM_RANGES = {
    "E": (1.0, 3.0),
    "log10_A": (1.5, 3.0),
    "log10_B": (1.5, 3.0),
    "alpha": (0.2, 0.55),
    "beta": (0.2, 0.55),
}


@dataclass(frozen=True)
class Design:
    """The fitted points of a sweep: sizes (parameters and FLOPs per token) on budgets, ``seeds`` trunks of every
    size, and ``repeats`` ((size index, budget): one more trunk at that point). ``cells`` ((size index, budget))
    are the points of each trunk where a band leaves some out; None: every size on every budget."""

    params: tuple[float, ...]
    flops_per_token: tuple[float, ...]
    budgets: tuple[float, ...]
    seeds: int = 1
    repeats: tuple[tuple[int, float], ...] = ()
    cells: tuple[tuple[int, float], ...] | None = None

    def points(self) -> tuple[np.ndarray, ...]:
        """(N, D, C, trunk) of every recorded point."""
        cells = self.cells
        if cells is None:
            cells = tuple((i, budget) for i in range(len(self.params)) for budget in self.budgets)
        n, f, c, trunk = [], [], [], []
        for seed in range(self.seeds):
            for i, budget in cells:
                n.append(self.params[i]), f.append(self.flops_per_token[i]), c.append(budget)
                trunk.append(seed * len(self.params) + i)
        for j, (i, budget) in enumerate(self.repeats):
            n.append(self.params[i]), f.append(self.flops_per_token[i]), c.append(budget)
            trunk.append(self.seeds * len(self.params) + j)
        n, f, c = (np.array(x, float) for x in (n, f, c))
        return n, c / f, c, np.array(trunk)

    def log_noise(self, sigma: float, correlation: float, rng: np.random.Generator) -> np.ndarray:
        """Seed noise of log loss on every point: normal with sigma ``sigma``, independent between trunks and, along
        a trunk, correlated ``correlation`` ** k between points k budgets apart (its branches share its training
        up to their budget; an AR(1) over the ladder's budgets). ``correlation`` 0: independent points."""
        n, _, c, trunk = self.points()
        if correlation == 0:
            return rng.normal(0.0, sigma, len(n))
        if not 0 <= correlation < 1:
            raise ValueError(
                f"correlation must be in [0, 1), got {correlation}: use the one a sweep's report.md measures beside "
                "the seed noise (0: independent points)."
            )
        step = np.searchsorted(np.sort(self.budgets), c)
        z, eps = rng.normal(0.0, 1.0, len(n)), np.empty(len(n))
        for t in np.unique(trunk):
            on = np.flatnonzero(trunk == t)
            on = on[np.argsort(step[on], kind="stable")]
            eps[on[0]] = z[on[0]]
            for prev, i in zip(on[:-1], on[1:], strict=True):
                r = correlation ** (step[i] - step[prev])
                eps[i] = r * eps[prev] + np.sqrt(1 - r * r) * z[i]
        return sigma * eps

    @classmethod
    def from_spec(cls, spec, facts: list[dict]) -> Design:
        """The ladder of ``spec`` (its band included) with the backend's ``facts`` (``describe``) of each size."""
        return cls(
            tuple(float(f["params"]) for f in facts),
            tuple(float(f["flops_per_token"]) for f in facts),
            tuple(float(b) for b in spec.budgets),
            len(spec.seeds),
            tuple((r.size, float(r.budget)) for r in spec.repeats),
            tuple((i, float(b)) for i, f in enumerate(facts) for b in spec.ladder_budgets(f)),
        )


def random_law(rng: np.random.Generator, ranges: dict = RANDOM_RANGES) -> ParametricLaw:
    return ParametricLaw(
        E=rng.uniform(*ranges["E"]),
        A=10 ** rng.uniform(*ranges["log10_A"]),
        B=10 ** rng.uniform(*ranges["log10_B"]),
        alpha=rng.uniform(*ranges["alpha"]),
        beta=rng.uniform(*ranges["beta"]),
    )


def recover(
    design: Design,
    law: ParametricLaw,
    noise: float,
    rng: np.random.Generator,
    draws: int = 100,
    delta: float = 1e-3,
    correlation: float = 0.0,
) -> dict:
    """One synthetic sweep of ``design`` under ``law`` (log-normal noise of sigma ``noise`` on every point,
    ``correlation`` between neighbouring budgets of a trunk): the fitted a, its 95% bootstrap interval, and whether
    the fit and its replicates converged."""
    n, d, c, trunk = design.points()
    loss = law(n, d) * np.exp(design.log_noise(noise, correlation, rng))
    points = Points(n, d, c, loss, trunk, c)
    flops = FlopsPerToken(design.params, design.flops_per_token)
    _, fit = parametric(points, flops, design.budgets, keep=16, delta=delta)
    config = FitConfig(
        design.budgets, design.budgets, bootstrap=draws, seed=int(rng.integers(2**31)), huber_delta=delta
    )
    boot = bootstrap(points, flops, config, fit.law, estimators=("parametric",))
    ci = interval(boot["parametric_law"]["a_closed"], "95")
    return {
        "true_a": float(law.a),
        "a": float(fit.law.a),
        "error": float(fit.law.a - law.a),
        "ci95": ci,
        "covered": bool(ci is not None and ci[0] <= law.a <= ci[1]),
        "converged": bool(fit.converged),
        "failed_replicates": boot["parametric"]["failed"] / draws,
        "law": {k: float(v) for k, v in law.to_dict().items()},
    }


def median_interval(errors, seed: int = 0, resamples: int = 2000) -> list[float]:
    """95% percentile-bootstrap interval of the median of ``errors`` over the laws: how far another draw of as many
    laws could move it. Forty laws on cpu_default at its measured noise: 0.053, interval 0.036-0.081 (docs/LOG.md,
    issue 22), wider than most differences between designs."""
    errors = np.asarray(errors, float)
    rng = np.random.default_rng([seed, 2])
    medians = np.median(errors[rng.integers(0, len(errors), (resamples, len(errors)))], axis=1)
    return [float(x) for x in np.percentile(medians, [2.5, 97.5])]


def study(
    design: Design,
    noise: float,
    laws: int = 40,
    draws: int = 100,
    seed: int = 0,
    law: ParametricLaw | None = None,
    delta: float = 1e-3,
    correlation: float = 0.0,
) -> dict:
    """``laws`` synthetic sweeps, each under a law drawn with random coefficients (or under ``law`` every time):
    the median absolute error of a (with its 95% interval over the laws), the coverage of its 95% interval, the worst
    error, and each draw."""
    # Laws and noise from separate streams: two designs studied with one seed meet the same laws.
    law_rng, noise_rng = np.random.default_rng([seed, 0]), np.random.default_rng([seed, 1])
    drawn = [law or random_law(law_rng) for _ in range(laws)]
    runs = [recover(design, truth, noise, noise_rng, draws, delta, correlation) for truth in drawn]
    errors = np.abs([r["error"] for r in runs])
    return {
        "noise": noise,
        "correlation": correlation,
        "huber_delta": delta,
        "laws": laws,
        "draws": draws,
        "points": len(design.points()[0]),
        "median_abs_error": float(np.median(errors)),
        "median_abs_error_ci95": median_interval(errors, seed),
        "median_error": float(np.median([r["error"] for r in runs])),
        "coverage_95": float(np.mean([r["covered"] for r in runs])),
        "worst_abs_error": float(errors.max()),
        "converged": float(np.mean([r["converged"] for r in runs])),
        "runs": runs,
    }
