"""The scaling harness's steps on the torch backend: prepare the token stores a spec names, sweep its points, fit
the records and write the report (``iris-wm scaling sweep|fit|report|run`` calls these). Each step adds its
wall time to ``<out>/timings.json``."""

from __future__ import annotations

import json
import time
from functools import partial
from pathlib import Path

from iris_wm.runtime.errors import ConfigError
from iris_wm.scaling.backend import TorchBackend
from iris_wm.scaling.prepare import prepare_tokens
from scaling.launchers import LauncherConfig
from scaling.spec import SpecError, SweepSpec, load_spec, reseeded
from scaling.sweep import Sweep

DEFAULT_PREPARE_STEPS = 100_000
__all__ = [
    "LauncherConfig",
    "SpecError",
    "load_spec",
    "reseeded",
    "prepare",
    "sweep",
    "design",
    "fit",
    "report",
    "add_timing",
]


def add_timing(out: Path, stage: str, seconds: float) -> None:
    path = Path(out) / "timings.json"
    timings = json.loads(path.read_text()) if path.exists() else {}
    timings[stage] = seconds
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(timings, indent=1))


def prepare(spec: SweepSpec, out: Path, steps: int | None = None, workers: int = 1, seed: int = 1) -> None:
    """Build each series' token store that does not exist yet (``steps`` Breakout steps, default the series'
    own, collected and its tokenizer trained with ``seed``); refuse an existing store smaller than its series
    asks for."""
    for series in spec.series:
        wanted = steps or series.steps
        manifest = Path(series.store) / "manifest.json"
        if not manifest.exists():
            start = time.perf_counter()
            prepare_tokens(Path(series.store).parent, wanted or DEFAULT_PREPARE_STEPS, seed=seed, workers=workers)
            add_timing(out, f"prepare {series.name}", time.perf_counter() - start)
        elif wanted and (held := json.loads(manifest.read_text())["num_steps"]) < wanted:
            raise ConfigError(
                f"The token store {series.store} holds {held:,} steps, but series {series.name} asks for "
                f"{wanted:,}. Point `store` at a new folder (it is built there), or remove this one and its "
                "episodes to build it again."
            )


def sweep(spec: SweepSpec, out: Path, device: str = "cpu", launcher: LauncherConfig | None = None) -> None:
    """Train every point of ``spec`` not recorded yet, where ``launcher`` says (default: here, one at a time)."""
    start = time.perf_counter()
    factory = partial(TorchBackend, device, progress=False)
    Sweep(spec, TorchBackend(device), out, launcher=launcher, backend_factory=factory).run()
    add_timing(out, "sweep", time.perf_counter() - start)


def design(
    spec: SweepSpec,
    out: Path,
    noise: float,
    laws: int = 40,
    draws: int = 100,
    seed: int = 0,
    correlation: float = 0.0,
) -> dict:
    """Check, before anything trains, whether the spec's design identifies the exponent a (:mod:`scaling.planted`):
    ``laws`` synthetic sweeps of its ladder under laws with random coefficients, log-normal noise of sigma
    ``noise`` correlated ``correlation`` between neighbouring budgets of a trunk (a sweep's report measures both);
    writes ``<out>/design.json`` (one entry per series) and returns it."""
    from scaling.planted import Design, study

    backend = TorchBackend()
    result = {}
    for series in spec.series:
        facts = [backend.describe(series, size, spec) for size in spec.sizes]
        result[series.name] = study(
            Design.from_spec(spec, facts), noise, laws, draws, seed, delta=spec.fit.huber_delta, correlation=correlation
        )
    path = Path(out) / "design.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    return result


def fit(spec: SweepSpec, out: Path) -> dict:
    """Fit the recorded points: ``runs.csv`` and ``fit.json``; returns the fits."""
    from scaling.report import run_fit

    start = time.perf_counter()
    fits = run_fit(spec, out)
    add_timing(out, "fit", time.perf_counter() - start)
    return fits


def report(spec: SweepSpec, out: Path, fits: dict | None = None) -> Path:
    """Plots and ``report.md`` from the fits (read from ``fit.json`` when not given)."""
    from scaling.report import write_report

    if fits is None:
        path = Path(out) / "fit.json"
        if not path.exists():
            raise ConfigError(f"No {path}: fit the records first (the harness's fit step).")
        fits = json.loads(path.read_text())
    return write_report(spec, fits, out, command=f"iris-wm scaling run --spec {spec.name}")
