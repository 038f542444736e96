"""The scaling harness end to end on a synthetic token store: sweep, resume, fits, report (cpu_fast profile)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from helpers.cli import refused
from helpers.tokens import synthetic_token_store
from iris_wm.cli.scaling import main as scaling_cli
from iris_wm.scaling.backend import TorchBackend, branch_schedule, trunk_schedule
from scaling.records import read_records
from scaling.spec import SpecError, load_spec, spec_from_dict
from scaling.sweep import Branch, Sweep, make_trunk

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("scaling") / "tokens"
    synthetic_token_store(root, episodes=500, length=60, vocab_size=32)
    return root


def _spec_file(tmp_path, store, **changes) -> Path:
    data = yaml.safe_load((REPO / "configs" / "scaling" / "cpu_fast.yaml").read_text())
    data["series"][0]["store"] = str(store)
    data["out"] = str(tmp_path / "out")
    data.update(changes)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_cpu_fast_end_to_end_then_rerun_skips_everything(tmp_path, store, capsys):
    spec_path = _spec_file(tmp_path, store)
    scaling_cli(["run", "--spec", str(spec_path)])
    out = tmp_path / "out"
    spec = load_spec(spec_path)
    records = read_records(out / "records.jsonl")
    roles = [r["role"] for r in records]
    n_sizes, n_budgets = len(spec.sizes), len(spec.budgets)
    assert roles.count("fit") == n_sizes * n_budgets
    calibration = [r for r in records if r["role"] == "calibration"]
    for label in {r["size"] for r in calibration}:  # the calibration grew until its best was interior
        tried = {r["lr_multiplier"]: r["val_obs_ce"] for r in calibration if r["size"] == label}
        best = min(tried, key=tried.get)
        assert len(tried) >= len(spec.learning_rate.multipliers)
        assert min(tried) < best < max(tried) or len(tried) == len(spec.learning_rate.multipliers) + 3
    assert roles.count("repeat") == 1 and roles.count("holdout") == 2  # two seeds of one held-out run
    for r in records:  # exact counts and provenance in every record
        assert r["flops"] == pytest.approx(r["tokens"] * r["flops_per_token"])
        assert r["tokens"] == r["steps"] * spec.batch_size * spec.context_steps * 5
        assert r["provenance"]["libraries"]["torch"] and np.isfinite(r["val_obs_ce"])
    fits = json.loads((out / "fit.json").read_text())
    fit = fits["series"]["K4"]
    assert fit["points"] == n_sizes * n_budgets  # the held-out run never enters a fit
    assert fit["parametric_law"]["converged"]
    (holdout,) = fit["holdout"]  # one check on the mean of both seeds
    assert holdout["seeds"] == [0, 1] and len(holdout["observed_each"]) == 2
    assert holdout["budget"] == pytest.approx(3 * max(spec.budgets))
    assert holdout["prediction_interval"]["ci95"][0] < holdout["predicted"] < holdout["prediction_interval"]["ci95"][1]
    report = (out / "report.md").read_text()
    assert "Pre-registered extrapolation" in report and "iris-wm scaling run" in report
    for name in ("loss_vs_compute", "isoflop", "optimal_allocation", "contours", "residuals"):
        assert (out / f"K4_{name}.png").stat().st_size > 10_000
    assert (out / "runs.csv").read_text().count("\n") == len(records) + 1

    capsys.readouterr()
    scaling_cli(["sweep", "--spec", str(spec_path)])
    assert read_records(out / "records.jsonl") == records  # idempotent: nothing trained again
    assert "already recorded" in capsys.readouterr().out


class _Crash(RuntimeError):
    pass


def test_a_crash_after_a_fork_resumes_there_and_matches_an_uninterrupted_run(tmp_path, store):
    spec = spec_from_dict(
        {
            "name": "r",
            "series": [{"name": "K4", "store": str(store)}],
            "context_steps": 4,
            "batch_size": 8,
            "warmup_steps": 5,
            "budgets": [3e8, 1e9],
            "eval_windows": 16,
            "sizes": [
                {"embed_dim": 8, "num_layers": 1},
                {"embed_dim": 16, "num_layers": 1},
                {"embed_dim": 24, "num_layers": 1},
            ],
        }
    )
    backend = TorchBackend(progress=False)
    size = spec.sizes[1]
    trunk = make_trunk(
        "fit", spec.series[0], size, 0, 3e-3, backend.describe(spec.series[0], size, spec), spec.budgets, spec
    )
    whole = []
    backend.train(trunk, spec, tmp_path / "a", lambda b, m: whole.append(m["val_obs_ce"]))

    seen = []

    def crash_after_first(branch, measured):
        seen.append(measured["val_obs_ce"])
        raise _Crash

    with pytest.raises(_Crash):
        backend.train(trunk, spec, tmp_path / "b", crash_after_first)
    checkpoint = tmp_path / "b" / "trunks" / f"{trunk.key}.pt"
    assert torch.load(checkpoint, weights_only=True)["step"] == trunk.branches[0].fork
    rest = type(trunk)(**{**vars(trunk), "branches": trunk.branches[1:]})
    resumed = []
    backend.train(rest, spec, tmp_path / "b", lambda b, m: resumed.append(m["val_obs_ce"]))
    assert seen + resumed == whole  # bitwise on CPU: same data order, restored model and optimizer state
    assert not checkpoint.exists()  # removed once every branch is recorded


def test_schedules_warm_up_hold_and_cool_down_to_zero():
    param = torch.nn.Parameter(torch.zeros(1))

    def lrs(make, steps):
        opt = torch.optim.SGD([{"params": [param], "initial_lr": 1.0}], lr=1.0)
        schedule = make(opt)
        out = []
        for _ in range(steps):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            schedule.step()
        return out

    trunk = lrs(lambda o: trunk_schedule(o, 4), 10)
    assert trunk[:5] == [0.0, 0.25, 0.5, 0.75, 1.0] and trunk[5:] == [1.0] * 5
    branch = Branch(budget=1.0, steps=20, cooldown=4)
    cool = lrs(lambda o: branch_schedule(o, 4, branch), 4)  # the cooldown's steps 16..19
    assert cool == pytest.approx([1.0, 1 - 0.25**0.5, 1 - 0.5**0.5, 1 - 0.75**0.5])


def test_too_much_repetition_and_too_short_branches_are_refused_before_training(tmp_path, store):
    base = {
        "name": "x",
        "series": [{"name": "K4", "store": str(store)}],
        "context_steps": 4,
        "batch_size": 8,
        "sizes": [
            {"embed_dim": 8, "num_layers": 1},
            {"embed_dim": 16, "num_layers": 1},
            {"embed_dim": 24, "num_layers": 1},
        ],
        "out": str(tmp_path / "x"),
    }
    with pytest.raises(SpecError, match="epochs of the .* unique training tokens"):
        Sweep(spec_from_dict({**base, "budgets": [1e11]}), TorchBackend(progress=False)).run()
    with pytest.raises(SpecError, match="fewer than twice the warmup"):
        Sweep(spec_from_dict({**base, "budgets": [1e7], "warmup_steps": 50}), TorchBackend(progress=False)).run()
    assert not (tmp_path / "x" / "records.jsonl").exists()


def test_a_frames_store_is_refused_with_the_fix(tmp_path):
    from iris_wm.data.store import EpisodeStore

    EpisodeStore.create(tmp_path / "frames", EpisodeStore.frame_spec(8), 3, {})
    spec = spec_from_dict(
        {
            "name": "x",
            "series": [{"name": "F", "store": str(tmp_path / "frames")}],
            "budgets": [1e9],
            "sizes": [{"embed_dim": 8, "num_layers": 1}] * 3,
        }
    )
    with pytest.raises(ValueError, match="holds frames, but the scaling sweep trains on tokens: encode it"):
        TorchBackend().describe(spec.series[0], spec.sizes[0], spec)


def test_scaling_cli_explains_itself_and_its_errors(tmp_path, capsys):
    scaling_cli(["--help"])
    assert "sweep" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        scaling_cli(["sweep", "--help"])
    assert exit_info.value.code == 0 and "--workers" in capsys.readouterr().out
    refused(capsys, ["scaling", "swep"], "unknown verb 'swep'")
    fast = str(REPO / "configs" / "scaling" / "cpu_fast.yaml")
    refused(capsys, ["scaling", "sweep", "--spec", fast, "--cluster", "local"], "add --launcher submitit")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "x", "sizes": [], "budgets": [1e9], "series": [], "bogus": 1}))
    refused(capsys, ["scaling", "fit", "--spec", str(bad)], r"unknown key\(s\) \['bogus'\]")
    fast = str(REPO / "configs" / "scaling" / "cpu_fast.yaml")
    refused(capsys, ["scaling", "fit", "--spec", fast, "--out", str(tmp_path)], "run the sweep first|No .*records")


def test_run_refuses_a_store_smaller_than_the_series_asks(store, tmp_path, capsys):
    spec = _spec_file(tmp_path, store)
    data = yaml.safe_load(spec.read_text())
    data["series"][0]["steps"] = 10**6  # the synthetic store has 30,000
    spec.write_text(yaml.safe_dump(data))
    refused(
        capsys,
        ["scaling", "run", "--spec", str(spec), "--out", str(tmp_path / "out")],
        "holds 30,000 steps, but series .* asks for 1,000,000",
    )


def test_design_checks_a_spec_on_planted_laws_before_training(tmp_path, store, capsys):
    spec_path = _spec_file(tmp_path, store)
    args = ["design", "--spec", str(spec_path), "--laws", "3", "--draws", "5", "--noise", "0.01"]
    scaling_cli([*args, "--correlation", "0.8"])
    result = json.loads((tmp_path / "out" / "design.json").read_text())["K4"]
    spec = load_spec(spec_path)
    assert result["points"] == len(spec.sizes) * len(spec.budgets) + len(spec.repeats)
    assert len(result["runs"]) == 3 and result["noise"] == 0.01 and result["correlation"] == 0.8
    assert all(0.2 / 1.1 <= r["true_a"] <= 0.55 / 0.75 for r in result["runs"])  # beta / (alpha + beta) in range
    low, high = result["median_abs_error_ci95"]
    assert low <= result["median_abs_error"] <= high
    assert "median |error of a|" in capsys.readouterr().out
    assert not (tmp_path / "out" / "records.jsonl").exists()  # nothing trained
