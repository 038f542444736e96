"""Sweep launchers: a pool of local processes and submitit's jobs (its local executor, two processes at a time)
record exactly what a serial sweep records; a failed trunk is reported with its log, the others are recorded, and
a rerun trains only what is missing."""

import os
from functools import partial
from pathlib import Path

import pytest

from helpers.scaling_backends import FailingBackend
from helpers.tokens import synthetic_token_store
from iris_wm.scaling.backend import TorchBackend
from scaling.launchers import LauncherConfig, LaunchError
from scaling.records import read_records
from scaling.spec import spec_from_dict
from scaling.sweep import Sweep

TESTS = Path(__file__).resolve().parents[2]
MEASURED = ("val_obs_ce", "val_bits_per_frame", "train_loss", "params", "flops", "tokens", "budget", "size", "role")


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    root = tmp_path_factory.mktemp("launch") / "tokens"
    synthetic_token_store(root, episodes=200, length=40, vocab_size=16)
    return spec_from_dict(
        {
            "name": "launch",
            "series": [{"name": "K4", "store": str(root)}],
            "context_steps": 2,
            "batch_size": 4,
            "warmup_steps": 2,
            "budgets": [1e7, 2e7],
            "eval_windows": 8,
            "allow_repeated_data": True,
            "learning_rate": {"base": 0.01, "reference_params": 2000, "calibrate": False},
            "holdout": {"factors": [2.0], "seeds": 1},
            "sizes": [
                {"embed_dim": 4, "num_layers": 1},
                {"embed_dim": 8, "num_layers": 1},
                {"embed_dim": 12, "num_layers": 1},
            ],
            "fit": {"min_steps": 1},
        }
    )


@pytest.fixture(scope="module")
def serial(spec, tmp_path_factory):
    out = tmp_path_factory.mktemp("serial")
    Sweep(spec, TorchBackend(progress=False), out, log=lambda line: None).run()
    return _measured(out)


def _measured(out: Path) -> dict:
    return {r["key"]: {k: r.get(k) for k in MEASURED} for r in read_records(out / "records.jsonl")}


@pytest.fixture
def importable(monkeypatch):
    """The spawned processes and jobs import the tests' helpers, as pytest's own process does."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))


@pytest.mark.parametrize(
    "launcher",
    [LauncherConfig("local", workers=2), LauncherConfig("submitit", cluster="local", poll_seconds=0.2)],
    ids=["local-pool", "submitit-local"],
)
def test_launched_sweeps_record_what_a_serial_sweep_records(spec, serial, launcher, tmp_path, importable):
    lines = []
    factory = partial(TorchBackend, progress=False)
    Sweep(
        spec, TorchBackend(progress=False), tmp_path, log=lines.append, launcher=launcher, backend_factory=factory
    ).run()
    assert _measured(tmp_path) == serial  # bitwise: one thread per process, the same data order and initialisation
    assert len(serial) == 3 * 2 + 1  # every size on both budgets, and the held-out run
    if launcher.name == "submitit":
        assert any("submitted as job" in line for line in lines) and (tmp_path / "jobs").is_dir()


@pytest.mark.parametrize(
    "launcher",
    [LauncherConfig(), LauncherConfig("submitit", cluster="local", poll_seconds=0.2)],
    ids=["serial", "submitit-local"],
)
def test_a_failed_trunk_is_reported_with_its_log_and_a_rerun_trains_only_what_is_missing(
    spec, serial, launcher, tmp_path, importable
):
    failing = partial(FailingBackend, "d8-L1-H2", progress=False)
    with pytest.raises(LaunchError, match=r"1 trunk\(s\) failed") as failure:
        Sweep(spec, failing(), tmp_path, log=lambda line: None, launcher=launcher, backend_factory=failing).run()
    message = str(failure.value)
    assert "fit K4 d8-L1-H2 seed 0" in message and "planted failure in d8-L1-H2" in message
    if launcher.name == "submitit":  # the job's own stderr, which holds the traceback
        log = Path(message.split("its log: ")[1].split()[0])
        assert "planted failure" in log.read_text()
    done = read_records(tmp_path / "records.jsonl")
    assert {r["size"] for r in done} == {"d4-L1-H2", "d12-L1-H2"} and len(done) == 4  # the ladder's other trunks

    lines = []
    Sweep(spec, TorchBackend(progress=False), tmp_path, log=lines.append).run()
    assert any("4 point(s) already recorded" in line for line in lines)
    assert _measured(tmp_path) == serial


def test_launcher_settings_are_checked():
    with pytest.raises(ValueError, match="'local' or 'submitit'"):
        LauncherConfig("slurm")
    with pytest.raises(ValueError, match="every trunk is its own job"):
        LauncherConfig("submitit", workers=2)
    with pytest.raises(ValueError, match="needs a picklable backend_factory"):
        Sweep(spec_from_dict(_minimal()), TorchBackend(), launcher=LauncherConfig(workers=2))


def _minimal() -> dict:
    sizes = [{"embed_dim": 4 * i, "num_layers": 1} for i in (1, 2, 3)]
    return {"name": "m", "series": [{"name": "S", "store": "x"}], "budgets": [1e9], "sizes": sizes}
