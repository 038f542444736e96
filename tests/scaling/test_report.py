"""Fits, plots and the report from records alone (no torch): two tokenizer series from planted laws."""

import json

import numpy as np
import pytest

from scaling.records import append_record, run_key
from scaling.report import run_fit, write_report
from scaling.spec import spec_from_dict

SIZES = [{"embed_dim": d, "num_layers": 2} for d in (8, 12, 16, 20, 24, 32)]
BUDGETS = [2.5e10, 8e10, 2.5e11]


def _records(series: str, k: int, law, rng) -> list[dict]:
    records = []
    for i, _ in enumerate(SIZES):
        n = 7.5e3 * 1.45**i
        f = 6.2 * n
        trunk = run_key({"series": series, "size": i})
        for c in BUDGETS + [7.5e11] * (i == 4):
            d = c / f
            loss = law(n, d) * np.exp(rng.normal(0, 0.005))
            records.append(
                {
                    "key": run_key({"t": trunk, "c": c}),
                    "trunk": trunk,
                    "role": "fit" if c < 7e11 else "holdout",
                    "series": series,
                    "size": f"s{i}",
                    "budget": c,
                    "params": n,
                    "tokens": d,
                    "flops": c,
                    "flops_per_token": f,
                    "val_obs_ce": loss,
                    "val_bits_per_frame": loss * k / np.log(2),
                    "tokens_per_frame": k,
                    "steps": 500,
                    "epochs": 0.5,
                }
            )
    return records


def test_two_series_give_a_tokenizer_axis_and_a_full_report(tmp_path):
    from scaling.laws import ParametricLaw

    rng = np.random.default_rng(0)
    laws = {"K4": ParametricLaw(0.5, 9.0, 33.0, 0.35, 0.35), "K16": ParametricLaw(0.3, 9.0, 60.0, 0.3, 0.4)}
    for (name, law), k in zip(laws.items(), (4, 16), strict=True):
        for r in _records(name, k, law, rng):
            append_record(tmp_path / "records.jsonl", r)
    spec = spec_from_dict(
        {
            "name": "axis",
            "out": str(tmp_path),
            "sizes": SIZES,
            "budgets": BUDGETS,
            "series": [{"name": "K4", "store": "a"}, {"name": "K16", "store": "b"}],
            "fit": {"bootstrap": 30},
        }
    )
    fits = run_fit(spec)
    assert [row["tokens_per_frame"] for row in fits["tokenizer_axis"]] == [4, 16]
    for name, law in laws.items():
        fit = fits["series"][name]
        assert abs(fit["parametric_law"]["a_closed_form"]["estimate"] - law.a) < 0.1
        assert fit["holdout"][0]["inside_95"] and abs(fit["holdout"][0]["relative_error"]) < 0.03
    assert json.loads((tmp_path / "fit.json").read_text())["spec"]["name"] == "axis"
    report = write_report(spec, fits).read_text()
    assert "## Tokenizer axis" in report and "## Series K4" in report and "## Series K16" in report
    assert len(list(tmp_path.glob("*.png"))) == 10


def test_records_of_two_stores_in_one_series_are_refused(tmp_path):
    import pytest

    from scaling.laws import ParametricLaw

    law = ParametricLaw(0.3, 9.0, 60.0, 0.3, 0.4)
    for digest in ("old", "new"):
        for r in _records("K16", 16, law, np.random.default_rng(0)):
            append_record(tmp_path / "records.jsonl", {**r, "key": r["key"] + digest, "store_digest": digest})
    spec = spec_from_dict(
        {
            "name": "mixed",
            "out": str(tmp_path),
            "sizes": SIZES,
            "budgets": BUDGETS,
            "series": [{"name": "K16", "store": "b"}],
        }
    )
    with pytest.raises(ValueError, match=r"more than one token store for series K16 .*'new', 'old'"):
        run_fit(spec)
    assert not (tmp_path / "fit.json").exists()


def test_held_out_seeds_are_one_check_on_their_mean_log_loss(tmp_path):
    """Two seeds of the held-out run: observed is their geometric mean, and the interval is narrower than with one
    (its seed-noise part shrinks by sqrt(2))."""
    from scaling.laws import ParametricLaw

    law = ParametricLaw(0.3, 9.0, 60.0, 0.3, 0.4)
    records = _records("K16", 16, law, np.random.default_rng(0))
    spec = spec_from_dict(
        {
            "name": "seeds",
            "out": str(tmp_path),
            "sizes": SIZES,
            "budgets": BUDGETS,
            "series": [{"name": "K16", "store": "b"}],
            "fit": {"bootstrap": 30},
            "holdout": {"seeds": 2},
        }
    )
    for r in records:
        append_record(tmp_path / "records.jsonl", r)
    # A repeated fit point, so the seed noise is measured (sigma of log loss between two seeds at one point).
    fit_point = next(r for r in records if r["role"] == "fit" and r["size"] == "s2")
    append_record(
        tmp_path / "records.jsonl",
        {
            **fit_point,
            "key": "repeat",
            "trunk": "r",
            "role": "repeat",
            "seed": 1,
            "val_obs_ce": fit_point["val_obs_ce"] * 1.04,
        },
    )
    one = run_fit(spec)["series"]["K16"]["holdout"]
    held = next(r for r in records if r["role"] == "holdout")
    append_record(
        tmp_path / "records.jsonl", {**held, "key": "second seed", "seed": 1, "val_obs_ce": held["val_obs_ce"] * 1.02}
    )
    two = run_fit(spec)["series"]["K16"]["holdout"]
    assert len(one) == len(two) == 1 and two[0]["seeds"] == [0, 1]
    np.testing.assert_allclose(two[0]["observed"], held["val_obs_ce"] * np.sqrt(1.02), rtol=1e-12)
    width = [h["prediction_interval"]["ci95"][1] - h["prediction_interval"]["ci95"][0] for h in (one[0], two[0])]
    assert width[1] < width[0]
    assert "geometric mean of 2 seeds" in write_report(spec, run_fit(spec)).read_text()


def test_seed_noise_pools_sigma_and_measures_the_correlation_along_trunks():
    """Two sizes, three budgets, two seeds. Size a's seeds sit +-0.1 off their point's mean at every budget (a
    trunk's deviation persists: pairs with product +0.01); size b's alternate +-0.2 (product -0.04). By hand: sigma^2 =
    (3 x 0.02 + 3 x 0.08) / 6 = 0.05, and over the 8 neighbour pairs the correlation is (0.01 - 0.04) / 2 / 0.025 =
    -0.6."""
    from scaling.fit import seed_noise

    offsets = {"a": [0.1, 0.1, 0.1], "b": [0.2, -0.2, 0.2]}
    records = [
        {
            "role": "fit",
            "size": size,
            "budget": budget,
            "trunk": f"{size}{seed}",
            "val_obs_ce": float(np.exp(2 + sign * x)),
        }
        for size, xs in offsets.items()
        for seed, sign in ((0, 1), (1, -1))
        for budget, x in zip((1e9, 2e9, 4e9), xs, strict=True)
    ]
    records.append({"role": "holdout", "size": "a", "budget": 8e9, "trunk": "h", "val_obs_ce": 9.0})
    noise = seed_noise(records)
    assert noise["points"] == 6 and noise["pairs"] == 8
    assert noise["sigma_log"] == pytest.approx(np.sqrt(0.05))
    assert noise["trunk_correlation"] == pytest.approx(-0.6)
    assert seed_noise(records[:3])["sigma_log"] is None
