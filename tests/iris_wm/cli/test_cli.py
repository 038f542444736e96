"""The command line: help, every YAML config, and the stage-1 pipeline end to end on the debug config."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.cli import refused
from iris_wm.cli.main import main as iris_wm
from iris_wm.data.store import EpisodeStore, TokenStore
from iris_wm.train.stages import run_agent_cli, run_tokenizer_cli, run_world_model_cli, stage_args
from sequence_model.module import WorldModelModule
from tokenizer.module import TokenizerModule

REPO = Path(__file__).resolve().parents[3]
TOKENIZER_CONFIGS = sorted((REPO / "configs" / "tokenizer").glob("*.yaml"))
WORLD_MODEL_CONFIGS = sorted((REPO / "configs" / "world_model").glob("*.yaml"))


def test_help_lists_every_command(capsys):
    iris_wm(["--help"])
    text = capsys.readouterr().out
    for command in (
        "collect",
        "games",
        "tokenizer",
        "world-model",
        "imagine",
        "agent",
        "evaluate",
        "aggregate",
        "run",
        "scaling",
    ):
        assert f"  {command}" in text


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "iris_wm.cli", "--help"], capture_output=True, text=True, check=True)
    assert "tokenizer" in out.stdout


def test_unknown_command_is_explained(capsys):
    with pytest.raises(SystemExit):
        iris_wm(["tokeniser"])
    assert "unknown command 'tokeniser'" in capsys.readouterr().err


@pytest.mark.parametrize("verb", ["fit", "validate", "predict"])
def test_tokenizer_verbs_have_help(verb, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_tokenizer_cli([verb, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--model.config.quantizer.kind" in text and "--data.root" in text
    assert "Adam learning rate" in text  # option help comes from the docstrings


@pytest.mark.parametrize(
    "run, verb", [(run_tokenizer_cli, "test"), (run_world_model_cli, "predict"), (run_agent_cli, "validate")]
)
def test_verbs_a_stage_does_not_have_are_refused(run, verb, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run([verb, "--help"])
    assert exit_info.value.code != 0
    assert verb in capsys.readouterr().err


AGENT_CONFIGS = sorted((REPO / "configs" / "agent").glob("*.yaml"))
CONFIGS = (
    [(run_tokenizer_cli, c) for c in TOKENIZER_CONFIGS]
    + [(run_world_model_cli, c) for c in WORLD_MODEL_CONFIGS]
    + [(run_agent_cli, c) for c in AGENT_CONFIGS]
)


@pytest.mark.parametrize("run, config", CONFIGS, ids=lambda x: getattr(x, "name", ""))
def test_every_yaml_config_parses(run, config, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code == 0
    assert "model:" in capsys.readouterr().out


def test_unknown_config_key_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_tokenizer_cli(
            ["fit", "--config", str(REPO / "configs/tokenizer/debug.yaml"), "--model.config.chanels", "8"]
        )
    assert exit_info.value.code != 0
    assert "chanels" in capsys.readouterr().err


@pytest.mark.parametrize(
    "option, value",
    [("--model.learning_rate", "fast"), ("--model.config.channel_mult", "4"), ("--model.config.quantizer.kind", "lfq")],
)
def test_a_wrong_type_is_refused_by_name(option, value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_tokenizer_cli(["fit", "--config", str(REPO / "configs/tokenizer/debug.yaml"), option, value])
    assert exit_info.value.code != 0
    assert option.removeprefix("--").split(".")[-1] in capsys.readouterr().err


def test_collect_command_validates_its_options(capsys):
    with pytest.raises(SystemExit):
        iris_wm(["collect", "--out", "x", "--steps", "ten"])
    assert "steps" in capsys.readouterr().err


def _debug_run(run, verb, stage, data, out, *extra):
    return run(stage_args(verb, stage, "debug", data, out, *extra))


def _debug_agent(pipeline, out, *extra):
    return _debug_run(run_agent_cli, "fit", "agent", pipeline / "tokens", out / "agent", *extra)


def test_collect_fit_predict_gives_an_aligned_token_store(pipeline):
    """The shared pipeline (tests/helpers/pipeline.py) is the CLI's stage 1 and 2, end to end."""
    episodes = EpisodeStore.open(pipeline / "episodes")
    assert episodes.num_steps == 300 and episodes.num_episodes >= 8  # 40-step cap: at least 8 episodes
    assert len(episodes.manifest["shards"]) >= 3, "appended every 100 steps"
    assert episodes.manifest["settings"]["env"]["game"] == "ALE/Breakout-v5"

    checkpoint = pipeline / "tok" / "checkpoints" / "last.ckpt"
    assert checkpoint.exists()
    assert list((pipeline / "tok").rglob("reconstructions/*.png")), "validation writes a reconstruction grid"

    tokens = TokenStore.open(pipeline / "tokens")
    assert tokens.num_steps == episodes.num_steps
    np.testing.assert_array_equal(tokens.columns.action, episodes.columns.action)
    np.testing.assert_array_equal(tokens.columns.terminated, episodes.columns.terminated)
    np.testing.assert_array_equal(tokens.episode_lengths, episodes.episode_lengths)
    settings = tokens.manifest["settings"]
    assert settings["tokenizer_checkpoint"] == str(checkpoint.resolve())
    assert settings["tokens_per_frame"] == 256 and settings["vocab_size"] == 32

    module = TokenizerModule.load_from_checkpoint(checkpoint, weights_only=True).eval()
    rows = np.arange(0, episodes.num_steps, 7)
    expected = module.tokenizer.encode(torch.from_numpy(episodes.observations(rows)))
    np.testing.assert_array_equal(tokens.observations(rows), expected.numpy())

    # Stage 2 on the token store: sizes are read from its manifest, not typed.
    world_model = WorldModelModule.load_from_checkpoint(
        pipeline / "wm" / "checkpoints" / "last.ckpt", weights_only=True
    )
    cfg = world_model.config
    assert (cfg.vocab_size, cfg.tokens_per_frame, cfg.num_actions) == (32, 256, episodes.num_actions)


