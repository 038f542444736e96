"""``iris-wm scaling sweep|fit|report|run``: the scaling harness (:mod:`iris_wm.scaling.harness`) from the command
line.

- ``sweep``: train every point the spec names (resumable: finished points are skipped).
- ``fit``: fit the recorded points: ``runs.csv`` and ``fit.json``.
- ``report``: plots and ``report.md`` from ``fit.json``.
- ``run``: all three, preparing the Breakout token store first when it is missing (what `make scaling` does).
- ``design``: before a sweep, whether its design identifies the exponent a under planted laws (``design.json``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

from iris_wm.runtime.errors import ConfigError

USAGE = """usage: iris-wm scaling VERB --spec SPEC.yaml [options]

verbs:
  sweep   train the spec's points (resumable)
  fit     fit the recorded points: runs.csv, fit.json
  report  plots and report.md from fit.json
  run     prepare the token store if missing, then sweep, fit and report (make scaling)
  design  check the spec's design on planted laws with random coefficients before training (design.json)

Each verb explains its options with --help.
"""


def _parser(verb: str):
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(prog=f"iris-wm scaling {verb}", description=__doc__, default_config_files=[])
    parser.add_argument("--spec", type=str, required=True, help="Sweep spec YAML (profiles in configs/scaling/).")
    parser.add_argument("--out", type=str | None, default=None, help="Output folder (default: the spec's `out`).")
    if verb in ("sweep", "run"):
        parser.add_argument("--device", type=str, default="cpu", help="torch device to train on (cpu, cuda).")
        parser.add_argument(
            "--series",
            type=list[str] | None,
            default=None,
            help="Sweep only these series of the spec (one process per GPU, say).",
        )
        parser.add_argument(
            "--workers",
            type=int,
            default=1,
            help="Trunks trained at once on this machine, in processes of one thread each (2 on a 2-core CPU); "
            "with `run`, also the processes that collect a missing token store's episodes.",
        )
        parser.add_argument(
            "--launcher",
            type=Literal["local", "submitit"],
            default="local",
            help="Where trunks train: `local` (this machine, --workers at once) or `submitit` (a job per trunk: "
            "Slurm where sbatch exists; needs pip install 'iris-wm[cluster]').",
        )
        parser.add_argument(
            "--cluster",
            type=str | None,
            default=None,
            help="submitit's cluster: slurm, local (processes of this machine) or debug (default: Slurm if present).",
        )
        parser.add_argument(
            "--job",
            type=dict,
            default={},
            help="submitit's job parameters, e.g. '{timeout_min: 120, slurm_partition: gpu, gpus_per_node: 1, "
            "cpus_per_task: 8}' (AutoExecutor.update_parameters).",
        )
    if verb == "design":
        parser.add_argument(
            "--noise", type=float, default=0.03, help="Log-normal sigma of each point's loss (seed noise)."
        )
        parser.add_argument(
            "--correlation",
            type=float,
            default=0.0,
            help="Correlation of that noise between neighbouring budgets of one trunk (a sweep's report.md measures "
            "it beside the seed noise; 0: independent points).",
        )
        parser.add_argument("--laws", type=int, default=40, help="Planted laws drawn with random coefficients.")
        parser.add_argument("--draws", type=int, default=100, help="Bootstrap replicates of each fit.")
        parser.add_argument("--draw_seed", type=int, default=0, help="Seed of the planted laws and their noise.")
    else:
        parser.add_argument(
            "--seed",
            type=int,
            default=0,
            help="Repeat the whole study independently (own episodes, tokenizer and training seeds; output in "
            "<out>-seed<n>): 0 is the spec as written.",
        )
    if verb == "run":
        parser.add_argument(
            "--prepare_steps",
            type=int | None,
            default=None,
            help="Breakout steps to collect when the spec's token store does not exist yet "
            "(default: the series' `steps`).",
        )
    return parser


def _print_fits(fits: dict) -> None:
    for name, fit in fits["series"].items():
        est = fit["estimators"]
        a = ", ".join(
            f"{k} {v['a']['estimate']:.3f}" if v["a"]["estimate"] is not None else f"{k} n/a" for k, v in est.items()
        )
        print(f"[{name}] exponent a of N_opt ~ C^a: {a}")
        for h in fit["holdout"]:
            print(
                f"[{name}] held-out {h['size']}: observed {h['observed']:.4f}, predicted {h['predicted']:.4f} "
                f"({100 * h['relative_error']:+.2f}%), inside the 95% PI: {h['inside_95']}"
            )
        for w in fit["warnings"]:
            print(f"[{name}] warning: {w}")


def _spec(cfg):
    from iris_wm.scaling.harness import load_spec, reseeded

    spec = load_spec(cfg.spec)
    if cfg.get("series"):
        unknown = sorted(set(cfg.series) - {s.name for s in spec.series})
        if unknown:
            raise ConfigError(
                f"--series {unknown} not in the spec {cfg.spec} (it has {[s.name for s in spec.series]})."
            )
        spec = dataclasses.replace(spec, series=tuple(s for s in spec.series if s.name in cfg.series))
    return reseeded(spec, cfg.get("seed") or 0)


def main(argv: list[str]) -> None:
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return
    verb, rest = argv[0], argv[1:]
    if verb not in ("sweep", "fit", "report", "run", "design"):
        raise ConfigError(
            f"unknown verb {verb!r}: use one of sweep, fit, report, run, design (iris-wm scaling --help)."
        )
    from iris_wm.scaling import harness
    from iris_wm.scaling.harness import LauncherConfig

    cfg = _parser(verb).parse_args(rest)
    spec = _spec(cfg)
    out = Path(cfg.out or spec.out)
    if verb == "design":
        for name, result in harness.design(
            spec, out, cfg.noise, cfg.laws, cfg.draws, cfg.draw_seed, cfg.correlation
        ).items():
            print(
                f"[{name}] {result['laws']} planted laws, noise {cfg.noise} (correlation {cfg.correlation}): "
                f"median |error of a| "
                f"{result['median_abs_error']:.3f} (95% over laws: {result['median_abs_error_ci95'][0]:.3f}-"
                f"{result['median_abs_error_ci95'][1]:.3f}), the 95% interval covers the true a in "
                f"{100 * result['coverage_95']:.0f}%, "
                f"worst {result['worst_abs_error']:.3f} ({out / 'design.json'})"
            )
        return
    if verb in ("sweep", "run") and cfg.launcher == "local" and (cfg.cluster or cfg.job):
        raise ConfigError("--cluster and --job set submitit's executor: add --launcher submitit, or drop them.")
    if verb == "run":
        harness.prepare(spec, out, cfg.prepare_steps, cfg.workers, seed=1 + cfg.seed)
    if verb in ("sweep", "run"):
        launcher = LauncherConfig(
            cfg.launcher, 1 if cfg.launcher == "submitit" else cfg.workers, 1, cfg.cluster, cfg.job
        )
        harness.sweep(spec, out, cfg.device, launcher)
    fits = None
    if verb in ("fit", "run"):
        fits = harness.fit(spec, out)
        _print_fits(fits)
    if verb in ("report", "run"):
        print(f"report: {harness.report(spec, out, fits)}")
