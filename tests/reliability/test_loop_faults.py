"""The online loop on the debug config: it runs, and a run killed with SIGKILL resumes to the same state."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.cli import refused, snapshot
from iris_wm.data.store import EpisodeStore
from iris_wm.train.loop.config import RunConfig, parse_run_config
from iris_wm.train.loop.online import OnlineLoop
from iris_wm.train.loop.state import checkpoint_path, load_checkpoint

REPO = Path(__file__).resolve().parents[2]
DEBUG = REPO / "configs" / "run" / "debug.yaml"


def _config(out, **overrides) -> RunConfig:
    args = ["--config", str(DEBUG), "--run.out", str(out)]
    for key, value in overrides.items():
        args += [f"--run.{key}", str(value)]
    return parse_run_config(args)


def _run_killed(out, fault):
    # the same thread count as the uninterrupted run in this process: reductions split over other thread counts
    # round differently, and the comparison is bitwise
    env = dict(os.environ, IRIS_WM_FAULT=fault, OMP_NUM_THREADS=str(torch.get_num_threads()))
    done = subprocess.run(
        [sys.executable, "-m", "iris_wm.cli", "run", "--config", str(DEBUG), "--run.out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert done.returncode == -9, f"the run was meant to be killed at {fault}:\n{done.stderr[-2000:]}"


def _assert_same(a, b, path=""):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), f"{path} differs"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            _assert_same(a[key], b[key], f"{path}/{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a} != {b}"


def _metrics(out):
    rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def test_a_killed_run_resumes_to_the_uninterrupted_state(tmp_path):
    reference = OnlineLoop(_config(tmp_path / "ref"))
    reference.run()
    expected = load_checkpoint(tmp_path / "ref")
    assert expected["epoch"] == 3 and all(expected["steps"][n] > 0 for n in ("tokenizer", "world_model", "agent"))
    assert (tmp_path / "ref" / "media" / "reconstructions-0002.png").exists()
    assert (tmp_path / "ref" / "media" / "imagined-0002.gif").exists()

    out = tmp_path / "crashed"
    _run_killed(out, "2:collect:10")  # mid-collection: the unfinished episode and the emulator state matter
    assert load_checkpoint(out)["epoch"] == 1
    _run_killed(out, "3:world_model:1")  # after epoch 3's episodes were appended: they must be rolled back
    assert load_checkpoint(out)["epoch"] == 2
    appended = len(EpisodeStore.open(out / "episodes").manifest["shards"])
    assert appended == load_checkpoint(out)["store_shards"] + 1, "epoch 3's episodes are in the store, uncommitted"
    resumed = OnlineLoop(_config(out))
    resumed.run()
    _assert_same(load_checkpoint(out), expected | {"config": load_checkpoint(out)["config"]})
    a, b = EpisodeStore.open(out / "episodes"), EpisodeStore.open(tmp_path / "ref" / "episodes")
    assert a.num_steps == b.num_steps and a.num_episodes == b.num_episodes
    rows = np.arange(a.num_steps)
    np.testing.assert_array_equal(a.observations(rows), b.observations(rows))
    np.testing.assert_array_equal(a.columns.action, b.columns.action)
    np.testing.assert_array_equal(a.columns.terminated, b.columns.terminated)
    assert _metrics(out) == _metrics(tmp_path / "ref")


def test_more_epochs_continue_and_other_settings_are_refused(tmp_path):
    OnlineLoop(_config(tmp_path, epochs=1)).run()
    loop = OnlineLoop(_config(tmp_path, epochs=2))
    assert loop.epoch == 1
    loop.run()
    assert load_checkpoint(tmp_path)["epoch"] == 2
    with pytest.raises(ValueError, match="seed differ"):
        OnlineLoop(_config(tmp_path, epochs=2, seed=5))


def test_exported_agent_plays_the_real_game(tmp_path):
    from iris_wm.evaluate.play import evaluate

    loop = OnlineLoop(_config(tmp_path / "run", epochs=2))
    loop.run()
    path = loop.export_agent(tmp_path / "agent")
    result = evaluate(
        str(tmp_path / "eval.json"),
        agent=str(path),
        episodes=2,
        num_envs=2,
        env=_config(tmp_path / "run").env.__class__.evaluation(max_episode_steps=20),
    )
    assert result["lengths"] == [20, 20]


def test_a_non_finite_loss_stops_the_run_and_keeps_the_checkpoint(tmp_path):
    loop = OnlineLoop(_config(tmp_path, epochs=2))
    loop.run()
    before = checkpoint_path(tmp_path).read_bytes()
    loop = OnlineLoop(_config(tmp_path, epochs=3))
    module = loop.modules["world_model"]
    original = module.loss

    def poisoned(batch):
        loss, metrics = original(batch)
        return loss * float("nan"), {**metrics, "loss": loss * float("nan")}

    module.loss = poisoned
    with pytest.raises(FloatingPointError, match="keeps epoch 2"):
        loop.run()
    assert checkpoint_path(tmp_path).read_bytes() == before


def test_a_damaged_checkpoint_is_refused_with_a_fix(tmp_path):
    OnlineLoop(_config(tmp_path, epochs=1)).run()
    path = checkpoint_path(tmp_path)
    path.write_bytes(path.read_bytes()[:1000])
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match="cannot be read .*nothing of the run was changed. Restore it"):
        OnlineLoop(_config(tmp_path, epochs=2))
    assert snapshot(tmp_path) == before


def test_a_missing_checkpoint_never_costs_committed_episodes_or_metrics(tmp_path, capsys):
    """Finding 1: with last.ckpt gone, the loop used to take the run for a new one and delete every shard of its
    store and truncate metrics.jsonl. Now it refuses, and nothing changes."""
    OnlineLoop(_config(tmp_path, epochs=1)).run()
    checkpoint_path(tmp_path).rename(tmp_path / "moved-away.ckpt")
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match="missing, so it cannot be resumed exactly; nothing was changed"):
        OnlineLoop(_config(tmp_path, epochs=2))
    args = ["run", "--config", str(DEBUG), "--run.out", str(tmp_path), "--run.epochs", "2"]
    refused(capsys, args, "checkpoint", str(checkpoint_path(tmp_path)), "Restore")
    assert snapshot(tmp_path) == before
    (tmp_path / "moved-away.ckpt").rename(checkpoint_path(tmp_path))
    loop = OnlineLoop(_config(tmp_path, epochs=2))
    assert loop.epoch == 1, "restored, the run resumes where it was"


@pytest.mark.parametrize("config", sorted((REPO / "configs" / "run").glob("*.yaml")), ids=lambda p: p.name)
def test_every_run_config_parses(config):
    run = parse_run_config(["--config", str(config)])
    assert run.epochs > 0 and run.collection.steps_per_epoch > 0


def test_unknown_run_keys_are_refused(tmp_path, capsys):
    refused(capsys, ["run", "--config", str(DEBUG), "--run.collection.stepz", "3"], "stepz")


def _run_ranks(out, fault=None, expect=0):
    """The debug run on 2 data-parallel processes (gloo), in a session of its own (a fault kills every rank)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("IRIS_WM_FAULT", None)
    if fault:
        env["IRIS_WM_FAULT"] = fault
    command = [sys.executable, "-m", "iris_wm.cli", "run", "--config", str(DEBUG), "--run.out", str(out)]
    done = subprocess.run(
        [*command, "--run.devices", "2"], env=env, capture_output=True, text=True, cwd=REPO, start_new_session=True
    )
    assert done.returncode == expect, f"{fault}: {done.stderr[-3000:]}"


