"""``--model.from_pretrained`` in the Lightning stages, and the checks that keep a store, a tokenizer and a
world model from being paired wrongly: a pretrained folder must give exactly what its checkpoint gives."""

import json

import numpy as np
import pytest
import torch

from helpers.cli import refused
from iris_wm.cli.main import main as iris_wm
from iris_wm.data.store import TokenStore
from iris_wm.hub import PretrainedError, from_pretrained, load_model, save_pretrained
from iris_wm.train.stages import run_agent_cli, run_tokenizer_cli, run_world_model_cli, stage_args
from sequence_model.world_model import WorldModel
from tokenizer.model import Tokenizer


def _fit(runner, stage, data, out, *extra):
    return runner(stage_args("fit", stage, "debug", data, out, *extra))


def _predict(root, out, *source):
    return run_tokenizer_cli(
        [
            "predict",
            "--config",
            "configs/tokenizer/debug.yaml",
            "--data.root",
            str(root / "episodes"),
            "--trainer.logger",
            "false",
            "--token_writer.output",
            str(out),
            *source,
        ]
    )


def _validate(runner, stage, data, out, *source) -> dict:
    cli = runner(stage_args("validate", stage, "debug", data, out, *source))
    return {k: float(v) for k, v in cli.trainer.callback_metrics.items()}


def test_load_model_reads_every_source_the_same(pipeline):
    from iris_wm.runtime.provenance import weights_digest

    checkpoint, folder = pipeline / "wm" / "checkpoints" / "last.ckpt", pipeline / "wm-pretrained"
    assert weights_digest(load_model(checkpoint, "world_model")) == weights_digest(load_model(folder, "world_model"))
    with pytest.raises(PretrainedError, match="holds no actor critic"):
        load_model(checkpoint, "actor_critic")
    with pytest.raises(PretrainedError, match="No checkpoint at"):
        load_model(pipeline / "missing" / "last.ckpt", "world_model")


def test_tokenizer_validate_and_predict_from_a_pretrained_folder_equal_the_checkpoint(pipeline, tmp_path, capsys):
    checkpoint = ["--ckpt_path", str(pipeline / "tok" / "checkpoints" / "last.ckpt")]
    pretrained = ["--model.from_pretrained", str(pipeline / "tok-pretrained")]
    metrics = [
        _validate(run_tokenizer_cli, "tokenizer", pipeline / "episodes", tmp_path / n, *s)
        for n, s in (("a", checkpoint), ("b", pretrained))
    ]
    assert metrics[0].keys() == metrics[1].keys() and "val/psnr" in metrics[0]
    for key in metrics[0]:
        assert metrics[1][key] == pytest.approx(metrics[0][key], rel=1e-6, abs=1e-6), key

    # The folder's architecture replaces a config that disagrees with it; the tokens are exactly the same.
    _predict(pipeline, tmp_path / "tokens", *pretrained, "--model.config.channels", "4")
    assert "model.config from" in capsys.readouterr().err
    ours, theirs = TokenStore.open(tmp_path / "tokens"), TokenStore.open(pipeline / "tokens")
    np.testing.assert_array_equal(
        ours.observations(np.arange(ours.num_steps)), theirs.observations(np.arange(theirs.num_steps))
    )
    settings = ours.manifest["settings"]
    assert settings["tokenizer_checkpoint"] == str((pipeline / "tok-pretrained").resolve())
    assert settings["tokenizer_digest"] == theirs.manifest["settings"]["tokenizer_digest"] is not None

    with pytest.raises(ValueError, match="not both"):
        _predict(pipeline, tmp_path / "tokens2", *pretrained, *checkpoint)


