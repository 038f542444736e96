"""Human-normalised scores and their aggregates."""

import json

import numpy as np
import pytest

from iris_wm.evaluate.scores import REFERENCE_SCORES, aggregate, human_normalized, interquartile_mean


def test_reference_scores_match_the_shared_reference_data(shared_data):
    path = shared_data / "atari100k_reference_scores.json"
    if not path.exists():
        pytest.skip(f"{path} is absent (the shared reference data lies beside the repository)")
    published = json.loads(path.read_text())["scores"]
    assert set(published) == set(REFERENCE_SCORES)
    for game, row in published.items():
        assert REFERENCE_SCORES[game] == (row["random"], row["human"]), game


def test_human_normalised_score():
    assert human_normalized("ALE/Breakout-v5", 1.7) == 0.0
    assert human_normalized("Breakout", 30.5) == pytest.approx(1.0)
    assert human_normalized("ALE/Pong-v5", -20.7) == 0.0
    assert human_normalized("ALE/Tetris-v5", 10.0) is None


def test_interquartile_mean():
    assert interquartile_mean(np.arange(8)) == pytest.approx(np.mean([2, 3, 4, 5]))
    # Not a multiple of four: the cut points take fractions of the values they fall on (rliable's IQM
    # trims a quarter of the mass from each end).
    x = np.array([0.0, 1.0, 2.0, 3.0, 100.0])
    assert interquartile_mean(x) == pytest.approx((0.75 * 1 + 2 + 0.75 * 3) / 2.5)
    assert interquartile_mean(np.full(3, 4.0)) == pytest.approx(4.0)
    with pytest.raises(ValueError):
        interquartile_mean(np.array([]))


def test_aggregate_values_and_intervals():
    scores = {"Pong": [0.1, 0.2, 0.3], "Breakout": [1.0, 1.2, 0.8], "Boxing": [5.0, 6.0, 7.0]}
    result = aggregate(scores, draws=500, seed=0)
    pooled = np.concatenate(list(scores.values()))
    assert result["mean"]["value"] == pytest.approx(pooled.mean())
    assert result["median"]["value"] == pytest.approx(np.median(pooled))
    for name in ("mean", "median", "iqm"):
        assert result[name]["low"] <= result[name]["value"] <= result[name]["high"]
    # One seed per game: resampling within a game changes nothing, the interval collapses.
    single = aggregate({"Pong": [0.1], "Breakout": [0.5]}, draws=50)
    assert single["mean"]["low"] == single["mean"]["high"] == pytest.approx(0.3)
    with pytest.raises(ValueError, match="at least one score"):
        aggregate({"Pong": []})
