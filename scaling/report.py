"""``runs.csv``, ``fit.json``, the plots and ``report.md``: what a person reads first."""

from __future__ import annotations

import json
import math
from pathlib import Path

from scaling.fit import FitConfig, fit_records
from scaling.plot import plot_all
from scaling.records import read_records, record_problem, write_csv
from scaling.spec import SweepSpec

REFERENCES = {
    "Kaplan et al. 2020 (N_opt ~ C^a)": 0.73,
    "Hoffmann et al. 2022, approaches 1 / 2 / 3": [0.50, 0.49, 0.46],
    "Besiroglu et al. 2024 (Epoch replication, summed Huber)": 0.514,
    "Pearce et al. 2024, world models, 256 / 540 tokens per image": [0.49, 0.62],
}


def fit_config(spec: SweepSpec) -> FitConfig:
    f = spec.fit
    return FitConfig(
        budgets=spec.budgets,
        target_budgets=spec.target_budgets,
        bootstrap=f.bootstrap,
        seed=f.seed,
        huber_delta=f.huber_delta,
        agreement_tolerance=f.agreement_tolerance,
        min_steps=f.min_steps,
    )


def run_fit(spec: SweepSpec, out: Path | None = None) -> dict:
    """Read the records, fit, and write ``runs.csv`` and ``fit.json``."""
    out = Path(out or spec.out)
    records = read_records(out / "records.jsonl")
    if not records:
        raise ValueError(f"No records in {out / 'records.jsonl'}: run the sweep first (`iris-wm scaling sweep`).")
    for number, record in enumerate(records, 1):
        problem = record_problem(record, fitted=True)
        if problem:
            raise ValueError(
                f"{out / 'records.jsonl'}, record {number} ({record.get('key')}): {problem}. Remove that line (the "
                "sweep runs its point again)."
            )
    stores: dict[str, set] = {}
    for record in records:
        stores.setdefault(record["series"], set()).add(record.get("store_digest"))
    mixed = {name: sorted(map(str, digests)) for name, digests in stores.items() if len(digests) > 1}
    if mixed:
        raise ValueError(
            f"{out / 'records.jsonl'} holds points from more than one token store for series "
            f"{', '.join(f'{k} (store digests {v})' for k, v in mixed.items())}: they would be fitted "
            "as one. Give the sweep another `out` folder, or move the old records away."
        )
    write_csv(records, out / "runs.csv")
    fits = fit_records(records, fit_config(spec))
    fits["spec"] = spec.to_dict()
    fits["references"] = REFERENCES
    (out / "fit.json").write_text(json.dumps(fits, indent=1, default=_json_default))
    return fits


