"""NaN and inf losses, crafted pickles, and determinism of the debug configs."""

import pickle

import pytest
import torch

from iris_wm.train.stages import run_tokenizer_cli, stage_args


def _tokenizer_fit(root, out, *extra):
    return run_tokenizer_cli(stage_args("fit", "tokenizer", "debug", root / "episodes", out, *extra))


def test_a_diverging_stage_stops_with_a_message_and_keeps_a_good_checkpoint(pipeline, tmp_path):
    # A learning rate of 1e30 sends the weights to huge values after one step and the loss to inf or NaN.
    with pytest.raises(FloatingPointError, match="training stopped before updating the weights"):
        _tokenizer_fit(
            pipeline,
            tmp_path,
            "--model.learning_rate",
            "1e30",
            "--trainer.callbacks.init_args.every_n_train_steps",
            "1",
        )
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert all(torch.isfinite(t).all() for t in saved["state_dict"].values() if t.is_floating_point())


def test_same_seed_same_losses(pipeline, tmp_path):
    import csv

    for name in ("a", "b"):
        _tokenizer_fit(pipeline, tmp_path / name)
    rows = [list(csv.DictReader(next((tmp_path / n).rglob("metrics.csv")).open())) for n in ("a", "b")]
    losses = [[r["train/loss"] for r in run if r.get("train/loss")] for run in rows]
    assert len(losses[0]) == 6 and losses[0] == losses[1]


class _Payload:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('1')",))


@pytest.mark.parametrize("what", ["run", "agent"])
def test_a_crafted_pickle_in_a_checkpoint_is_refused(tmp_path, monkeypatch, what):
    monkeypatch.chdir(tmp_path)
    if what == "run":
        from iris_wm.train.loop.state import checkpoint_path, load_checkpoint

        path = checkpoint_path(tmp_path)
        path.parent.mkdir(parents=True)
        torch.save({"format": 1, "payload": _Payload()}, path)
        with pytest.raises(ValueError, match="cannot be read"):
            load_checkpoint(tmp_path)
    else:
        from iris_wm.hub import load_agent

        path = tmp_path / "agent.ckpt"
        with open(path, "wb") as f:
            pickle.dump({"state_dict": _Payload()}, f)
        with pytest.raises(ValueError, match="nothing in it ran"):
            load_agent(path)
    assert not (tmp_path / "PWNED").exists(), "the payload must never run"
