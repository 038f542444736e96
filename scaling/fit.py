"""From run records to ``fit.json``: three estimators, bootstrap intervals, the held-out check, warnings.

Records with ``role == "fit"`` are the annealed points of the ladder; ``repeat`` records (other seeds at a
few points) measure seed noise; ``holdout`` records are the pre-registered extrapolation and never enter a
fit. Each tokenizer series is fitted on its own, then compared (a, in bits per frame).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from scaling.estimators import Estimate, FlopsPerToken, Points, frontier, isoflop, optimal_size, parametric
from scaling.laws import ParametricLaw, fit_parametric, grid_starts, screen_starts

LEVELS = {"95": (2.5, 97.5), "80": (10.0, 90.0)}


@dataclass
class FitConfig:
    """The subset of the spec's settings the fit needs (so fits run from records alone)."""

    budgets: tuple[float, ...]
    target_budgets: tuple[float, ...]
    bootstrap: int = 1000
    seed: int = 0
    huber_delta: float = 1e-3
    agreement_tolerance: float = 0.15
    min_steps: int = 100


def points_from_records(records: list[dict], metric: str = "val_obs_ce") -> Points:
    return Points(
        N=[r["params"] for r in records],
        D=[r["tokens"] for r in records],
        C=[r["flops"] for r in records],
        L=[r[metric] for r in records],
        group=[r["trunk"] for r in records],
        budget=[r["budget"] if r.get("budget") is not None else np.nan for r in records],
    )


def flops_from_records(records: list[dict]) -> FlopsPerToken:
    return FlopsPerToken([r["params"] for r in records], [r["flops_per_token"] for r in records])


def interval(samples, level: str) -> list[float] | None:
    samples = np.asarray(samples, float)
    samples = samples[np.isfinite(samples)]
    if len(samples) < 2:
        return None
    lo, hi = np.percentile(samples, LEVELS[level])
    return [float(lo), float(hi)]


def summarise(samples, point: float | None = None) -> dict:
    return {
        "estimate": None if point is None or not math.isfinite(point) else float(point),
        "ci95": interval(samples, "95"),
        "ci80": interval(samples, "80"),
    }


def bootstrap(
    points: Points,
    flops: FlopsPerToken,
    config: FitConfig,
    law: ParametricLaw,
    estimators=("frontier", "isoflop", "parametric"),
) -> dict:
    """Replicates that resample whole training runs; every estimator is re-fitted and must re-converge.

    The parametric fit of a replicate starts from the full-data estimate and the best point of Hoffmann et
    al.'s grid for that replicate's data.
    """
    rng = np.random.default_rng(config.seed)
    grid = grid_starts()
    out = {name: {"a": [], "b": [], "failed": 0} for name in estimators}
    out["parametric_law"] = {k: [] for k in ("E", "A", "B", "alpha", "beta", "a_closed")}
    out["n_opt"], out["d_opt"], out["theta"] = [], [], []
    for _ in range(config.bootstrap):
        sample = points.resample_groups(rng)
        for name in estimators:
            if name == "parametric":
                starts = np.vstack(
                    [
                        law.theta(),
                        screen_starts(grid, sample.N, sample.D, sample.L, "huber_log", config.huber_delta, keep=1),
                    ]
                )
                try:
                    est, fit = parametric(
                        sample, flops, config.target_budgets, starts=starts, keep=len(starts), delta=config.huber_delta
                    )
                except ValueError:
                    est, fit = None, None
                ok = est is not None and fit.converged
                if ok:
                    for k in ("E", "A", "B", "alpha", "beta"):
                        out["parametric_law"][k].append(getattr(fit.law, k))
                    out["parametric_law"]["a_closed"].append(fit.law.a)
                    out["n_opt"].append(est.n_opt)
                    out["d_opt"].append(est.d_opt)
                    out["theta"].append(fit.law.theta())
            else:
                est = frontier(sample) if name == "frontier" else isoflop(sample, flops)
                ok = est.ok and math.isfinite(est.a)
            if ok:
                out[name]["a"].append(est.a)
                out[name]["b"].append(est.b)
            else:
                out[name]["failed"] += 1
    return out