def _json_default(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return float(x) if hasattr(x, "__float__") else str(x)


def _fmt(summary: dict, digits: int = 3) -> str:
    est = summary.get("estimate")
    if est is None:
        return "n/a"
    text = f"{est:.{digits}f}" if abs(est) < 1e4 else f"{est:.3g}"
    ci = summary.get("ci95")
    if ci:
        lo, hi = ci
        text += f" [{lo:.{digits}f}, {hi:.{digits}f}]" if abs(est) < 1e4 else f" [{lo:.3g}, {hi:.3g}]"
    return text


def _series_section(name: str, fit: dict, plots: list[Path], out: Path) -> list[str]:
    est = fit["estimators"]
    law = fit["parametric_law"]
    lines = [
        f"## Series {name}",
        "",
        f"{fit['points']} annealed points; bootstrap {fit['bootstrap']['replicates']} "
        f"replicates, each resampling whole training runs (trunks). Brackets are 95% intervals.",
        "",
        "| estimator | a (N_opt ~ C^a) | b (D_opt ~ C^b) | budgets used | bootstrap failures |",
        "| --- | --- | --- | --- | --- |",
    ]
    for key in ("frontier", "isoflop", "parametric"):
        e = est[key]
        failed = e["bootstrap_failed_fraction"]
        lines.append(
            f"| {key} | {_fmt(e['a'])} | {_fmt(e['b'])} | {len(e['budgets'])} | "
            f"{'n/a' if failed is None else f'{100 * failed:.1f}%'} |"
        )
    lines += [
        "",
        "Parametric law L(N, D) = E + A / N^alpha + B / D^beta (summed Huber on log L, delta "
        f"{law['huber_delta']:g}, multi-start L-BFGS-B; converged: {law['converged']}, "
        f"{law['starts_at_best']} of {law['starts']} starts at the optimum):",
        "",
        "| E | A | B | alpha | beta | a = beta/(alpha+beta) | a by least squares in levels |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        f"| {_fmt(law['E'])} | {_fmt(law['A'])} | {_fmt(law['B'])} | {_fmt(law['alpha'])} | {_fmt(law['beta'])} "
        f"| {_fmt(law['a_closed_form'])} | {fit['least_squares_levels']['a']:.3f} |",
        "",
        "Compute-optimal allocation (parametric, exact FLOPs per token, found numerically):",
        "",
        "| budget (FLOPs) | N_opt | D_opt (tokens) | predicted loss | isoFLOP N_opt |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in fit["recommendations"]:
        iso = f"{r['isoflop_n_opt']:,.0f}" if r["isoflop_n_opt"] else "n/a"
        lines.append(f"| {r['budget']:.3g} | {_fmt(r['n_opt'], 0)} | {_fmt(r['d_opt'], 0)} | {r['loss']:.4f} | {iso} |")
    lines += ["", "Pre-registered extrapolation (never in a fit):", ""]
    if not fit["holdout"]:
        lines.append("No held-out run recorded yet.")
    for h in fit["holdout"]:
        lo, hi = h["prediction_interval"]["ci95"] or (math.nan, math.nan)
        seeds = h.get("observed_each", [h["observed"]])
        each = ""
        if len(seeds) > 1:
            each = f" (geometric mean of {len(seeds)} seeds: {', '.join(f'{x:.4f}' for x in seeds)})"
        lines += [
            f"- {h['size']} (N = {h['params']:,}) at {h['budget']:.3g} FLOPs (predicted optimum "
            f"N = {h['optimal_params_predicted']:,.0f}): observed {h['observed']:.4f}{each}, predicted "
            f"{h['predicted']:.4f} nats/token; error {h['absolute_error']:+.4f} "
            f"({100 * h['relative_error']:+.2f}%); "
            f"95% prediction interval [{lo:.4f}, {hi:.4f}] ({'inside' if h['inside_95'] else 'OUTSIDE'}; noise "
            f"from {h['noise_source']}, sigma {h['noise_sigma_log']:.4f} in log loss per run); "
            f"compute-equivalent factor {h['compute_equivalent_factor']:.2f}; {h['epochs']:.2f} epochs over "
            "the unique training tokens."
        ]
    noise = fit["seed_noise"]
    if noise["sigma_log"] is not None:
        lines += [
            "",
            f"Seed noise: sigma {noise['sigma_log']:.4f} in log loss from {noise['points']} repeated point(s)"
            + (
                f"; correlation {noise['trunk_correlation']:.2f} between a trunk's neighbouring budgets "
                f"({noise['pairs']} pairs)."
                if noise.get("trunk_correlation") is not None
                else "."
            ),
        ]
    lines += ["", "Warnings:", ""] + ([f"- {w}" for w in fit["warnings"]] or ["- none"])
    lines += [""] + [f"![{p.stem}]({p.relative_to(out)})" for p in plots]
    return lines + [""]


def write_report(spec: SweepSpec, fits: dict, out: Path | None = None, command: str = "make scaling") -> Path:
    out = Path(out or spec.out)
    records = read_records(out / "records.jsonl")
    plots = plot_all(records, fits, out)
    timings = json.loads((out / "timings.json").read_text()) if (out / "timings.json").exists() else {}
    lines = [
        f"# Scaling report: {spec.name}",
        "",
        spec.description,
        "",
        f"Reproduce: `{command}` (spec `{spec.name}`; records in `records.jsonl`, one row per point in "
        "`runs.csv`, every coefficient in `fit.json`).",
        "",
    ]
    if timings:
        lines += ["Wall time: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in timings.items()), ""]
    lines += [
        "Counting: N is every parameter, output head included; FLOPs per training token are exact "
        "(6 x matmul weights of blocks and heads + 6 x attention at full context); D counts every token "
        "processed. Loss: mean cross-entropy over observation tokens of a fixed set of held-out episodes, "
        "in nats. Exponents on CPU-sized models are a test of the pipeline, not science.",
        "",
    ]
    if "tokenizer_axis" in fits:
        lines += [
            "## Tokenizer axis (bits per frame compare tokenizers)",
            "",
            "| series | tokens per frame | a parametric | a isoFLOP | best bits per frame (size) |",
            "| --- | --- | --- | --- | --- |",
        ]
        for row in fits["tokenizer_axis"]:
            lines.append(
                f"| {row['series']} | {row['tokens_per_frame']} | {_fmt(row['a_parametric'])} | "
                f"{_fmt(row['a_isoflop'])} | {row['best_bits_per_frame']:.2f} ({row['best_size']}) |"
            )
        lines.append("")
    for name, fit in fits["series"].items():
        lines += _series_section(name, fit, plots.get(name, []), out)
    lines += ["## References", ""] + [f"- {k}: {v}" for k, v in REFERENCES.items()]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
