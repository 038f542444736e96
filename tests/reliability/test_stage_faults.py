"""kill -9 in the middle of each Lightning stage (tokenizer, world model, agent), then ``--ckpt_path last``:
the resumed fit ends with exactly the weights and optimiser state of an uninterrupted one (bitwise, CPU)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from iris_wm.train.stages import run_agent_cli, run_tokenizer_cli, run_world_model_cli, stage_args

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
COMMANDS = {"tokenizer": "tokenizer", "world_model": "world-model", "agent": "agent"}
RUNNERS = {"tokenizer": run_tokenizer_cli, "world_model": run_world_model_cli, "agent": run_agent_cli}


def _args(stage, root, out, *extra):
    data = root / ("episodes" if stage == "tokenizer" else "tokens")
    return stage_args(
        "fit", stage, "debug", data, out, "--trainer.callbacks.init_args.every_n_train_steps", "2", *extra
    )


def _extra(stage, root):
    if stage != "agent":
        return []
    return [
        "--model.world_model",
        str(root / "wm" / "checkpoints" / "last.ckpt"),
        "--model.tokenizer",
        str(root / "tok" / "checkpoints" / "last.ckpt"),
        "--trainer.max_steps",
        "6",
    ]


def _state(path):
    saved = torch.load(path, weights_only=True)
    return saved["global_step"], saved["state_dict"], saved["optimizer_states"]


def _same(a, b):
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@pytest.mark.parametrize("stage", ["tokenizer", "world_model", "agent"])
def test_a_stage_killed_mid_fit_resumes_to_the_uninterrupted_result(pipeline, stage, tmp_path):
    extra = _extra(stage, pipeline)
    RUNNERS[stage](_args(stage, pipeline, tmp_path / "ref", *extra))
    out = tmp_path / "crashed"
    command = [sys.executable, "-m", "iris_wm.cli", COMMANDS[stage], *_args(stage, pipeline, out, *extra)]
    threads = str(torch.get_num_threads())  # the reference's, in this process: the comparison is bitwise
    env = dict(os.environ, IRIS_WM_FAULT=f"{stage}:5", OMP_NUM_THREADS=threads)
    killed = subprocess.run(command, env=env, capture_output=True, text=True, cwd=REPO)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert _state(out / "checkpoints" / "last.ckpt")[0] == 4, "the last checkpoint before the crash is step 4's"
    RUNNERS[stage](_args(stage, pipeline, out, *extra, "--ckpt_path", "last"))
    reference, resumed = (
        _state(tmp_path / "ref" / "checkpoints" / "last.ckpt"),
        _state(out / "checkpoints" / "last.ckpt"),
    )
    assert reference[0] == resumed[0] == 6
    assert _same(reference[1], resumed[1]), "weights differ from the uninterrupted fit"
    assert _same(reference[2], resumed[2]), "optimiser state differs from the uninterrupted fit"