SHORT_IMAGINATION = ["--burn_in", "2", "--horizon", "3", "--num_windows", "4", "--pictures", "2"]


def _imagine_sources(pipeline, world_model, tokenizer) -> list[str]:
    stores = {"episodes": pipeline / "episodes", "tokens": pipeline / "tokens"}
    given = {"world_model": world_model, "tokenizer": tokenizer, **stores}
    return [part for name, path in given.items() for part in (f"--{name}", str(path))]


def test_imagine_agent_evaluate_and_export_on_the_pipeline(pipeline, tmp_path, capsys):
    episodes = EpisodeStore.open(pipeline / "episodes")
    checkpoint = pipeline / "tok" / "checkpoints" / "last.ckpt"
    # Imagination from the two checkpoints: strips, GIFs and per-horizon errors of held-out episodes.
    sources = _imagine_sources(pipeline, pipeline / "wm" / "checkpoints" / "last.ckpt", checkpoint)
    iris_wm(["imagine", *sources, "--out", str(tmp_path / "imagine"), *SHORT_IMAGINATION])
    metrics = json.loads((tmp_path / "imagine" / "metrics.json").read_text())
    assert [row["horizon"] for row in metrics["per_horizon"]] == [1, 2, 3]
    assert all(0 <= row["token_accuracy"] <= 1 and row["frame_psnr"] > 0 for row in metrics["per_horizon"])
    assert all(
        row["token_accuracy_ci"][0] <= row["token_accuracy"] <= row["token_accuracy_ci"][1]
        for row in metrics["per_horizon"]
    )
    assert metrics["windows"] == 4 and len(list((tmp_path / "imagine").glob("*.gif"))) == 2
    refused(
        capsys,
        ["imagine", *sources, "--out", str(tmp_path / "imagine2"), "--burn_in", "3", "--horizon", "40"],
        "No validation episode has the 43 steps",
    )

    # Stage 3: the actor-critic in imagination, then the real game with it and with the random policy.
    agent = _debug_agent(
        pipeline,
        tmp_path,
        "--model.world_model",
        str(pipeline / "wm" / "checkpoints" / "last.ckpt"),
        "--model.tokenizer",
        str(checkpoint),
    )
    assert agent.model.config.num_actions == episodes.num_actions and agent.model.config.tokens_per_frame == 256
    agent_checkpoint = tmp_path / "agent" / "checkpoints" / "last.ckpt"
    for name, policy in (("agent", ["--agent", str(agent_checkpoint)]), ("random", [])):
        iris_wm(
            [
                "evaluate",
                "--out",
                str(tmp_path / f"{name}.json"),
                *policy,
                "--episodes",
                "3",
                "--num_envs",
                "2",
                "--env.max_episode_steps",
                "30",
            ]
        )
        result = json.loads((tmp_path / f"{name}.json").read_text())
        assert len(result["returns"]) == 3 and all(n <= 30 for n in result["lengths"])
        assert result["human_normalized"] == pytest.approx((result["mean"] - 1.7) / (30.5 - 1.7))
    # The agent as a pretrained folder (safetensors + card): evaluating it plays exactly the same games.
    (tmp_path / "figures.json").write_text(json.dumps({"world model: held-out bits per frame": 6.5}))
    iris_wm(
        [
            "push-to-hub",
            "--checkpoint",
            str(agent_checkpoint),
            "--out",
            str(tmp_path / "pretrained"),
            "--results",
            str(tmp_path / "agent.json"),
            str(tmp_path / "random.json"),
            "--command",
            "make demo",
            "--metrics",
            str(tmp_path / "figures.json"),
        ]
    )
    card = (tmp_path / "pretrained" / "README.md").read_text()
    assert "library_name: iris-wm" in card and "agent: mean return (3 episodes)" in card
    assert "| world model: held-out bits per frame | 6.5 |" in card and "training_config:" in card
    inputs = json.loads((tmp_path / "pretrained" / "agent.json").read_text())["provenance"]["inputs"]
    assert inputs["data"]["store"] == str((pipeline / "tokens").resolve())
    assert len(inputs["data"]["manifest_sha256"]) == 64
    iris_wm(
        [
            "evaluate",
            "--out",
            str(tmp_path / "pretrained.json"),
            "--agent",
            str(tmp_path / "pretrained"),
            "--episodes",
            "3",
            "--num_envs",
            "2",
            "--env.max_episode_steps",
            "30",
        ]
    )
    again = json.loads((tmp_path / "pretrained.json").read_text())
    assert again["returns"] == json.loads((tmp_path / "agent.json").read_text())["returns"]
    pretrained = _imagine_sources(
        pipeline, tmp_path / "pretrained" / "world_model", tmp_path / "pretrained" / "tokenizer"
    )
    iris_wm(["imagine", *pretrained, "--out", str(tmp_path / "imagine-pretrained"), *SHORT_IMAGINATION])
    assert (
        json.loads((tmp_path / "imagine-pretrained" / "metrics.json").read_text())["per_horizon"]
        == metrics["per_horizon"]
    )
    refused(
        capsys,
        ["evaluate", "--out", str(tmp_path / "pong.json"), "--agent", str(agent_checkpoint), "--env.game", "Pong"],
        r"actor critic .* and the game \(6 actions\) .*actions differ.*not ALE/Pong",
    )
    with pytest.raises(ValueError, match="holds frames, but the world model trains on tokens"):
        _debug_agent(
            pipeline,
            tmp_path,
            "--model.world_model",
            str(pipeline / "wm" / "checkpoints" / "last.ckpt"),
            "--model.tokenizer",
            str(checkpoint),
            "--data.root",
            str(pipeline / "episodes"),
        )

    with pytest.raises(ValueError, match="holds frames, but the world model trains on tokens"):
        run_world_model_cli(
            ["fit", "--config", str(REPO / "configs/world_model/debug.yaml"), "--data.root", str(pipeline / "episodes")]
        )

    with pytest.raises(FileExistsError, match="already exists"):
        _debug_run(
            run_tokenizer_cli,
            "predict",
            "tokenizer",
            pipeline / "episodes",
            tmp_path / "tok",
            "--ckpt_path",
            str(checkpoint),
            "--token_writer.output",
            str(pipeline / "tokens"),
        )


def test_collect_resumes_to_its_target_without_duplicating(tmp_path, capsys):
    out = str(tmp_path / "episodes")
    iris_wm(["collect", "--out", out, "--steps", "120", "--env.max_episode_steps", "50"])
    first = EpisodeStore.open(out)
    iris_wm(["collect", "--out", out, "--steps", "120", "--env.max_episode_steps", "50"])
    assert EpisodeStore.open(out).num_steps == 120, "the target is reached already: nothing is added"
    iris_wm(["collect", "--out", out, "--steps", "200", "--env.max_episode_steps", "50"])
    again = EpisodeStore.open(out)
    assert again.num_steps == 200
    np.testing.assert_array_equal(again.observations(np.arange(120)), first.observations(np.arange(120)))
    refused(capsys, ["collect", "--out", out, "--steps", "300", "--env.game", "Pong"], "other settings")
