"""Planted laws on the shipped cpu_default design (:mod:`scaling.planted`): synthetic losses from a known L(N, D)
with log-normal noise on exactly the points its ladder records, fitted and bootstrapped as real records are.

SCALING.md's bars: with a fixed law (a = 0.5), a is recovered within 0.02 (median over replicates) and the 95%
interval covers it in at least 90% of replicates; with laws drawn with random coefficients (at least 40), the median
absolute error of a is at most 0.03 with the same coverage. The fast version runs in the suite, the others in
`make test-slow`.
"""

from pathlib import Path

import numpy as np
import pytest

from scaling.laws import ParametricLaw
from scaling.planted import RANDOM_RANGES, Design, median_interval, random_law, study
from scaling.spec import load_spec

REPO = Path(__file__).resolve().parents[2]
TRUTH = ParametricLaw(E=0.3, A=9.0, B=33.0, alpha=0.35, beta=0.35)  # a = 0.5, optimum inside the ladder
NOISE = 0.005  # SCALING.md's "small log-normal noise" for the fixed law
# The seed noise measured on cpu_default's points (docs/LOG.md, issue 22): sigma of log loss per run over its 79
# points of three seeds each, and the correlation of a run's deviation with its trunk's at the next budget (195 pairs).
# Four repeated points of the previous design had given 0.023-0.029, with no view of the correlation.
SEED_NOISE = 0.041
TRUNK_CORRELATION = 0.78


def _design() -> Design:
    """The cpu_default ladder with its sizes counted exactly by the world model (its token store: 256 codes, 16
    per frame, 4 actions)."""
    from sequence_model.gpt import GPTConfig
    from sequence_model.world_model import WorldModel, WorldModelConfig

    spec = load_spec(REPO / "configs" / "scaling" / "cpu_default.yaml")
    facts = []
    for s in spec.sizes:
        gpt = GPTConfig(num_layers=s.num_layers, num_heads=s.num_heads, embed_dim=s.embed_dim)
        cfg = WorldModelConfig(
            vocab_size=256, tokens_per_frame=16, num_actions=4, context_steps=spec.context_steps, gpt=gpt
        )
        model = WorldModel(cfg)
        facts.append(
            {
                "params": model.num_parameters(),
                "flops_per_token": model.flops_per_token(),
                "tokens_per_step": spec.batch_size * cfg.gpt.max_tokens,
            }
        )
    return Design.from_spec(spec, facts)


def test_random_laws_cover_the_ranges_of_scaling_md():
    laws = [random_law(np.random.default_rng(i)) for i in range(200)]
    for name, (lo, hi) in RANDOM_RANGES.items():
        key = name.removeprefix("log10_")
        values = [np.log10(getattr(law, key)) if name.startswith("log10") else getattr(law, key) for law in laws]
        assert lo <= min(values) and max(values) <= hi and max(values) - min(values) > 0.8 * (hi - lo)


def _delta() -> float:
    return load_spec(REPO / "configs" / "scaling" / "cpu_default.yaml").fit.huber_delta


def test_planted_law_is_recovered_with_honest_intervals():
    result = study(_design(), NOISE, laws=10, draws=100, law=TRUTH, delta=_delta())
    assert result["converged"] == 1.0
    assert all(r["failed_replicates"] <= 0.05 for r in result["runs"])
    assert abs(result["median_error"]) <= 0.02
    assert result["coverage_95"] >= 0.9


@pytest.mark.slow
def test_planted_law_many_replicates():
    result = study(_design(), NOISE, laws=40, draws=100, seed=5, law=TRUTH, delta=_delta())
    assert abs(result["median_error"]) <= 0.02
    assert result["coverage_95"] >= 0.9


@pytest.mark.slow
@pytest.mark.xfail(
    reason="SCALING.md's bar is not met at the measured seed noise: median |error of a| 0.047 over 800 laws; it takes "
    "about eight seeds of every trunk, 2.7x the sweep (docs/LOG.md, issue 22)",
    strict=False,
)
def test_planted_laws_with_random_coefficients_identify_a():
    """At the measured seed noise and its correlation along a trunk, with the Huber delta the profile fits with."""
    result = study(_design(), SEED_NOISE, laws=40, draws=100, seed=11, delta=_delta(), correlation=TRUNK_CORRELATION)
    assert result["median_abs_error"] <= 0.03
    assert result["coverage_95"] >= 0.9


def test_median_interval_has_the_width_of_the_median_of_as_many_laws():
    """The interval of a median over n laws: about +-1.96 sqrt(1/4n) / f(median) wide (f the density there); for
    half-normal errors of scale 1 at n = 400, 0.154 wide around 0.674. Reproducible by seed; one value, no width."""
    errors = np.abs(np.random.default_rng(3).normal(size=400))
    low, high = median_interval(errors, seed=1)
    assert low < 0.6745 < high
    assert high - low == pytest.approx(2 * 1.96 * 0.5 / 20 / 0.6356, rel=0.25)
    assert median_interval(errors, seed=1) == [low, high] != median_interval(errors, seed=2)
    assert median_interval(np.full(40, 0.05)) == pytest.approx([0.05, 0.05])


def test_trunk_noise_has_the_asked_sigma_and_correlation_along_a_trunk_only():
    """Branches of one trunk share its training up to their budget, so their seed noise is correlated: lag-k
    correlation rho^k between a trunk's budgets k steps apart, none between trunks; rho = 0 is independent noise."""
    design = Design((1e3, 2e3), (6e3, 1.2e4), (1e9, 2e9, 4e9, 8e9), seeds=2, repeats=((0, 2e9),))
    _, _, c, trunk = design.points()
    rng = np.random.default_rng(0)
    draws = np.array([design.log_noise(0.04, 0.8, rng) for _ in range(20000)])
    assert draws.std(axis=0) == pytest.approx(np.full(len(c), 0.04), rel=0.03)
    corr = np.corrcoef(draws.T)
    step = np.searchsorted(design.budgets, c)
    for i in range(len(c)):
        for j in range(i + 1, len(c)):
            expected = 0.8 ** abs(step[i] - step[j]) if trunk[i] == trunk[j] else 0.0
            assert corr[i, j] == pytest.approx(expected, abs=0.03), (i, j)
    independent = np.array([design.log_noise(0.04, 0.0, rng) for _ in range(5000)])
    assert np.abs(np.corrcoef(independent.T) - np.eye(len(c))).max() < 0.06
    with pytest.raises(ValueError, match=r"correlation must be in \[0, 1\), got 1.5: use the one a sweep's report"):
        design.log_noise(0.04, 1.5, rng)
