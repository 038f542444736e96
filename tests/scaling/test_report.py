"""Fits, plots and the report from records alone (no torch): two tokenizer series from planted laws."""

import json

import numpy as np

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
            records.append({"key": run_key({"t": trunk, "c": c}), "trunk": trunk, "role": "fit" if c < 7e11 else
                            "holdout", "series": series, "size": f"s{i}", "budget": c, "params": n, "tokens": d,
                            "flops": c, "flops_per_token": f, "val_obs_ce": loss, "val_bits_per_frame":
                            loss * k / np.log(2), "tokens_per_frame": k, "steps": 500, "epochs": 0.5})  # fmt: skip
    return records


def test_two_series_give_a_tokenizer_axis_and_a_full_report(tmp_path):
    from scaling.laws import ParametricLaw

    rng = np.random.default_rng(0)
    laws = {"K4": ParametricLaw(0.5, 9.0, 33.0, 0.35, 0.35), "K16": ParametricLaw(0.3, 9.0, 60.0, 0.3, 0.4)}
    for (name, law), k in zip(laws.items(), (4, 16), strict=True):
        for r in _records(name, k, law, rng):
            append_record(tmp_path / "records.jsonl", r)
    spec = spec_from_dict({"name": "axis", "out": str(tmp_path), "sizes": SIZES, "budgets": BUDGETS,
                           "series": [{"name": "K4", "store": "a"}, {"name": "K16", "store": "b"}],
                           "fit": {"bootstrap": 30}})  # fmt: skip
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
    spec = spec_from_dict({"name": "mixed", "out": str(tmp_path), "sizes": SIZES, "budgets": BUDGETS,
                           "series": [{"name": "K16", "store": "b"}]})  # fmt: skip
    with pytest.raises(ValueError, match=r"more than one token store for series K16 .*'new', 'old'"):
        run_fit(spec)
    assert not (tmp_path / "fit.json").exists()