def seed_noise(records: list[dict], metric: str = "val_obs_ce") -> dict:
    """Standard deviation of log loss between seeds at the same (size, budget), pooled over repeated points, and
    ``trunk_correlation``: the correlation of a run's deviation from its point's mean with its trunk's deviation at
    the next budget (the branches of one trunk share its training; ``scaling.planted`` simulates both)."""
    by_point: dict[tuple, list[float]] = {}
    for r in records:
        if r["role"] in ("fit", "repeat"):
            by_point.setdefault((r["size"], r["budget"]), []).append(math.log(r[metric]))
    repeated = {k: v for k, v in by_point.items() if len(v) >= 2}
    if not repeated:
        return {"sigma_log": None, "points": 0, "trunk_correlation": None, "pairs": 0}
    mean = {k: float(np.mean(v)) for k, v in repeated.items()}
    ss = sum(((np.array(v) - mean[k]) ** 2).sum() for k, v in repeated.items())
    dof = sum(len(v) - 1 for v in repeated.values())
    # A run's deviation from its point's mean, by trunk and by the index of its budget on the ladder.
    step = {c: i for i, c in enumerate(sorted({r["budget"] for r in records if r["role"] == "fit"}))}
    by_trunk: dict[str, dict[int, float]] = {}
    for r in records:
        if r["role"] == "fit" and (r["size"], r["budget"]) in mean:
            deviation = math.log(r[metric]) - mean[(r["size"], r["budget"])]
            by_trunk.setdefault(r["trunk"], {})[step[r["budget"]]] = deviation
    pairs = [(d[k], d[k + 1]) for d in by_trunk.values() for k in d if k + 1 in d]
    correlation = float(np.corrcoef(np.array(pairs).T)[0, 1]) if len(pairs) >= 3 else None
    return {
        "sigma_log": float(math.sqrt(ss / dof)),
        "points": len(repeated),
        "trunk_correlation": correlation,
        "pairs": len(pairs),
    }


def _prediction_interval(theta_samples, N, D, sigma_log: float, rng) -> dict:
    preds = np.array([np.log(ParametricLaw.from_theta(t)(N, D)) for t in theta_samples])
    preds = preds + rng.normal(0.0, sigma_log, size=len(preds))
    return {"ci95": interval(np.exp(preds), "95"), "ci80": interval(np.exp(preds), "80")}


def holdout_check(
    holdouts: list[dict],
    law: ParametricLaw,
    boot: dict,
    noise: dict,
    residual_sigma: float,
    flops: FlopsPerToken,
    config: FitConfig,
) -> list[dict]:
    """Observed vs predicted loss of each pre-registered held-out run, with a 95% prediction interval from the
    bootstrap replicates plus seed noise (the fit's residual scatter where no point was repeated). Runs of one
    size and budget with several seeds are one check: their mean log loss against the prediction, with the
    seed-noise term divided by sqrt(seeds)."""
    rng = np.random.default_rng(config.seed + 1)
    sigma = noise["sigma_log"] if noise["sigma_log"] is not None else residual_sigma
    groups: dict[tuple, list[dict]] = {}
    for r in holdouts:
        groups.setdefault((r["size"], r["budget"]), []).append(r)
    results = []
    for runs in groups.values():
        runs = sorted(runs, key=lambda r: r.get("seed", 0))
        r = runs[0]
        N, D = r["params"], r["tokens"]
        observed = float(np.exp(np.mean([np.log(x["val_obs_ce"]) for x in runs])))
        predicted = float(law(N, D))
        pi = _prediction_interval(boot["theta"], N, D, sigma / math.sqrt(len(runs)), rng)
        # The compute at which the law predicts the observed loss for this size, over the run's compute.
        floor = law.E + law.A / N**law.alpha
        if observed > floor:
            d_equiv = (law.B / (observed - floor)) ** (1 / law.beta)
            factor = float(d_equiv / D)
        else:
            factor = float("inf")
        lo, hi = pi["ci95"] or (None, None)
        results.append(
            {
                "size": r["size"],
                "params": N,
                "tokens": D,
                "flops": r["flops"],
                "budget": r["budget"],
                "optimal_params_predicted": optimal_size(law, r["budget"], flops),
                "seeds": [x.get("seed", 0) for x in runs],
                "observed_each": [x["val_obs_ce"] for x in runs],
                "observed": observed,
                "predicted": predicted,
                "absolute_error": observed - predicted,
                "relative_error": (observed - predicted) / observed,
                "prediction_interval": pi,
                "inside_95": bool(lo is not None and lo <= observed <= hi),
                "compute_equivalent_factor": factor,
                "epochs": r.get("epochs"),
                "noise_sigma_log": sigma,
                "noise_source": "repeated seeds" if noise["sigma_log"] else "fit residuals",
            }
        )
    return results


def _warnings(records, estimates: dict[str, Estimate], config: FitConfig) -> list[str]:
    warnings = [w for e in estimates.values() for w in e.warnings]
    for c in config.budgets:
        sizes = {r["size"] for r in records if r["budget"] == c}
        if len(sizes) < 3:
            warnings.append(f"budget {c:.3g}: only {len(sizes)} sizes")
    a = {k: e.a for k, e in estimates.items() if e.ok and math.isfinite(e.a)}
    names = sorted(a)
    for i, x in enumerate(names):
        for y in names[i + 1 :]:
            if abs(a[x] - a[y]) > config.agreement_tolerance:
                warnings.append(
                    f"estimators disagree on a: {x} {a[x]:.3f} vs {y} {a[y]:.3f} "
                    f"(tolerance {config.agreement_tolerance})"
                )
    for r in records:
        if r.get("epochs", 0) > 1:
            warnings.append(
                f"{r['size']} at {r['budget']:.3g}: {r['epochs']:.2f} epochs over the unique tokens (repeated data)"
            )
        if r.get("steps", config.min_steps) < config.min_steps:
            warnings.append(f"{r['size']} at {r['budget']:.3g}: only {r['steps']} optimiser steps")
    return warnings


