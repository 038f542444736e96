"""The world-model stage trains on a store of continuous actions and proprioception unchanged: the sizes and the
state's range come from the store, the checkpoint holds them, validation reports the state's cross-entropy."""

import numpy as np
import torch

from helpers.control import point_mass_store, point_mass_tokens, state_only_tokens
from iris_wm.data.datamodule import state_range
from iris_wm.data.windows import split_episodes
from iris_wm.envs.imagination import ImaginationConfig, ImaginationEnv
from iris_wm.evaluate.conditioning import action_conditioning
from iris_wm.hub import load_model
from iris_wm.train.stages import run_agent_cli, run_world_model_cli, stage_args


def first_imagined_step(model, tokens):
    """Imagine one step (action 0) after the store's first three steps."""
    rows = np.arange(3)
    env = ImaginationEnv(model, config=ImaginationConfig(precision="fp32"))
    env.reset(
        torch.from_numpy(tokens.observations(rows))[None],
        torch.from_numpy(tokens.columns.action[rows[:-1]])[None],
        torch.from_numpy(tokens.columns.state[rows])[None],
    )
    return env.step(torch.zeros(1, 2))


def test_the_world_model_stage_fits_continuous_actions_and_a_state(tmp_path):
    tokens = point_mass_tokens(tmp_path, episodes=30, length=12)
    run_world_model_cli(stage_args("fit", "world_model", "debug", tmp_path / "tokens", tmp_path / "wm"))
    checkpoint = tmp_path / "wm" / "checkpoints" / "last.ckpt"
    model = load_model(checkpoint, "world_model")
    config = model.config
    assert config.num_actions is None and config.action_dim == 2 and config.state_dim == 4
    train, _ = split_episodes(tokens, 0.2, 0)
    assert (config.state_low, config.state_high) == state_range(tokens, train)
    cli = run_world_model_cli(
        stage_args(
            "validate", "world_model", "debug", tmp_path / "tokens", tmp_path / "wm", "--ckpt_path", str(checkpoint)
        )
    )
    assert cli.trainer.callback_metrics["val/state_ce"] > 0
    step = first_imagined_step(model, tokens)
    assert step.tokens.shape == (1, 4) and step.state.shape == (1, 4)
    _, held_out = split_episodes(tokens, 0.2, 0)
    figures = action_conditioning(model, tokens, held_out, windows=8)  # the state's tokens are scored too
    assert figures["windows"] == 8 and np.isfinite(figures["ce_true_actions"])


def test_the_world_model_stage_fits_proprioception_alone(tmp_path):
    """A store without frames (0 tokens a step) trains through the same stage: the world model models the state."""
    store = point_mass_store(tmp_path / "episodes", episodes=30, length=12, seed=0)
    tokens = state_only_tokens(store, tmp_path / "tokens")
    run_world_model_cli(stage_args("fit", "world_model", "debug", tmp_path / "tokens", tmp_path / "wm"))
    model = load_model(tmp_path / "wm" / "checkpoints" / "last.ckpt", "world_model")
    assert model.config.tokens_per_frame == 0 and model.config.state_dim == 4
    step = first_imagined_step(model, tokens)
    assert step.tokens.shape == (1, 0) and step.state.shape == (1, 4) and torch.isfinite(step.state).all()


def test_the_agent_stage_trains_a_box_policy_that_reads_the_state_in_imagination(tmp_path):
    point_mass_tokens(tmp_path, episodes=30, length=12)
    tokens, wm = tmp_path / "tokens", tmp_path / "wm"
    run_world_model_cli(stage_args("fit", "world_model", "debug", tokens, wm))
    checkpoint = wm / "checkpoints" / "last.ckpt"
    extra = ("--model.world_model", str(checkpoint), "--model.tokenizer", "null")
    run_agent_cli(stage_args("fit", "agent", "debug", tokens, tmp_path / "agent", *extra))
    network = load_model(tmp_path / "agent" / "checkpoints" / "last.ckpt", "actor_critic")
    config = network.config
    assert config.num_actions is None and config.action_dim == 2 and config.state_dim == 4
    assert (config.action_low, config.action_high) == ([-1.0, -1.0], [1.0, 1.0])
    out = network(torch.zeros(3, 4, dtype=torch.long), network.initial_state(3), torch.zeros(3, 4))
    action = network.policy(out.logits).to_env(network.policy(out.logits).sample())
    assert action.shape == (3, 2) and (action.abs() <= 1).all()
