"""Data parallelism through Lightning (``--trainer.strategy ddp --trainer.devices 2``, CPU processes with gloo):
one step of 2 ranks at batch B equals one process's step at batch 2B (world model; tokenizer with an EMA codebook,
which the ranks keep in step); a DDP fit killed with SIGKILL and resumed ends bitwise where an uninterrupted DDP fit
ends; the token store encoded by 2 ranks equals the one a single process wrote."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from iris_wm.data.store import TokenStore
from iris_wm.train.stages import run_tokenizer_cli, run_world_model_cli, stage_args
from sequence_model.module import WorldModelModule
from tokenizer.module import TokenizerModule

REPO = Path(__file__).resolve().parents[2]
DDP = ("--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu")
EMA = ("--model.config.quantizer.ema", "true")
MODULES = {"world_model": WorldModelModule, "tokenizer": TokenizerModule}
SETTINGS = {
    "world_model": (
        "world-model",
        "tokens",
        (
            "--model.config.gpt.dropout",
            "0.0",
            "--model.config.gpt.attention_dropout",
            "0.0",
            "--data.complete_windows",
            "true",
        ),
    ),
    "tokenizer": ("tokenizer", "episodes", EMA),
}


def _ddp(stage: str, args: list[str], fault: str | None = None) -> subprocess.CompletedProcess:
    """``python -m iris_wm.cli <stage> <args>`` on 2 ranks, in a session of its own (a kill reaches both ranks)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("IRIS_WM_FAULT", None)
    if fault:
        env["IRIS_WM_FAULT"] = fault
    command = [sys.executable, "-m", "iris_wm.cli", stage, *args, *DDP]
    return subprocess.run(
        command, env=env, capture_output=True, text=True, cwd=REPO, timeout=600, start_new_session=True
    )


def _saved(folder: Path):
    saved = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)
    return saved["global_step"], saved["state_dict"], saved["optimizer_states"]


@pytest.mark.parametrize("stage", ["world_model", "tokenizer"])
def test_one_ddp_step_equals_one_step_at_twice_the_batch(pipeline, stage, tmp_path):
    command, data, extra = SETTINGS[stage]
    batch = 4

    def args(out, per_rank):
        return stage_args(
            "fit",
            stage,
            "debug",
            pipeline / data,
            out,
            "--trainer.max_steps",
            "1",
            "--data.batch_size",
            str(per_rank),
            *extra,
        )

    (run_world_model_cli if stage == "world_model" else run_tokenizer_cli)(args(tmp_path / "one", 2 * batch))
    ranks = _ddp(command, args(tmp_path / "two", batch))
    assert ranks.returncode == 0, ranks.stderr[-3000:]
    one, two = _saved(tmp_path / "one"), _saved(tmp_path / "two")
    assert one[0] == two[0] == 1
    names = _optimised_names(MODULES[stage], tmp_path / "one")
    state = {"one": one[2][0]["state"], "two": two[2][0]["state"]}
    assert len(names) == len(state["one"]) == len(state["two"])
    checked = total = 0
    for i, name in enumerate(names):
        # The gradients the step used (Adam's first moment, (1 - beta1) g): the ranks' mean equals one process's,
        # up to the order of float32 sums (a bias's gradient sums over some 10^5 pixels).
        m1, m2 = state["one"][i]["exp_avg"], state["two"][i]["exp_avg"]
        torch.testing.assert_close(m2, m1, rtol=1e-3, atol=1e-7, msg=name)
        # The weights to 1e-5 wherever the gradient is more than rounding (95% of them at least). Where it is not
        # (a bias before a normalisation has none), Adam's first step g / (|g| + eps) is a sign drawn by the
        # rounding, in one process as in two.
        real = m1.abs() > 1e-7
        checked, total = checked + int(real.sum()), total + real.numel()
        w1, w2 = one[1][name][real], two[1][name][real]
        torch.testing.assert_close(w2, w1, rtol=0, atol=1e-5, msg=name)
    assert checked >= 0.95 * total, f"only {checked} of {total} weights had a gradient above rounding"
    if stage == "tokenizer":  # the EMA codebook's statistics are buffers of the state: compared above
        assert any(k.endswith("cluster_size") for k in one[1]) and any(k.endswith("embed_avg") for k in one[1])


def _optimised_names(module_class, folder: Path) -> list[str]:
    """The state-dict names of the optimiser's parameters, in its order (its state is keyed by position)."""
    module = module_class.load_from_checkpoint(folder / "checkpoints" / "last.ckpt", weights_only=False)
    optimizer = module.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    by_id = {id(p): n for n, p in module.named_parameters()}
    return [by_id[id(p)] for group in optimizer.param_groups for p in group["params"]]


def test_a_ddp_fit_killed_mid_fit_resumes_to_the_uninterrupted_ddp_result(pipeline, tmp_path):
    def args(out, *more):
        return stage_args(
            "fit",
            "world_model",
            "debug",
            pipeline / "tokens",
            out,
            "--trainer.callbacks.init_args.every_n_train_steps",
            "2",
            "--data.batch_size",
            "2",
            *more,
        )

    whole = _ddp("world-model", args(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr[-3000:]
    killed = _ddp("world-model", args(tmp_path / "killed"), fault="world_model:5")
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert _saved(tmp_path / "killed")[0] == 4, "the last checkpoint before the kill is step 4's"
    resumed = _ddp("world-model", args(tmp_path / "killed", "--ckpt_path", "last"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    reference, after = _saved(tmp_path / "whole"), _saved(tmp_path / "killed")
    assert reference[0] == after[0] == 6
    for name in reference[1]:
        assert torch.equal(reference[1][name], after[1][name]), name
    assert _flat(reference[2]) == _flat(after[2])


def _flat(states) -> list:
    out = []
    for state in states:
        for group in state["state"].values():
            out += [v.tolist() if isinstance(v, torch.Tensor) else v for v in group.values()]
    return out


def test_the_token_store_encoded_by_two_ranks_equals_one_process(pipeline, tmp_path):
    checkpoint = pipeline / "tok" / "checkpoints" / "last.ckpt"
    out = tmp_path / "tokens"
    args = stage_args(
        "predict",
        "tokenizer",
        "debug",
        pipeline / "episodes",
        tmp_path / "tok",
        "--ckpt_path",
        str(checkpoint),
        "--token_writer.output",
        str(out),
    )
    ranks = _ddp("tokenizer", args)
    assert ranks.returncode == 0, ranks.stderr[-3000:]
    ours, single = TokenStore.open(out), TokenStore.open(pipeline / "tokens")
    assert ours.num_steps == single.num_steps
    rows = np.arange(single.num_steps)
    np.testing.assert_array_equal(ours.observations(rows), single.observations(rows))
    np.testing.assert_array_equal(ours.episode_lengths, single.episode_lengths)
    assert ours.manifest["settings"] == single.manifest["settings"]
