"""A world model of continuous actions learns to use them: on the built-in point mass, whose frames draw its position,
held-out cross-entropy with the true actions is at least 5% below that with actions permuted across windows, and the
paired interval excludes 0 (issue 19's acceptance test)."""

import numpy as np
import pytest
import torch

from helpers.control import SIZE, VOCAB, point_mass_tokens
from iris_wm.data.windows import WindowDataset, split_episodes
from iris_wm.envs.point_mass import PointMass
from iris_wm.evaluate.conditioning import action_conditioning
from sequence_model.gpt import GPTConfig
from sequence_model.world_model import WorldModel, WorldModelConfig


def test_the_point_mass_draws_its_position_and_reports_its_state():
    env = PointMass(size=SIZE, dot=1)
    frame, info = env.reset(seed=0)
    x, y = info["state"][:2]
    assert frame[0, min(int(y * SIZE), SIZE - 1), min(int(x * SIZE), SIZE - 1)] == 255
    frame, _, terminated, _, info = env.step(np.array([1.0, 0.0]))
    assert info["state"][2] > 0 and info["state"][0] > x and not terminated  # pushed right, it moves right
    with pytest.raises(ValueError, match="finite force"):
        env.step(np.array([np.nan, 0.0]))


def test_a_world_model_of_continuous_actions_learns_to_use_them(tmp_path):
    tokens = point_mass_tokens(tmp_path, episodes=240, length=16)
    torch.manual_seed(0)
    model = WorldModel(
        WorldModelConfig(
            vocab_size=VOCAB,
            tokens_per_frame=4,
            action_dim=2,
            context_steps=4,
            prediction="parallel",
            gpt=GPTConfig(num_layers=2, num_heads=2, embed_dim=32),
        )
    )
    train, held_out = split_episodes(tokens, 0.2, 0)
    windows = WindowDataset(tokens, train, 4, complete=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    for _ in range(400):
        batch = windows.__getitems__(rng.integers(0, len(windows), 32))
        loss = model.loss(batch.observations, batch.actions, batch.rewards, batch.terminated, batch.mask).total
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    figures = action_conditioning(model, tokens, held_out, windows=256, seed=0)
    assert figures["windows"] >= 128
    assert figures["reduction"] >= 0.05, figures
    assert figures["difference_ci"][0] > 0, figures
