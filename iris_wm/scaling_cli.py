"""``iris-wm scaling sweep|fit|report|run``: the scaling harness from the command line.

- ``sweep``: train every point the spec names (resumable: finished points are skipped).
- ``fit``: fit the recorded points: ``runs.csv`` and ``fit.json``.
- ``report``: plots and ``report.md`` from ``fit.json``.
- ``run``: all three, preparing the Breakout token store first when it is missing (what `make scaling` does).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

USAGE = """usage: iris-wm scaling VERB --spec SPEC.yaml [options]

verbs:
  sweep   train the spec's points (resumable)
  fit     fit the recorded points: runs.csv, fit.json
  report  plots and report.md from fit.json
  run     prepare the token store if missing, then sweep, fit and report (make scaling)

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
            help="Trunks trained at once, in processes of one thread each (2 on a 2-core CPU); "
            "with `run`, also the processes that collect a missing token store's episodes.",
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


def _sweep(spec, out: Path, device: str, workers: int) -> None:
    from functools import partial

    from iris_wm.scaling_backend import TorchBackend
    from scaling.sweep import Sweep

    start = time.perf_counter()
    factory = partial(TorchBackend, device, progress=False)
    Sweep(spec, TorchBackend(device), out, workers=workers, backend_factory=factory).run()
    _add_timing(out, "sweep", time.perf_counter() - start)


def _add_timing(out: Path, stage: str, seconds: float) -> None:
    path = out / "timings.json"
    timings = json.loads(path.read_text()) if path.exists() else {}
    timings[stage] = seconds
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(timings, indent=1))


def _fit(spec, out: Path) -> dict:
    from scaling.report import run_fit

    start = time.perf_counter()
    try:
        fits = run_fit(spec, out)
    except ValueError as err:
        raise SystemExit(f"iris-wm scaling fit: {err}") from None
    _add_timing(out, "fit", time.perf_counter() - start)
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
    return fits


def _report(spec, out: Path, fits: dict | None = None) -> Path:
    from scaling.report import write_report

    if fits is None:
        path = out / "fit.json"
        if not path.exists():
            raise SystemExit(f"No {path}: run `iris-wm scaling fit --spec ...` first.")
        fits = json.loads(path.read_text())
    report = write_report(spec, fits, out, command=f"iris-wm scaling run --spec {spec.name}")
    print(f"report: {report}")
    return report


def main(argv: list[str]) -> None:
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return
    verb, rest = argv[0], argv[1:]
    if verb not in ("sweep", "fit", "report", "run"):
        raise SystemExit(f"iris-wm scaling: unknown verb {verb!r}.\n\n{USAGE}")
    from scaling.spec import SpecError, load_spec

    cfg = _parser(verb).parse_args(rest)
    try:
        spec = load_spec(cfg.spec)
    except SpecError as err:
        raise SystemExit(f"iris-wm scaling: {err}") from None
    out = Path(cfg.out or spec.out)
    if cfg.get("series"):
        unknown = sorted(set(cfg.series) - {s.name for s in spec.series})
        if unknown:
            raise SystemExit(
                f"iris-wm scaling: --series {unknown} not in the spec (it has {[s.name for s in spec.series]})."
            )
        spec = dataclasses.replace(spec, series=tuple(s for s in spec.series if s.name in cfg.series))
    if verb == "run":
        from iris_wm.scaling_data import prepare_tokens

        for series in spec.series:
            steps = cfg.prepare_steps or series.steps
            manifest = Path(series.store) / "manifest.json"
            if not manifest.exists():
                start = time.perf_counter()
                prepare_tokens(Path(series.store).parent, steps or 100_000, workers=cfg.workers)
                _add_timing(out, f"prepare {series.name}", time.perf_counter() - start)
            elif steps and (held := json.loads(manifest.read_text())["num_steps"]) < steps:
                raise SystemExit(
                    f"iris-wm scaling: the token store {series.store} holds {held:,} steps, but series "
                    f"{series.name} asks for {steps:,}. Point `store` at a new folder (it is built "
                    "there), or remove this one and its episodes to build it again."
                )
    try:
        if verb in ("sweep", "run"):
            _sweep(spec, out, cfg.device, cfg.workers)
    except SpecError as err:
        raise SystemExit(f"iris-wm scaling: {err}") from None
    fits = _fit(spec, out) if verb in ("fit", "run") else None
    if verb in ("report", "run"):
        _report(spec, out, fits)
