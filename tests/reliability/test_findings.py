"""The data-loss and silent-corruption findings of the adversarial review (issue 15), a test each; every one of
them failed on the code before its fix. Finding 1 (the loop's missing checkpoint) is in test_loop_faults.py, the
NaN scaling record of finding 8 in tests/scaling/test_spec_records.py."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.cli import refused, snapshot
from iris_wm.cli.main import main as iris_wm
from iris_wm.data.store import EpisodeStore, StoreError, TokenStore
from iris_wm.hub import PretrainedError, from_pretrained, load_model, save_pretrained
from iris_wm.runtime.files import FolderLock
from iris_wm.train.stages import stage_args

REPO = Path(__file__).resolve().parents[2]
SMALL = ["--env.max_episode_steps", "30", "--flush_steps", "60"]


def _cli(*args, fault=None):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("IRIS_WM_FAULT", None)
    if fault:
        env["IRIS_WM_FAULT"] = fault
    return subprocess.run(
        [sys.executable, "-m", "iris_wm.cli", *map(str, args)], env=env, capture_output=True, text=True, cwd=REPO
    )


def _flip_a_byte(source: Path, target: Path) -> Path:
    """A copy of ``source`` with one byte in the middle changed: the archive still opens, one entry fails its CRC."""
    whole = source.read_bytes()
    middle = len(whole) // 2
    target.write_bytes(whole[:middle] + bytes([whole[middle] ^ 0xFF]) + whole[middle + 1 :])
    return target


# 2 ---------------------------------------------------------------------------------------------------------------
def test_export_never_overwrites_a_users_files_or_writes_into_a_store(pipeline, tmp_path, capsys):
    checkpoint = pipeline / "tok" / "checkpoints" / "last.ckpt"
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "README.md").write_text("my notes\n")
    (mine / "config.json").write_text('{"learning_rate": 3}\n')
    before = snapshot(mine)
    push = ["push-to-hub", "--checkpoint", str(checkpoint), "--out", str(mine)]
    refused(capsys, push, str(mine), "not empty", "--overwrite")
    refused(capsys, [*push, "--overwrite"], "not an iris-wm export", "nothing was changed")
    assert snapshot(mine) == before
    store = pipeline / "episodes"
    before = snapshot(store)
    refused(capsys, ["push-to-hub", "--checkpoint", str(checkpoint), "--out", str(store), "--overwrite"], "store")
    assert snapshot(store) == before
    # An earlier export is what --overwrite replaces.
    iris_wm(["push-to-hub", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "export")])
    iris_wm(["push-to-hub", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "export"), "--overwrite"])
    assert (tmp_path / "export" / "model.safetensors").is_file()


# 3 ---------------------------------------------------------------------------------------------------------------
def test_an_unfinished_parallel_collection_refuses_another_worker_count_and_keeps_its_parts(tmp_path, capsys):
    out = tmp_path / "episodes"
    base = ["collect", "--out", str(out), "--steps", "400", *SMALL]
    # Killed in the merge, after both shares were collected: the part store holds the second share, 200 steps.
    assert _cli(*base, "--workers", "2", fault="collect-merge:1:0").returncode == -9
    parts = sorted(tmp_path.glob("episodes.part[0-9]*"))
    assert parts and EpisodeStore.open(parts[-1]).num_steps == 200
    before = snapshot(tmp_path)
    for workers in ("1", "3"):
        refused(capsys, [*base, "--workers", workers], "rerun it with .*number of workers")
    assert snapshot(tmp_path) == before
    assert _cli(*base, "--workers", "2").returncode == 0
    assert EpisodeStore.open(out).num_steps == 400 and not list(tmp_path.glob("episodes.part[0-9]*"))


# 4 ---------------------------------------------------------------------------------------------------------------
def test_a_second_collection_into_a_store_being_written_is_refused_at_once(tmp_path, capsys):
    out = tmp_path / "episodes"
    first = subprocess.Popen(
        [sys.executable, "-m", "iris_wm.cli", "collect", "--out", str(out), "--steps", "3000", *SMALL],
        cwd=REPO,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    lock = out / FolderLock.FILE
    deadline = time.monotonic() + 120
    while not (lock.exists() and lock.read_text().strip()) and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    refused(capsys, ["collect", "--out", str(out), "--steps", "3000", *SMALL], "Another process", str(first.pid))
    assert first.wait(timeout=600) == 0
    store = EpisodeStore.open(out)
    assert store.num_steps == 3000, "one writer: the target, not twice it"
    # The same refusal without timing: a lock held here.
    with FolderLock(out, "episode store"):
        refused(capsys, ["collect", "--out", str(out), "--steps", "3100", *SMALL], "Another process")
    assert EpisodeStore.open(out).num_steps == 3000


# 5 ---------------------------------------------------------------------------------------------------------------
def test_a_predict_killed_while_writing_leaves_no_token_store_and_a_rerun_completes(pipeline, tmp_path, capsys):
    tokens = tmp_path / "tokens"
    predict = stage_args(
        "predict",
        "tokenizer",
        "debug",
        pipeline / "episodes",
        tmp_path / "log",
        "--ckpt_path",
        pipeline / "tok" / "checkpoints" / "last.ckpt",
        "--token_writer.output",
        tokens,
        "--token_writer.episodes_per_shard",
        "2",
    )
    assert _cli("tokenizer", *predict, fault="tokens:1").returncode == -9
    assert not tokens.exists(), "a partial token store must not be where training would find it"
    fit = stage_args("fit", "world_model", "debug", tokens, tmp_path / "wm")
    refused(capsys, ["world-model", *map(str, fit)], str(tokens), "No store")
    iris_wm(["tokenizer", *map(str, predict)])
    again, reference = TokenStore.open(tokens), TokenStore.open(pipeline / "tokens")
    rows = np.arange(reference.num_steps)
    np.testing.assert_array_equal(again.observations(rows), reference.observations(rows))


# 6 ---------------------------------------------------------------------------------------------------------------
def test_a_checkpoint_failing_its_crc_is_refused_by_every_load_path(pipeline, tmp_path, capsys):
    damaged = _flip_a_byte(pipeline / "wm" / "checkpoints" / "last.ckpt", tmp_path / "damaged.ckpt")
    tokenizer = pipeline / "tok" / "checkpoints" / "last.ckpt"
    with pytest.raises(PretrainedError, match="CRC"):
        load_model(damaged, "world_model")
    imagine = ["imagine", "--world_model", damaged, "--tokenizer", tokenizer, "--episodes", pipeline / "episodes"]
    imagine += ["--tokens", pipeline / "tokens", "--out", tmp_path / "imagine"]
    refused(capsys, list(map(str, imagine)), "CRC", str(damaged))
    refused(capsys, ["evaluate", "--agent", str(damaged), "--out", str(tmp_path / "r.json")], "CRC")
    refused(capsys, ["push-to-hub", "--checkpoint", str(damaged), "--out", str(tmp_path / "x")], "CRC")
    fit = stage_args("fit", "world_model", "debug", pipeline / "tokens", tmp_path / "wm")
    refused(capsys, ["world-model", *map(str, fit), "--model.from_pretrained", str(damaged)], "CRC")
    assert not (tmp_path / "x").exists() and not (tmp_path / "r.json").exists()


# 7 ---------------------------------------------------------------------------------------------------------------
def test_a_manifest_whose_counts_disagree_with_its_shards_is_refused(pipeline, tmp_path, capsys):
    store = tmp_path / "episodes"
    shutil.copytree(pipeline / "episodes", store)
    manifest = json.loads((store / "manifest.json").read_text())
    manifest["num_episodes"] -= 1
    (store / "manifest.json").write_text(json.dumps(manifest))
    before = snapshot(store)
    with pytest.raises(StoreError, match="num_episodes .* but its shards hold"):
        EpisodeStore.open(store)
    refused(capsys, ["collect", "--out", str(store), "--steps", "400", "--env.max_episode_steps", "40"], "manifest")
    assert snapshot(store) == before


# 8 ---------------------------------------------------------------------------------------------------------------
def test_imagine_refuses_a_world_model_with_fewer_actions_than_the_data(pipeline, tmp_path, capsys):
    model = load_model(pipeline / "wm-pretrained", "world_model")
    config = model.config.__class__(**{**model.config.__dict__, "num_actions": model.config.num_actions - 1})
    save_pretrained(type(model)(config), tmp_path / "small-wm")
    imagine = ["imagine", "--world_model", tmp_path / "small-wm", "--tokenizer", pipeline / "tok-pretrained"]
    imagine += ["--episodes", pipeline / "episodes", "--tokens", pipeline / "tokens", "--out", tmp_path / "imagine"]
    mismatch = r"3 actions\) and the token store .*4 actions\) do not fit together \(actions differ\)"
    refused(capsys, list(map(str, imagine)), mismatch)
    assert not (tmp_path / "imagine" / "metrics.json").exists()


def test_a_config_json_with_a_field_missing_or_unknown_is_refused(pipeline, tmp_path):
    for change, problem in (
        (lambda c: c.pop("context_steps"), "context_steps"),
        (lambda c: c.update(extra=1), "extra"),
    ):
        folder = tmp_path / problem
        shutil.copytree(pipeline / "wm-pretrained", folder)
        data = json.loads((folder / "config.json").read_text())
        change(data["config"])
        (folder / "config.json").write_text(json.dumps(data))
        with pytest.raises(PretrainedError, match=f"{folder / 'config.json'}.*{problem}"):
            from_pretrained(folder, "world_model")
    assert torch.equal(
        next(iter(from_pretrained(pipeline / "wm-pretrained", "world_model").state_dict().values())),
        next(iter(load_model(pipeline / "wm" / "checkpoints" / "last.ckpt", "world_model").state_dict().values())),
    )
