"""Plan and run a sweep: one constant-LR trunk per size with (1 - sqrt) cooldown branches on the budget lines.

A branch that ends at ``S`` optimiser steps forks from its trunk at ``S - cooldown`` (cooldown = about 20%
of ``S``) and decays the learning rate to zero, so every recorded point is an annealed model (Hägele et al.
2024) and a trunk serves all budgets for about half the cost of separate runs.

Order of work for each series (token store): the learning-rate calibration, the ladder (every size on
every budget, plus the repeated seeds), then the pre-registered held-out runs at the size the parametric
fit of the ladder predicts to be optimal. Each finished point appends a record; a rerun skips the points
whose key is already recorded, so the sweep is resumable and idempotent.

Training itself is the backend's (``iris_wm.scaling_backend``): this module needs no torch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np

from scaling.estimators import FlopsPerToken, optimal_size
from scaling.fit import points_from_records
from scaling.launchers import Launcher, LauncherConfig, TrunkJob
from scaling.laws import fit_parametric
from scaling.records import RECORDS, append_record, read_records, run_key
from scaling.spec import Series, Size, SpecError, SweepSpec, branch_steps


@dataclass
class Branch:
    """One annealed point: train to ``steps`` optimiser steps, the last ``cooldown`` of them decaying."""

    budget: float
    steps: int
    cooldown: int
    key: str = ""

    @property
    def fork(self) -> int:
        return self.steps - self.cooldown


@dataclass
class Trunk:
    """A constant-LR run of one size and seed, and the branches it forks."""

    role: str  # "calibration", "fit", "repeat" or "holdout"
    series: Series
    size: Size
    seed: int
    learning_rate: float
    facts: dict  # the backend's description: params, flops_per_token, tokens_per_step, ...
    branches: list[Branch] = field(default_factory=list)
    key: str = ""

    @property
    def tokens_per_step(self) -> int:
        return self.facts["tokens_per_step"]

    def steps(self) -> int:
        """Optimiser steps of the trunk up to its last fork plus every cooldown."""
        return max((b.fork for b in self.branches), default=0) + sum(b.cooldown for b in self.branches)

    def flops(self) -> float:
        """Training FLOPs of those steps."""
        return self.steps() * self.tokens_per_step * self.facts["flops_per_token"]


class Backend(Protocol):
    def describe(self, series: Series, size: Size, spec: SweepSpec) -> dict:
        """Exact counts of a size on a series: ``params``, ``params_non_embedding``, ``flops_per_token``,
        ``tokens_per_step``, ``unique_tokens``, ``tokens_per_frame``, ``vocab_size``, ``store_digest``."""

    def train(self, trunk: Trunk, spec: SweepSpec, out: Path, on_point: Callable[[Branch, dict], None]) -> None:
        """Train ``trunk`` and each of its branches, calling ``on_point(branch, measurements)`` as each ends."""


def base_learning_rate(spec: SweepSpec, params: float) -> float:
    rule = spec.learning_rate
    return rule.base * (params / rule.reference_params) ** rule.exponent


def _trunk_key(trunk: Trunk, spec: SweepSpec) -> str:
    settings = {
        "store": trunk.facts["store_digest"],
        "size": trunk.size.label,
        "seed": trunk.seed,
        "lr": round(trunk.learning_rate, 12),
        "batch": spec.batch_size,
        "context": spec.context_steps,
        "warmup": spec.warmup_steps,
        "wd": spec.weight_decay,
        "dropout": spec.dropout,
        "precision": spec.precision,
        "split": [spec.val_fraction, spec.split_seed],
        "eval": spec.eval_windows,
    }
    return run_key(settings)


def make_trunk(
    role: str, series: Series, size: Size, seed: int, lr: float, facts: dict, budgets, spec: SweepSpec
) -> Trunk:
    trunk = Trunk(role, series, size, seed, lr, facts)
    trunk.key = _trunk_key(trunk, spec)
    for c in sorted(budgets):
        steps = branch_steps(c, facts)
        cooldown = max(1, round(spec.cooldown_fraction * steps))
        branch = Branch(budget=float(c), steps=steps, cooldown=cooldown)
        branch.key = run_key({"trunk": trunk.key, "steps": steps, "cooldown": cooldown, "role": role})
        trunk.branches.append(branch)
    return trunk


def check_trunk(trunk: Trunk, spec: SweepSpec) -> None:
    """Refuse, before anything trains, a branch too short for the warmup or one that repeats data too much."""
    for b in trunk.branches:
        if spec.warmup_steps > b.steps / 2:
            raise SpecError(
                f"{trunk.size.label} at budget {b.budget:.3g} has only {b.steps} steps, fewer than twice the warmup "
                f"({spec.warmup_steps}); lower warmup_steps or batch_size, or raise the smallest budget."
            )
        epochs = b.steps * trunk.tokens_per_step / trunk.facts["unique_tokens"]
        if epochs > spec.max_epochs and not spec.allow_repeated_data:
            raise SpecError(
                f"{trunk.series.name}: {trunk.size.label} at budget {b.budget:.3g} would take {epochs:.1f} epochs of "
                f"the {trunk.facts['unique_tokens']:,} unique training tokens (limit {spec.max_epochs}); collect more "
                "data, lower the budgets, or set allow_repeated_data: true."
            )


def check_band(spec: SweepSpec, facts: dict[Size, dict]) -> None:
    """Refuse, before anything trains, a band that leaves a size without points, a budget with fewer than 3 sizes
    (no isoFLOP minimum), or a repeat on a point the ladder does not train."""
    kept = {s: spec.ladder_budgets(facts[s]) for s in spec.sizes}
    fix = "widen band (lower band.min_steps or raise band.max_tokens_per_param) or change sizes and budgets."
    for s, budgets in kept.items():
        if not budgets:
            raise SpecError(f"band: {s.label} is on no budget ({facts[s]['params']:,} parameters); drop it or {fix}")
    for c in spec.budgets:
        sizes = [s.label for s in spec.sizes if c in kept[s]]
        if len(sizes) < 3:
            raise SpecError(f"band: budget {c:.3g} keeps {len(sizes)} size(s) {sizes}, fewer than 3; {fix}")
    for r in spec.repeats:
        s = spec.sizes[r.size]
        if r.budget not in kept[s]:
            raise SpecError(f"repeats: {s.label} at budget {r.budget:.3g} is outside the band; repeat a kept point.")


class Sweep:
    """Runs a spec through a backend, appending records to ``<out>/records.jsonl``.

    Where the trunks of a stage train is the ``launcher``'s choice (:mod:`scaling.launchers`): in this process, in
    several local processes (``workers``; on 2 cores two small models train faster side by side than one model
    on two threads, docs/LOG.md), or as submitit jobs. Every launcher but the serial one builds its backend where
    the trunk runs, with the picklable ``backend_factory``.
    """

    def __init__(
        self,
        spec: SweepSpec,
        backend: Backend,
        out: str | Path | None = None,
        log=print,
        launcher: LauncherConfig | None = None,
        backend_factory: Callable[[], Backend] | None = None,
    ):
        self.launcher = launcher or LauncherConfig()
        if not self.launcher.in_process and backend_factory is None:
            raise ValueError(
                f"The {self.launcher.name} launcher with {self.launcher.workers} worker(s) needs a picklable "
                "backend_factory to build a backend where each trunk runs."
            )
        self.spec, self.backend, self.log, self.backend_factory = spec, backend, log, backend_factory
        self.out = Path(out or spec.out)
        self.records_path = self.out / RECORDS
        self.started = time.monotonic()
        self.steps_done = 0
        self.steps_planned = 0

    def records(self) -> list[dict]:
        return read_records(self.records_path)

    def _facts(self, series: Series, size: Size) -> dict:
        return self.backend.describe(series, size, self.spec)

    def run(self) -> list[dict]:
        for series in self.spec.series:
            self.run_series(series)
        return self.records()

    def run_series(self, series: Series) -> None:
        spec = self.spec
        facts = {s: self._facts(series, s) for s in spec.sizes}
        check_band(spec, facts)
        self.calibrate(series, facts)
        factor = self.learning_rate_factor(series)
        ladder = [
            make_trunk(
                "fit",
                series,
                s,
                seed,
                self.learning_rate(facts[s]["params"], factor),
                facts[s],
                spec.ladder_budgets(facts[s]),
                spec,
            )
            for seed in spec.seeds
            for s in spec.sizes
        ]
        # Repeats of one size and seed are one trunk, branching at each of their budgets.
        repeated: dict[tuple[int, int], list[float]] = {}
        for r in spec.repeats:
            repeated.setdefault((r.size, r.seed), []).append(r.budget)
        for (index, seed), budgets in repeated.items():
            s = spec.sizes[index]
            lr = self.learning_rate(facts[s]["params"], factor)
            ladder.append(make_trunk("repeat", series, s, seed, lr, facts[s], budgets, spec))
        for trunk in ladder:
            check_trunk(trunk, spec)
        self._execute(ladder)
        self._execute(self.holdout_trunks(series, factor))

    # ------------------------------------------------------------------ learning rate
    def calibrate(self, series: Series, facts: dict) -> None:
        """Short runs at ``multipliers`` x the prior on the smallest and largest sizes. Where the best multiplier is
        the largest (smallest) tried, the next one up (down) by 2x is tried too, at most ``max_extensions`` times,
        so the chosen learning rate is an interior optimum rather than the edge of a grid."""
        rule = self.spec.learning_rate
        if not rule.calibrate:
            return
        sizes = [self.spec.sizes[0], self.spec.sizes[-1]]
        tried = {s: sorted(rule.multipliers) for s in sizes}
        for _ in range(rule.max_extensions + 1):
            self._execute([self._calibration_trunk(series, s, m, facts[s]) for s in sizes for m in tried[s]])
            best = self._best_multipliers(series)
            grown = False
            for s in sizes:
                m = best[s.label]
                if m >= max(tried[s]):
                    tried[s].append(m * 2)
                elif m <= min(tried[s]):
                    tried[s].insert(0, m / 2)
                else:
                    continue
                grown = True
            if not grown:
                return
        self.log(
            f"[{series.name}] warning: the learning-rate calibration is still at the edge of its range after "
            f"{rule.max_extensions} extensions; raise learning_rate.max_extensions or move learning_rate.base"
        )

    def _calibration_trunk(self, series: Series, size: Size, multiplier: float, facts: dict) -> Trunk:
        budget = self.spec.learning_rate.calibration_budget or min(self.spec.ladder_budgets(facts))
        lr = base_learning_rate(self.spec, facts["params"]) * multiplier
        trunk = make_trunk("calibration", series, size, self.spec.seeds[0], lr, facts, [budget], self.spec)
        trunk.facts = {**facts, "lr_multiplier": multiplier}
        check_trunk(trunk, self.spec)
        return trunk

    def _best_multipliers(self, series: Series) -> dict[str, float]:
        done = [r for r in self.records() if r["series"] == series.name and r["role"] == "calibration"]
        best = {}
        for label in {r["size"] for r in done}:
            winner = min((r for r in done if r["size"] == label), key=lambda r: r["val_obs_ce"])
            best[label] = float(winner["lr_multiplier"])
        return best

    def learning_rate(self, params: float, factor: Callable[[float], float]) -> float:
        return base_learning_rate(self.spec, params) * factor(params)

    def learning_rate_factor(self, series: Series) -> Callable[[float], float]:
        """The calibrated factor on the prior rule: the best multiplier at each calibrated size, interpolated
        in log N between them (constant beyond). 1 when calibration is off."""
        if not self.spec.learning_rate.calibrate:
            return lambda params: 1.0
        params = {r["size"]: float(r["params"]) for r in self.records() if r["series"] == series.name}
        best = {params[label]: m for label, m in self._best_multipliers(series).items()}
        xs = np.log(sorted(best))
        ys = np.log([best[n] for n in sorted(best)])
        for n, m in sorted(best.items()):
            self.log(f"[{series.name}] learning-rate calibration: best multiplier {m:g} at N = {n:,.0f}")
        return lambda params: float(np.exp(np.interp(np.log(params), xs, ys)))

    # ------------------------------------------------------------------ held-out runs
    def holdout_trunks(self, series: Series, factor: Callable[[float], float]) -> list[Trunk]:
        spec = self.spec
        fits = [r for r in self.records() if r["series"] == series.name and r["role"] == "fit"]
        points = points_from_records(fits)
        law = fit_parametric(points.N, points.D, points.L, delta=spec.fit.huber_delta).law
        candidates = {s: self._facts(series, s) for s in spec.holdout_candidates}
        flops = FlopsPerToken(
            [f["params"] for f in candidates.values()], [f["flops_per_token"] for f in candidates.values()]
        )
        trunks = []
        for budget in spec.holdout_budgets:
            n_opt = optimal_size(law, budget, flops)
            size = min(candidates, key=lambda s: abs(math.log(candidates[s]["params"] / n_opt)))
            self.log(
                f"[{series.name}] held-out budget {budget:.3g}: predicted N_opt {n_opt:,.0f}; "
                f"running {size.label} (N = {candidates[size]['params']:,})"
            )
            lr = self.learning_rate(candidates[size]["params"], factor)
            for seed in range(spec.seeds[0], spec.seeds[0] + spec.holdout.seeds):
                trunk = make_trunk("holdout", series, size, seed, lr, candidates[size], [budget], spec)
                check_trunk(trunk, spec)
                trunks.append(trunk)
        return trunks

    # ------------------------------------------------------------------ execution
    def _missing(self, trunk: Trunk, done: set[str]) -> Trunk | None:
        todo = [b for b in trunk.branches if b.key not in done]
        return replace(trunk, branches=todo) if todo else None

    def _execute(self, trunks: list[Trunk]) -> None:
        done = {r["key"] for r in self.records()}
        todo = [t for t in (self._missing(t, done) for t in trunks) if t is not None]
        skipped = sum(len(t.branches) for t in trunks) - sum(len(t.branches) for t in todo)
        if skipped:
            self.log(f"{skipped} point(s) already recorded in {self.records_path}; skipped")
        self.steps_planned += sum(t.steps() for t in todo)
        # Most optimiser steps first: on a CPU the per-step overhead of small models dominates their wall time,
        # so steps order the trunks by time better than FLOPs do, and parallel workers finish closer together.
        todo.sort(key=lambda t: -t.steps())
        if self.launcher.in_process:
            # In this process: the backend at hand, and each point logged as it ends.
            jobs = [TrunkJob(lambda: self.backend, t, self.spec, self.out, self.records_path, self.log) for t in todo]
        else:
            jobs = [TrunkJob(self.backend_factory, t, self.spec, self.out, self.records_path) for t in todo]
        Launcher(self.launcher, self.log).run(
            jobs,
            lambda job, lines: self._finished(job.trunk, lines),
            lambda i, job: self._announce(job.trunk, i, len(jobs)),
        )

    def _finished(self, trunk: Trunk, lines: list[str]) -> None:
        for line in lines:
            self.log(line)
        self.steps_done += trunk.steps()
        self._progress()

    def _announce(self, trunk: Trunk, i: int, n: int) -> None:
        self.log(
            f"{trunk.role} run {i}/{n}: {trunk.series.name} {trunk.size.label} seed {trunk.seed}, "
            f"lr {trunk.learning_rate:.3g}, {len(trunk.branches)} point(s), {trunk.flops():.3g} FLOPs"
        )

    def _progress(self) -> None:
        elapsed = time.monotonic() - self.started
        share = self.steps_done / self.steps_planned if self.steps_planned else 1.0
        eta = elapsed * (1 - share) / share if share > 0 else float("nan")
        self.log(
            f"  overall: {100 * share:.0f}% of the optimiser steps planned so far, {elapsed / 60:.1f} min "
            f"elapsed, about {eta / 60:.1f} min left for them (held-out runs are planned after the fit)"
        )


def record_point(spec: SweepSpec, trunk: Trunk, branch: Branch, measured: dict, path: Path) -> str:
    """Append the record of a finished point (one line, synced); returns the line to log."""
    f = trunk.facts
    tokens = branch.steps * trunk.tokens_per_step
    record = {
        "key": branch.key,
        "trunk": trunk.key,
        "role": trunk.role,
        "spec": spec.name,
        "series": trunk.series.name,
        "store": trunk.series.store,
        "size": trunk.size.label,
        "embed_dim": trunk.size.embed_dim,
        "num_layers": trunk.size.num_layers,
        "num_heads": trunk.size.num_heads,
        "seed": trunk.seed,
        "budget": branch.budget,
        "steps": branch.steps,
        "cooldown_steps": branch.cooldown,
        "warmup_steps": spec.warmup_steps,
        "batch_size": spec.batch_size,
        "context_steps": spec.context_steps,
        "learning_rate": trunk.learning_rate,
        "tokens": tokens,
        "flops": tokens * f["flops_per_token"],
        "flops_6nd": 6 * f["params"] * tokens,
        "epochs": tokens / f["unique_tokens"],
        **f,
        **measured,
    }
    append_record(path, record)
    return (
        f"  point {trunk.size.label} seed {trunk.seed} @ {branch.budget:.3g} FLOPs ({branch.steps} steps): "
        f"held-out {measured['val_obs_ce']:.4f} nats/token, {measured['val_bits_per_frame']:.2f} bits/frame"
    )
