"""The sweep specification: one YAML file names everything a scaling study runs, before anything runs.

Unknown keys and wrong types are refused with the key's path, so a typo never silently falls back to a
default. Defaults live here, once; a profile file in ``configs/scaling/`` holds only what it chooses.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml


class SpecError(ValueError):
    """The sweep specification is malformed; the message names the key and the fix."""


@dataclass(frozen=True)
class Size:
    """One rung of the model-size ladder."""

    embed_dim: int
    """Width of the residual stream."""
    num_layers: int
    """Transformer blocks."""
    num_heads: int = 2
    """Attention heads (``embed_dim`` must be divisible by it)."""

    @property
    def label(self) -> str:
        return f"d{self.embed_dim}-L{self.num_layers}-H{self.num_heads}"


@dataclass(frozen=True)
class Series:
    """One token store: the tokenizer axis compares several (e.g. 4, 16 and 64 tokens per frame)."""

    name: str
    """Label in records, plots and the report (e.g. ``K16``)."""
    store: str
    """Folder of the token store (relative paths are taken from the working directory)."""
    steps: int | None = None
    """Environment steps that `iris-wm scaling run` collects when it builds the store (episodes, tokenizer and
    tokens in the store's parent folder; default 100,000); an existing store with fewer is refused. Choose
    enough that the largest run sees its data about once: a held-out run that repeated its data 2.4 times
    came out 13.5% above its prediction; with 2.5x the data, +3.25% and -8.6% (docs/LOG.md)."""


@dataclass(frozen=True)
class Repeat:
    """A point trained again with another seed, to measure seed noise for the prediction intervals."""

    size: int
    """Index into ``sizes``."""
    budget: float
    """One of ``budgets``."""
    seed: int = 1
    """The other seed."""


@dataclass(frozen=True)
class LearningRate:
    """Learning rate per size: ``base * (N / reference_params) ** exponent`` times a calibrated factor."""

    base: float = 3e-3
    """Learning rate at ``reference_params`` parameters."""
    reference_params: float = 3e4
    """Parameter count where the rule gives ``base``."""
    exponent: float = -0.36
    """Prior slope of lr in N (Porian et al. 2024: lr ~ N^-0.36)."""
    calibrate: bool = True
    """Try ``multipliers`` at ``calibration_budget`` on the smallest and largest sizes first, then use the best
    factor, interpolated in log N, for every size."""
    multipliers: tuple[float, ...] = (0.5, 1.0, 2.0)
    """Factors of the prior tried in the calibration."""
    calibration_budget: float | None = None
    """Budget of the calibration runs (default: the smallest fit budget)."""
    max_extensions: int = 3
    """Where the best multiplier is at the edge of those tried, try 2x further out, at most this many times."""


def branch_steps(budget: float, facts: dict) -> int:
    """Optimiser steps of a point on ``budget`` for a size with the backend's ``facts`` (at least 1)."""
    return max(1, round(budget / (facts["flops_per_token"] * facts["tokens_per_step"])))


@dataclass(frozen=True)
class Band:
    """Which budgets each size is trained on. By default every size gets a point on every budget; a band leaves
    out the points far from any optimum, which cost the most and say the least: a large model starved to a few
    optimiser steps (mostly its warmup transient), and a small model trained on thousands of tokens per
    parameter (the most optimiser steps of the ladder, since small models take many steps per FLOP)."""

    min_steps: int = 0
    """Leave out a point with fewer optimiser steps than this."""
    max_tokens_per_param: float | None = None
    """Leave out a point with more training tokens per parameter than this (None: no limit)."""

    def keeps(self, facts: dict, budget: float) -> bool:
        """Whether a size with the backend's ``facts`` gets a point on ``budget``."""
        if branch_steps(budget, facts) < self.min_steps:
            return False
        tokens_per_param = budget / facts["flops_per_token"] / facts["params"]
        return self.max_tokens_per_param is None or tokens_per_param <= self.max_tokens_per_param


@dataclass(frozen=True)
class Holdout:
    """The pre-registered extrapolation: runs at ``factor`` x the largest fit budget, at the size the
    parametric fit predicts to be optimal there (the nearest candidate in log N). They never enter a fit."""

    factors: tuple[float, ...] = (3.0,)
    """Multiples of the largest fit budget (the harness's bar: 3x on CPU, 10x on GPU)."""
    candidates: tuple[Size, ...] = ()
    """Shapes to choose the held-out size from (default: the ladder itself)."""
    seeds: int = 1
    """Seeds of each held-out run (the first main seed and the ones after it). The check compares the
    prediction with their mean log loss, and the seed-noise part of its interval shrinks by sqrt(seeds). On
    CPU the repeated fit points measure seed noise of 2.6-5.2% in log loss, as large as the harness's 3% bar
    (the held-out runs' own two seeds have differed by under 1%; docs/LOG.md). With ``--workers 2`` a second
    seed costs no wall time (the held-out run otherwise trains alone)."""


@dataclass(frozen=True)
class FitSettings:
    """How the fits, intervals and warnings are computed."""

    bootstrap: int = 1000
    """Bootstrap replicates (each resamples whole training runs and re-fits every estimator)."""
    seed: int = 0
    """Seed of the bootstrap."""
    huber_delta: float = 1e-3
    """Huber delta on residuals in log loss (Hoffmann et al.; Besiroglu et al.)."""
    target_budgets: tuple[float, ...] = ()
    """Budgets (FLOPs) at which N_opt and D_opt are recommended, with intervals."""
    agreement_tolerance: float = 0.15
    """Warn when two estimators' exponent a differ by more (the harness's bar: 0.15 CPU, 0.05 GPU)."""
    min_steps: int = 100
    """Warn about points trained for fewer optimiser steps."""


@dataclass(frozen=True)
class SweepSpec:
    """A whole scaling study. Budgets are training FLOPs, counted exactly per token."""

    name: str
    """Name of the study; its outputs go to ``out``."""
    series: tuple[Series, ...]
    """Token stores to sweep (several for the tokenizer axis)."""
    sizes: tuple[Size, ...]
    """The model-size ladder (at least 3 sizes, so each budget can have an interior minimum)."""
    budgets: tuple[float, ...]
    """isoFLOP budgets of the fit, in FLOPs; every size gets an annealed point on each that ``band`` keeps."""
    band: Band = field(default_factory=Band)
    """Which (size, budget) points the ladder trains (default: all of them)."""
    out: str = "runs/scaling"
    """Folder of the records, fits, plots and report."""
    description: str = ""
    """What the study is for (copied into the report)."""
    context_steps: int = 8
    """Time steps per training window (cpu_default: 8 frames x 17 tokens)."""
    batch_size: int = 32
    """Windows per optimiser step (the same for every size)."""
    learning_rate: LearningRate = field(default_factory=LearningRate)
    """Learning-rate rule per size."""
    warmup_steps: int = 20
    """Linear warmup; at most half the shortest branch."""
    cooldown_fraction: float = 0.2
    """Share of each branch spent in its (1 - sqrt) cooldown (Hägele et al. 2024: about 20%)."""
    weight_decay: float = 0.01
    """AdamW weight decay on linear weights."""
    dropout: float = 0.0
    """Dropout of the transformer (0: no regularisation noise in the measured losses)."""
    precision: str = "32"
    """``32`` or ``bf16`` (autocast) for training."""
    seeds: tuple[int, ...] = (0,)
    """Seeds of the main ladder (one trunk per size and seed)."""
    repeats: tuple[Repeat, ...] = ()
    """Extra seeds at a few points, to measure seed noise."""
    holdout: Holdout = field(default_factory=Holdout)
    """The pre-registered extrapolation check."""
    val_fraction: float = 0.1
    """Share of episodes held out (by a seeded hash of the episode id; the same for every run)."""
    split_seed: int = 0
    """Seed of the held-out split."""
    eval_windows: int = 256
    """Held-out windows every point is evaluated on (evenly spaced over the held-out episodes, fixed)."""
    eval_batch_size: int = 64
    """Windows per evaluation batch."""
    max_epochs: float = 4.0
    """Refuse a run whose tokens exceed this many passes over the unique training tokens."""
    allow_repeated_data: bool = False
    """Allow runs above ``max_epochs`` (they are still warned about)."""
    fit: FitSettings = field(default_factory=FitSettings)
    """Fitting and reporting settings."""

    def __post_init__(self):
        if len(self.sizes) < 3:
            raise SpecError(f"sizes: {len(self.sizes)} given; an isoFLOP minimum needs at least 3 sizes.")
        if not self.budgets or any(b <= 0 for b in self.budgets):
            raise SpecError("budgets: give one or more positive FLOP budgets.")
        if not 0 < self.cooldown_fraction < 1:
            raise SpecError(f"cooldown_fraction must be in (0, 1), got {self.cooldown_fraction}.")
        if self.precision not in ("32", "bf16"):
            raise SpecError(f"precision must be '32' or 'bf16', got {self.precision!r}.")
        for s in self.sizes:
            if s.embed_dim % s.num_heads:
                raise SpecError(f"sizes: {s.label} has embed_dim not divisible by num_heads.")
        for r in self.repeats:
            if not 0 <= r.size < len(self.sizes):
                raise SpecError(f"repeats: size index {r.size} is outside the ladder (0..{len(self.sizes) - 1}).")
            if r.budget not in self.budgets:
                raise SpecError(f"repeats: budget {r.budget:g} is not one of budgets {list(self.budgets)}.")
            if r.seed in self.seeds:
                raise SpecError(f"repeats: seed {r.seed} is already a main seed; pick another.")
        if self.holdout.seeds < 1:
            raise SpecError(f"holdout.seeds must be at least 1, got {self.holdout.seeds}.")
        if len({s.name for s in self.series}) != len(self.series):
            raise SpecError("series: names must be unique.")

    def ladder_budgets(self, facts: dict) -> tuple[float, ...]:
        """The budgets a size with the backend's ``facts`` is trained on in the ladder."""
        return tuple(b for b in self.budgets if self.band.keeps(facts, b))

    @property
    def holdout_budgets(self) -> tuple[float, ...]:
        return tuple(max(self.budgets) * f for f in self.holdout.factors)

    @property
    def holdout_candidates(self) -> tuple[Size, ...]:
        return self.holdout.candidates or self.sizes

    @property
    def target_budgets(self) -> tuple[float, ...]:
        return self.fit.target_budgets or (*self.budgets, *self.holdout_budgets)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def reseeded(spec: SweepSpec, seed: int) -> SweepSpec:
    """The spec's study repeated independently: seed 0 is the spec itself; seed ``n`` collects its own episodes
    (each series' store in ``<store's folder>-seed<n>``), trains every run with seeds offset by ``100 n`` and its
    bootstrap with seed ``fit.seed + n``, and writes to ``<out>-seed<n>``. Three seeds measure how reliable the
    held-out check is (``make scaling SEED=n``)."""
    if seed == 0:
        return spec
    if seed < 0:
        raise SpecError(f"seed must be 0 or more, got {seed}.")
    offset = 100 * seed
    series = tuple(
        dataclasses.replace(
            s, store=str(Path(s.store).parent.with_name(f"{Path(s.store).parent.name}-seed{seed}") / Path(s.store).name)
        )
        for s in spec.series
    )
    return dataclasses.replace(
        spec,
        series=series,
        seeds=tuple(s + offset for s in spec.seeds),
        repeats=tuple(dataclasses.replace(r, seed=r.seed + offset) for r in spec.repeats),
        fit=dataclasses.replace(spec.fit, seed=spec.fit.seed + seed),
        out=f"{spec.out}-seed{seed}",
    )


def _build(cls, data, path: str):
    """Build dataclass ``cls`` from plain YAML data, refusing unknown keys and wrong types by path."""
    hints = typing.get_type_hints(cls)
    if not isinstance(data, dict):
        raise SpecError(f"{path or 'spec'}: expected a mapping of {cls.__name__} fields, got {type(data).__name__}.")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise SpecError(f"{path or 'spec'}: unknown key(s) {unknown}; known keys are {sorted(names)}.")
    kwargs = {k: _convert(hints[k], v, f"{path}.{k}" if path else k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as err:  # a required field is missing
        raise SpecError(f"{path or 'spec'}: {err}") from None


def _convert(hint, value, path: str):
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, path)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise SpecError(f"{path}: expected a list, got {value!r}.")
        return tuple(_convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)][0]
        return _convert(inner, value, path)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise SpecError(f"{path}: expected a number, got {value!r}.")
        try:
            return float(value)  # YAML reads 5e10 (no dot) as a string
        except ValueError:
            raise SpecError(f"{path}: expected a number, got {value!r}.") from None
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(f"{path}: expected an integer, got {value!r}.")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise SpecError(f"{path}: expected true or false, got {value!r}.")
        return value
    if hint is str:
        if not isinstance(value, (str, int)):
            raise SpecError(f"{path}: expected a string, got {value!r}.")
        return str(value)
    return value


def spec_from_dict(data: dict) -> SweepSpec:
    return _build(SweepSpec, data, "")


def load_spec(path: str | Path, overrides: dict | None = None) -> SweepSpec:
    """Read a sweep spec from YAML; ``overrides`` (top-level keys) replace values of the file."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"No sweep spec at {path}; the profiles are in configs/scaling/ (e.g. cpu_default.yaml).")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise SpecError(
            f"{path} is not valid YAML ({str(error).splitlines()[0]}): repair it, or start from a "
            "profile in configs/scaling/."
        ) from None
    if not isinstance(data, dict):
        raise SpecError(f"{path} must hold a mapping of spec keys, not a {type(data).__name__}.")
    data.update(overrides or {})
    try:
        return spec_from_dict(data)
    except SpecError as error:
        raise SpecError(f"{path}: {error}") from None
