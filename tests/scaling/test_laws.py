"""The parametric fit against published numbers (the Epoch replication of Chinchilla) and exact laws."""

import csv

import numpy as np
import pytest

from scaling.estimators import FlopsPerToken, Points, frontier, isoflop, optimal_size
from scaling.laws import ParametricLaw, fit_parametric, fit_power_law


def _epoch_points(shared_data):
    path = shared_data / "chinchilla_epoch_replication.csv"
    if not path.exists():
        pytest.skip(f"{path} is absent (the Epoch replication data lives in ../shared/data)")
    rows = list(csv.DictReader(path.open()))
    N = np.array([float(r["Model Size"]) for r in rows])
    C = np.array([float(r["Training FLOP"]) for r in rows])
    L = np.array([float(r["loss"]) for r in rows])
    keep = np.argsort(L)[:-5]  # As the Epoch replication does: drop the 5 highest-loss points
    return N[keep], C[keep] / (6 * N[keep]), L[keep]


def test_golden_epoch_replication(shared_data):
    N, D, L = _epoch_points(shared_data)
    assert len(N) == 240
    fit = fit_parametric(N, D, L, objective="huber_log", delta=1e-3, keep=16)
    law = fit.law
    assert fit.converged and not fit.at_bounds
    assert law.alpha == pytest.approx(0.347, abs=0.003)
    assert law.beta == pytest.approx(0.367, abs=0.005)
    assert law.E == pytest.approx(1.817, abs=0.005)
    assert law.a == pytest.approx(0.514, abs=0.005)
    assert 470 < law.A < 490 and 2050 < law.B < 2200
    assert fit.starts_at_best >= 3  # several starts agree on the optimum


def test_least_squares_in_levels_moves_a(shared_data):
    # The objective alone moves a by about 0.03 (least squares in levels gives about 0.545).
    N, D, L = _epoch_points(shared_data)
    levels = fit_parametric(N, D, L, objective="squares_level", keep=16).law
    assert levels.a == pytest.approx(0.545, abs=0.01)


def test_exact_law_is_recovered_without_noise():
    truth = ParametricLaw(E=0.8, A=40.0, B=300.0, alpha=0.3, beta=0.4)
    N, D = np.meshgrid(np.geomspace(1e4, 1e6, 6), np.geomspace(1e5, 1e8, 6))
    fit = fit_parametric(N.ravel(), D.ravel(), truth(N, D).ravel(), keep=16)
    got = fit.law
    assert got.alpha == pytest.approx(0.3, abs=1e-4) and got.beta == pytest.approx(0.4, abs=1e-4)
    assert got.E == pytest.approx(0.8, rel=1e-4)


def test_power_law_fit_is_exact_on_a_power_law():
    law = fit_power_law([1, 10, 100], [3, 3 * 10**0.7, 3 * 100**0.7])
    assert law.exponent == pytest.approx(0.7) and law.k == pytest.approx(3)


def test_numerical_optimum_matches_closed_form_under_6n_flops():
    # With f(N) = 6N, L(N, C/6N) is minimised at N_opt = G (C/6)^a, G = (alpha A / (beta B))^(1/(alpha+beta)).
    law = ParametricLaw(E=1.0, A=400.0, B=2000.0, alpha=0.34, beta=0.28)
    flops = FlopsPerToken([1e3, 1e9], [6e3, 6e9])
    G = (law.alpha * law.A / (law.beta * law.B)) ** (1 / (law.alpha + law.beta))
    for C in (1e15, 1e18, 1e21):
        assert optimal_size(law, C, flops) == pytest.approx(G * (C / 6) ** law.a, rel=1e-4)


def test_isoflop_finds_the_vertex_and_rejects_edge_minima():
    flops = FlopsPerToken([1e3, 1e7], [6e3, 6e7])
    n = np.geomspace(1e4, 1e6, 5)
    budgets = [1e11, 1e12]
    # Parabolas of log L in log N with vertices at 3e4 (budget 1e11) and at 1e7 (outside the sizes: an edge minimum).
    L = np.exp(np.concatenate([0.1 * (np.log(n) - np.log(3e4)) ** 2, 0.1 * (np.log(n) - np.log(1e7)) ** 2]))
    pts = Points(np.tile(n, 2), np.ones(10), np.repeat(budgets, 5), L, np.tile(np.arange(5), 2), np.repeat(budgets, 5))
    est = isoflop(pts, flops)
    assert est.n_opt == [pytest.approx(3e4, rel=1e-6)]
    assert not est.ok and any("edge" in w for w in est.warnings)
    best = frontier(pts)
    assert best.n_opt == [n[1], n[-1]]


def test_isoflop_rejects_a_lowest_point_at_the_edge_even_with_an_interior_vertex():
    flops = FlopsPerToken([1e3, 1e7], [6e3, 6e7])
    n = np.geomspace(1e4, 1e6, 5)
    # Falls steeply to the smallest size and stays flat: the vertex lands inside, the data say "smaller".
    L = np.array([1.0, 1.01, 1.5, 2.5, 4.0])
    pts = Points(n, np.ones(5), np.full(5, 1e11), L, np.arange(5), np.full(5, 1e11))
    est = isoflop(pts, flops)
    assert est.n_opt == [] and any("edge" in w for w in est.warnings)