def test_world_model_validate_and_fine_tune_from_a_pretrained_folder(pipeline, tmp_path):
    tokens, folder = pipeline / "tokens", pipeline / "wm-pretrained"
    a = _validate(
        run_world_model_cli,
        "world_model",
        tokens,
        tmp_path / "a",
        "--ckpt_path",
        str(pipeline / "wm" / "checkpoints" / "last.ckpt"),
    )
    b = _validate(run_world_model_cli, "world_model", tokens, tmp_path / "b", "--model.from_pretrained", str(folder))
    assert a["val/observation_ce"] == pytest.approx(b["val/observation_ce"], rel=1e-6)

    # Fine-tuning starts from the pretrained weights: with a learning rate of 0 they come out unchanged.
    cli = _fit(
        run_world_model_cli,
        "world_model",
        tokens,
        tmp_path / "ft",
        "--model.from_pretrained",
        str(folder),
        "--model.learning_rate",
        "0",
        "--trainer.max_steps",
        "2",
    )
    start = from_pretrained(folder).state_dict()
    for name, tensor in cli.model.world_model.state_dict().items():
        assert torch.equal(tensor, start[name]), name
    saved = (tmp_path / "ft" / "logs").rglob("config.yaml")
    assert any(f"from_pretrained: {folder}" in path.read_text() for path in saved), "config.yaml records the source"


def test_a_pretrained_model_that_does_not_fit_the_data_is_refused(pipeline, tmp_path):
    wm = from_pretrained(pipeline / "wm-pretrained")
    config = wm.config.__class__(**{**wm.config.__dict__, "num_actions": wm.config.num_actions + 1})
    save_pretrained(WorldModel(config), tmp_path / "other-game")
    with pytest.raises(ValueError, match=r"other-game does not fit .*num_actions: 5 in the model, 4 in the data"):
        _validate(
            run_world_model_cli,
            "world_model",
            pipeline / "tokens",
            tmp_path / "v",
            "--model.from_pretrained",
            str(tmp_path / "other-game"),
        )

    # A Breakout world model (4 actions) on Pong's tokens (6 actions), from its checkpoint or its folder.
    iris_wm(
        [
            "collect",
            "--out",
            str(tmp_path / "pong"),
            "--steps",
            "60",
            "--env.game",
            "Pong",
            "--env.max_episode_steps",
            "30",
        ]
    )
    run_tokenizer_cli(
        [
            "predict",
            "--config",
            "configs/tokenizer/debug.yaml",
            "--data.root",
            str(tmp_path / "pong"),
            "--trainer.logger",
            "false",
            "--trainer.default_root_dir",
            str(tmp_path / "predict"),
            "--trainer.callbacks.init_args.dirpath",
            str(tmp_path / "predict" / "checkpoints"),
            "--token_writer.output",
            str(tmp_path / "pong-tokens"),
            "--ckpt_path",
            str(pipeline / "tok" / "checkpoints" / "last.ckpt"),
        ]
    )
    for source in (
        ["--ckpt_path", str(pipeline / "wm" / "checkpoints" / "last.ckpt")],
        ["--model.from_pretrained", str(pipeline / "wm-pretrained")],
    ):
        with pytest.raises(ValueError, match=r"does not fit the data .*num_actions: 4 in the model, 6 in the data"):
            _validate(run_world_model_cli, "world_model", tmp_path / "pong-tokens", tmp_path / "v", *source)


def test_a_tokenizer_other_than_the_stores_is_refused(pipeline, tmp_path, capsys):
    # Same sizes, other weights: without the recorded digest its token ids would silently mean other codes.
    torch.manual_seed(1)
    save_pretrained(Tokenizer(from_pretrained(pipeline / "tok-pretrained").config), tmp_path / "other-tok")
    sources = [
        "--world_model",
        str(pipeline / "wm-pretrained"),
        "--episodes",
        str(pipeline / "episodes"),
        "--tokens",
        str(pipeline / "tokens"),
        "--out",
        str(tmp_path / "imagine"),
        "--burn_in",
        "2",
        "--horizon",
        "2",
        "--num_windows",
        "1",
    ]
    refused(capsys, ["imagine", *sources, "--tokenizer", str(tmp_path / "other-tok")], "encoded by another tokenizer")
    with pytest.raises(ValueError, match="encoded by another tokenizer"):
        _fit(
            run_agent_cli,
            "agent",
            pipeline / "tokens",
            tmp_path / "agent",
            "--model.world_model",
            str(pipeline / "wm-pretrained"),
            "--model.tokenizer",
            str(tmp_path / "other-tok"),
        )
    iris_wm(["imagine", *sources, "--tokenizer", str(pipeline / "tok-pretrained")])
    assert json.loads((tmp_path / "imagine" / "metrics.json").read_text())["episodes"] == 1
    # Episodes other than the ones the tokens were encoded from: the frames would not match the tokens.
    iris_wm(
        ["collect", "--out", str(tmp_path / "other"), "--steps", "60", "--seed", "7", "--env.max_episode_steps", "25"]
    )
    others = [a if a != str(pipeline / "episodes") else str(tmp_path / "other") for a in sources]
    refused(
        capsys,
        ["imagine", *others, "--tokenizer", str(pipeline / "tok-pretrained")],
        "was not encoded from the episode store",
    )


