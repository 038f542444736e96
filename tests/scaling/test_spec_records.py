"""Sweep specs refuse what they do not understand; records survive a torn write."""

import json
import re
from pathlib import Path

import pytest
import yaml

from scaling.records import append_record, read_records, run_key, write_csv
from scaling.spec import SpecError, load_spec, reseeded, spec_from_dict

REPO = Path(__file__).resolve().parents[2]
PROFILES = sorted((REPO / "configs" / "scaling").glob("*.yaml"))
MINIMAL = {
    "name": "x",
    "series": [{"name": "K4", "store": "s"}],
    "budgets": [1e9, 3e9],
    "sizes": [
        {"embed_dim": 8, "num_layers": 1},
        {"embed_dim": 16, "num_layers": 1},
        {"embed_dim": 24, "num_layers": 2},
    ],
}


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.stem)
def test_every_profile_loads(path):
    spec = load_spec(path)
    assert spec.name == path.stem and len(spec.sizes) >= 3 and spec.holdout_budgets


def test_the_four_profiles_exist():
    assert {p.stem for p in PROFILES} >= {"cpu_fast", "cpu_default", "gpu_lite", "gpu_full"}


def test_unknown_key_is_named():
    with pytest.raises(SpecError, match=r"learning_rate: unknown key\(s\) \['bse'\]"):
        spec_from_dict({**MINIMAL, "learning_rate": {"bse": 1e-3}})


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("batch_size", "32", "batch_size: expected an integer"),
        ("budgets", 5, "budgets: expected a list"),
        ("allow_repeated_data", "yes", "allow_repeated_data: expected true or false"),
        ("warmup_steps", 2.5, "warmup_steps: expected an integer"),
    ],
)
def test_wrong_types_are_named(key, value, message):
    with pytest.raises(SpecError, match=message):
        spec_from_dict({**MINIMAL, key: value})


def test_yaml_exponent_without_dot_is_a_number(tmp_path):
    # YAML 1.1 reads 5e10 as a string; the spec takes it as the number it means.
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**MINIMAL, "budgets": ["5e10", "1.6e11"]}))
    assert load_spec(path).budgets == (5e10, 1.6e11)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"sizes": MINIMAL["sizes"][:2]}, "at least 3 sizes"),
        ({"repeats": [{"size": 7, "budget": 1e9}]}, "size index 7"),
        ({"repeats": [{"size": 0, "budget": 2e9}]}, "not one of budgets"),
        ({"repeats": [{"size": 0, "budget": 1e9, "seed": 0}]}, "already a main seed"),
        ({"precision": "16"}, "precision"),
        ({"holdout": {"seeds": 0}}, "holdout.seeds must be at least 1"),
        ({"sizes": [{"embed_dim": 10, "num_layers": 1, "num_heads": 3}] * 3}, "not divisible"),
    ],
)
def test_inconsistent_specs_are_refused(change, message):
    with pytest.raises(SpecError, match=message):
        spec_from_dict({**MINIMAL, **change})


def test_missing_spec_file_names_the_profiles(tmp_path):
    with pytest.raises(SpecError, match="configs/scaling"):
        load_spec(tmp_path / "nope.yaml")


def test_records_round_trip_and_csv(tmp_path):
    path = tmp_path / "r.jsonl"
    rows = [{"key": run_key({"a": i}), "role": "fit", "size": "d8", "val_obs_ce": 1.0 + i} for i in range(3)]
    for r in rows:
        append_record(path, r)
    assert read_records(path) == rows
    write_csv(rows, tmp_path / "runs.csv")
    assert (tmp_path / "runs.csv").read_text().count("\n") == 4


def test_torn_last_line_is_skipped_and_a_damaged_middle_line_is_an_error(tmp_path):
    path = tmp_path / "r.jsonl"
    a = {"key": "a", "role": "fit", "val_obs_ce": 1.0}
    append_record(path, a)
    with open(path, "a") as f:
        f.write('{"key": "b", "val')  # a crash in the middle of a write
    with pytest.warns(UserWarning, match="torn last line"):
        assert read_records(path) == [a]
    path.write_text(json.dumps(a) + "\n{oops\n" + json.dumps({**a, "key": "c"}) + "\n")
    with pytest.raises(ValueError, match="line 2"):
        read_records(path)


def test_run_key_ignores_dict_order_but_not_values():
    assert run_key({"a": 1, "b": 2}) == run_key({"b": 2, "a": 1})
    assert run_key({"a": 1}) != run_key({"a": 2})


@pytest.mark.parametrize(
    "edit, problem",
    [
        ({"val_obs_ce": float("nan")}, "val_obs_ce is nan"),
        ({"val_obs_ce": -1.0}, "not a finite non-negative loss"),
        ({"role": None}, "'role' is not a str"),
        ({"key": 3}, "'key' is not a str"),
    ],
)
def test_a_record_with_a_bad_loss_or_field_is_refused_naming_the_line(tmp_path, edit, problem):
    path = tmp_path / "r.jsonl"
    good = {"key": "a", "role": "fit", "val_obs_ce": 1.0}
    append_record(path, good)
    append_record(path, {**good, **edit})
    with pytest.raises(ValueError, match=f"line 2: .*{re.escape(problem)}"):
        read_records(path)
    path.write_text(json.dumps(good) + "\n" + json.dumps([1, 2]) + "\n")
    with pytest.raises(ValueError, match="line 2: a record must be a JSON object"):
        read_records(path)


def test_a_reseeded_study_is_independent_of_the_spec_as_written():
    # cpu_default has three seeds of every trunk and no repeated points; one is added to check they move too.
    spec = load_spec(
        REPO / "configs" / "scaling" / "cpu_default.yaml", {"repeats": [{"size": 7, "budget": 2.5e10, "seed": 5}]}
    )
    assert len(spec.seeds) == 3 and len(spec.repeats) == 1
    assert reseeded(spec, 0) is spec
    other = reseeded(spec, 2)
    assert other.out == spec.out + "-seed2"
    assert other.series[0].store == str(Path(spec.series[0].store).parent) + "-seed2/tokens"
    assert other.seeds == tuple(s + 200 for s in spec.seeds)
    assert [r.seed for r in other.repeats] == [r.seed + 200 for r in spec.repeats]
    assert not set(other.seeds) & {r.seed for r in other.repeats}
    assert other.fit.seed == spec.fit.seed + 2 and other.budgets == spec.budgets and other.sizes == spec.sizes
    with pytest.raises(SpecError, match="seed must be 0 or more"):
        reseeded(spec, -1)