def test_a_killed_data_parallel_run_resumes_to_the_uninterrupted_state(tmp_path):
    _run_ranks(tmp_path / "ref")
    expected = load_checkpoint(tmp_path / "ref")
    assert expected["epoch"] == 3 and len(expected["ranks"]) == 1  # rank 1's random state is in the checkpoint
    single = OnlineLoop(_config(tmp_path / "single"))
    single.run()
    # Rank 0 collected what one process collects (the first epoch's policy is the same untrained one); the ranks
    # trained on twice the windows, so the weights differ from one process's.
    first = EpisodeStore.open(tmp_path / "single" / "episodes").episode(0)
    np.testing.assert_array_equal(EpisodeStore.open(tmp_path / "ref" / "episodes").episode(0).actions, first.actions)
    assert not torch.equal(
        expected["modules"]["world_model"]["world_model.observation_head.2.weight"],
        load_checkpoint(tmp_path / "single")["modules"]["world_model"]["world_model.observation_head.2.weight"],
    )

    out = tmp_path / "crashed"
    _run_ranks(out, "2:collect:10", expect=-9)  # rank 0 mid-collection, rank 1 waiting for it
    assert load_checkpoint(out)["epoch"] == 1
    _run_ranks(out, "3:world_model:1", expect=-9)  # both ranks mid-training, epoch 3's episodes appended
    assert load_checkpoint(out)["epoch"] == 2
    _run_ranks(out)
    _assert_same(load_checkpoint(out), expected | {"config": load_checkpoint(out)["config"]})
    a, b = EpisodeStore.open(out / "episodes"), EpisodeStore.open(tmp_path / "ref" / "episodes")
    assert a.num_steps == b.num_steps and a.manifest["shards"] == b.manifest["shards"]
    assert _metrics(out) == _metrics(tmp_path / "ref")