def _estimate_dict(e: Estimate, boot: dict) -> dict:
    b = boot.get(e.name, {"a": [], "b": [], "failed": 0})
    tries = len(b["a"]) + b["failed"]
    return {
        "ok": e.ok,
        "a": summarise(b["a"], e.a),
        "b": summarise(b["b"], e.b),
        "budgets": e.budgets,
        "n_opt": e.n_opt,
        "d_opt": e.d_opt,
        "loss": e.loss,
        "bootstrap_failed_fraction": b["failed"] / tries if tries else None,
        "warnings": e.warnings,
        **e.extra,
    }


def fit_series(records: list[dict], config: FitConfig) -> dict:
    """Every estimator, interval and check for one tokenizer series."""
    records = sorted(records, key=lambda r: r["key"])  # the order workers finished in must not matter
    fits = [r for r in records if r["role"] == "fit"]
    if len(fits) < 5:
        raise ValueError(f"Only {len(fits)} finished fit points; run the sweep first (`iris-wm scaling sweep`).")
    points, flops = points_from_records(fits), flops_from_records(fits)
    estimates = {"frontier": frontier(points), "isoflop": isoflop(points, flops)}
    est, pfit = parametric(points, flops, config.target_budgets, delta=config.huber_delta)
    estimates["parametric"] = est
    levels = fit_parametric(points.N, points.D, points.L, objective="squares_level")
    boot = bootstrap(points, flops, config, pfit.law)
    residuals = np.log(points.L) - np.log(pfit.law(points.N, points.D))
    residual_sigma = float(np.sqrt((residuals**2).sum() / max(1, len(residuals) - 5)))
    noise = seed_noise(records)
    holdouts = holdout_check(
        [r for r in records if r["role"] == "holdout"], pfit.law, boot, noise, residual_sigma, flops, config
    )
    law = boot["parametric_law"]
    n_opt = np.array(boot["n_opt"]) if boot["n_opt"] else np.empty((0, len(config.target_budgets)))
    d_opt = np.array(boot["d_opt"]) if boot["d_opt"] else np.empty((0, len(config.target_budgets)))
    recommendations = [
        {
            "budget": c,
            "n_opt": summarise(n_opt[:, i], est.n_opt[i]),
            "d_opt": summarise(d_opt[:, i], est.d_opt[i]),
            "loss": est.loss[i],
            "isoflop_n_opt": float(estimates["isoflop"].n_opt_at(c)) if estimates["isoflop"].ok else None,
        }
        for i, c in enumerate(config.target_budgets)
    ]
    return {
        "points": len(fits),
        "estimators": {k: _estimate_dict(e, boot) for k, e in estimates.items()},
        "parametric_law": {k: summarise(law[k], getattr(pfit.law, k)) for k in ("E", "A", "B", "alpha", "beta")}
        | {
            "a_closed_form": summarise(law["a_closed"], pfit.law.a),
            "objective": "summed Huber on log L",
            "huber_delta": config.huber_delta,
            "converged": pfit.converged,
            "starts": pfit.starts,
            "starts_at_best": pfit.starts_at_best,
            "residual_sigma_log": residual_sigma,
        },
        "least_squares_levels": {**levels.law.to_dict(), "converged": levels.converged},
        "bootstrap": {
            "replicates": config.bootstrap,
            "unit": "training run (trunk)",
            "parametric_failed_fraction": boot["parametric"]["failed"] / max(1, config.bootstrap),
        },
        "seed_noise": noise,
        "recommendations": recommendations,
        "holdout": holdouts,
        "warnings": _warnings(fits, estimates, config),
    }


def fit_records(records: list[dict], config: FitConfig) -> dict:
    """Fit each series; where there are several, compare the exponents and losses in bits per frame."""
    series = sorted({r["series"] for r in records})
    result = {"series": {}}
    for name in series:
        result["series"][name] = fit_series([r for r in records if r["series"] == name], config)
    if len(series) > 1:
        result["tokenizer_axis"] = _tokenizer_axis(records, result["series"])
    return result


def _tokenizer_axis(records: list[dict], fits: dict) -> list[dict]:
    rows = []
    for name, fit in fits.items():
        mine = [r for r in records if r["series"] == name and r["role"] == "fit"]
        best = min(mine, key=lambda r: r["val_bits_per_frame"])
        rows.append(
            {
                "series": name,
                "tokens_per_frame": mine[0]["tokens_per_frame"],
                "a_parametric": fit["estimators"]["parametric"]["a"],
                "a_isoflop": fit["estimators"]["isoflop"]["a"],
                "best_bits_per_frame": best["val_bits_per_frame"],
                "best_size": best["size"],
            }
        )
    return sorted(rows, key=lambda r: r["tokens_per_frame"])