def test_an_agent_goes_on_training_from_its_pretrained_folder(pipeline, tmp_path):
    models = [
        "--model.world_model",
        str(pipeline / "wm-pretrained"),
        "--model.tokenizer",
        str(pipeline / "tok") + "-pretrained",
    ]
    _fit(run_agent_cli, "agent", pipeline / "tokens", tmp_path / "agent", *models)
    iris_wm(
        [
            "push-to-hub",
            "--checkpoint",
            str(tmp_path / "agent" / "checkpoints" / "last.ckpt"),
            "--out",
            str(tmp_path / "agent-pretrained"),
        ]
    )
    cli = _fit(
        run_agent_cli,
        "agent",
        pipeline / "tokens",
        tmp_path / "more",
        "--model.from_pretrained",
        str(tmp_path / "agent-pretrained"),
        "--model.learning_rate",
        "0",
    )
    start = load_model(tmp_path / "agent-pretrained", "actor_critic").state_dict()
    for name, tensor in cli.model.actor_critic.state_dict().items():
        assert torch.equal(tensor, start[name]), name
    assert cli.model.hparams.world_model == str(tmp_path / "agent-pretrained" / "world_model")


def test_a_damaged_checkpoint_path_is_refused_before_it_is_read(pipeline, tmp_path):
    whole = (pipeline / "tok" / "checkpoints" / "last.ckpt").read_bytes()
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match="is damaged"):
        _validate(run_tokenizer_cli, "tokenizer", pipeline / "episodes", tmp_path / "v", "--ckpt_path", str(cut))
    flipped = tmp_path / "flipped.ckpt"  # whole length, one byte of the weights changed
    middle = len(whole) // 2
    flipped.write_bytes(whole[:middle] + bytes([whole[middle] ^ 0xFF]) + whole[middle + 1 :])
    with pytest.raises(ValueError, match="fails its CRC check"):
        _validate(run_tokenizer_cli, "tokenizer", pipeline / "episodes", tmp_path / "v", "--ckpt_path", str(flipped))
    with pytest.raises(PretrainedError, match="cannot be read as a checkpoint"):
        load_model(cut, "tokenizer")


def test_push_a_checkpoint_and_use_it_by_repository_id(pipeline, tmp_path, local_hub):
    iris_wm(
        [
            "push-to-hub",
            "--checkpoint",
            str(pipeline / "tok" / "checkpoints" / "last.ckpt"),
            "--out",
            str(tmp_path / "export"),
            "--repo_id",
            "someone/iris-tokenizer",
        ]
    )
    assert {"config.json", "model.safetensors", "README.md"} <= set(local_hub.repos["someone/iris-tokenizer"])
    _predict(pipeline, tmp_path / "tokens", "--model.from_pretrained", "someone/iris-tokenizer")
    ours, theirs = TokenStore.open(tmp_path / "tokens"), TokenStore.open(pipeline / "tokens")
    rows = np.arange(theirs.num_steps)
    np.testing.assert_array_equal(ours.observations(rows), theirs.observations(rows))
    assert ours.manifest["settings"]["tokenizer_checkpoint"] == "someone/iris-tokenizer"
