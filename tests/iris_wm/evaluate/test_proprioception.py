"""Open-loop state prediction: the constant-velocity baseline computed exactly, and a world model of proprioception
that beats it on the point mass (issue 19's acceptance: at horizon 10, 30% below)."""

import numpy as np
import pytest
import torch

from helpers.control import VOCAB, point_mass_tokens
from iris_wm.data.episode import Episode
from iris_wm.data.spaces import ActionSpace, StateSpec
from iris_wm.data.store import TokenStore
from iris_wm.data.windows import WindowDataset, split_episodes
from iris_wm.evaluate.proprioception import state_rollouts
from sequence_model.gpt import GPTConfig
from sequence_model.world_model import WorldModel, WorldModelConfig


def config(**sizes) -> WorldModelConfig:
    return WorldModelConfig(
        tokens_per_frame=4,
        action_dim=2,
        context_steps=8,
        prediction="parallel",
        state_bins=64,
        gpt=GPTConfig(num_layers=2, num_heads=2, embed_dim=32),
        **sizes,
    )


def test_the_constant_velocity_baseline_is_exact_on_states_that_move_at_constant_velocity(tmp_path):
    store = TokenStore.create(
        tmp_path / "tokens",
        TokenStore.token_spec(4),
        ActionSpace.box([-1, -1], [1, 1]),
        {"vocab_size": 5},
        state=StateSpec(2),
    )
    length = 30
    ends = np.zeros(length, bool)
    ends[-1] = True
    t = np.arange(length, dtype=np.float32)
    episodes = [
        Episode(
            np.zeros((length, 4), np.int16),
            np.zeros((length, 2), np.float32),
            np.zeros(length, np.float32),
            ends,
            np.zeros(length, bool),
            np.stack([0.1 * t + e, -0.05 * t], 1).astype(np.float32),
        )
        for e in range(6)
    ]
    store.append(episodes)
    torch.manual_seed(0)
    model = WorldModel(config(vocab_size=5, state_dim=2, state_low=[-1.0, -2.0], state_high=[9.0, 1.0])).eval()
    figures = state_rollouts(model, store, burn_in=3, horizon=10, windows=16, val_fraction=0.5, horizons=(1, 10))
    for row in figures["per_horizon"]:
        assert row["constant_velocity_rmse"] == pytest.approx(0, abs=1e-5)
        assert row["rmse"] > 0  # an untrained model is wrong
    with pytest.raises(ValueError, match="at least 2"):
        state_rollouts(model, store, burn_in=1, horizon=3)


def test_a_world_model_of_proprioception_beats_constant_velocity_on_the_point_mass(tmp_path):
    tokens = point_mass_tokens(tmp_path, episodes=240, length=24)
    train, _ = split_episodes(tokens, 0.2, 0)
    from iris_wm.data.datamodule import state_range

    low, high = state_range(tokens, train)
    torch.manual_seed(0)
    model = WorldModel(config(vocab_size=VOCAB, state_dim=4, state_low=low, state_high=high))
    windows = WindowDataset(tokens, train, 8, complete=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    for _ in range(500):
        batch = windows.__getitems__(rng.integers(0, len(windows), 32))
        loss = model.loss(batch.observations, batch.actions, batch.rewards, batch.terminated, batch.mask, batch.states)
        optimizer.zero_grad()
        loss.total.backward()
        optimizer.step()
    figures = state_rollouts(model.eval(), tokens, burn_in=4, horizon=20, windows=128, val_fraction=0.2)
    at = {row["horizon"]: row for row in figures["per_horizon"]}
    print(figures)
    assert at[10]["reduction"] >= 0.3, at[10]
    assert at[10]["rmse_ci"][1] < at[10]["constant_velocity_rmse_ci"][0], at[10]
