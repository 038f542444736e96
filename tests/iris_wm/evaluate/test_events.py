"""Held-out reward and end predictions: each step scored once with its own context, thresholds never chosen on the
steps they decide, exact counts."""

import dataclasses

import numpy as np
import pytest
import torch

from helpers.control import VOCAB, point_mass_tokens
from helpers.tiny import world_model_config
from helpers.tokens import synthetic_token_store
from iris_wm.evaluate.events import (
    StepEvents,
    best_threshold,
    cross_fitted,
    event_figures,
    reward_sign_probabilities,
    step_events,
)
from sequence_model.world_model import WorldModel


@pytest.mark.parametrize("prediction", ["autoregressive", "parallel"])
def test_each_step_is_scored_as_a_naive_loop_over_its_own_context_would(tmp_path, prediction):
    store = synthetic_token_store(tmp_path / "tokens", episodes=3, length=9, tokens_per_frame=3, vocab_size=16)
    context = 4
    torch.manual_seed(0)
    config = dataclasses.replace(world_model_config(16, 3, 3, context), prediction=prediction)
    model = WorldModel(config).eval()
    episodes = np.array([2, 0])
    events = step_events(model, store, episodes, batch_size=5)
    columns = store.columns
    expected_rewards, expected_ends, expected_context = [], [], []
    for e in sorted(episodes):
        start, length = int(store.episode_starts[e]), int(store.episode_lengths[e])
        for t in range(start, start + length):
            rows = np.arange(max(start, t - context + 1), t + 1)  # exactly the steps the model may read
            tokens = torch.from_numpy(store.observations(rows)).long()[None]
            actions = torch.from_numpy(columns.action[rows].astype(np.int64))[None]
            with torch.no_grad():
                out = model(model.interleave(tokens, actions))
            expected_rewards.append(out.reward_logits[0, -1].softmax(-1))
            expected_ends.append(out.termination_logits[0, -1].softmax(-1)[1])
            expected_context.append(len(rows))
    torch.testing.assert_close(
        events.reward_probabilities, torch.stack(expected_rewards).double().numpy(), rtol=0, atol=1e-5
    )
    torch.testing.assert_close(events.end_probability, torch.stack(expected_ends).double().numpy(), rtol=0, atol=1e-5)
    assert events.context.tolist() == expected_context
    rows = np.concatenate([np.arange(store.episode_starts[e], store.episode_starts[e] + 9) for e in (0, 2)])
    assert events.ended.tolist() == columns.terminated[rows].tolist()
    assert events.reward_class.tolist() == (np.sign(columns.reward[rows]) + 1).tolist()
    assert events.episodes.tolist() == [0] * 9 + [2] * 9


def test_a_world_model_of_proprioception_scores_each_step_with_its_exact_state(tmp_path):
    store = point_mass_tokens(tmp_path / "tokens", episodes=3, length=7)
    torch.manual_seed(0)
    config = dataclasses.replace(
        world_model_config(VOCAB, 4, None, 4),
        action_dim=2,
        state_dim=4,
        state_low=[-2.0] * 4,
        state_high=[2.0] * 4,
        prediction="parallel",
    )
    model = WorldModel(config).eval()
    events = step_events(model, store, np.array([1]), batch_size=3)
    assert store.state is not None and len(events.end_probability) == 7
    columns, start = store.columns, int(store.episode_starts[1])
    for t in (start, start + 5):  # from the episode's start, and a full context of 4 steps ending at t
        rows = np.arange(max(start, t - 3), t + 1)
        states = torch.from_numpy(columns.state[rows])[None]
        actions = torch.from_numpy(columns.action[rows])[None]
        ids = model.interleave(
            model.observation_ids(torch.from_numpy(store.observations(rows)).long()[None], states), actions
        )
        with torch.no_grad():
            out = model(ids, actions=actions, values=model.state_codec.position_values(states))
        expected = float(out.termination_logits[0, -1].softmax(-1)[1])
        assert abs(events.end_probability[t - start] - expected) < 1e-5


def test_the_best_threshold_separates_what_can_be_separated_and_prefers_the_lowest_on_ties():
    probability = np.array([0.05, 0.1, 0.2, 0.31, 0.35, 0.9])
    truth = np.array([False, False, False, True, True, True])
    assert best_threshold(probability, truth) == pytest.approx(0.21)  # first candidate above 0.2 that keeps 0.31
    assert best_threshold(np.array([0.9, 0.9]), np.array([True, True])) == pytest.approx(0.01)


def test_cross_fitted_decisions_use_the_threshold_of_the_other_half():
    # Half A's positives sit at 0.3 (negatives 0.1); half B's at 0.7 (negatives 0.5). A threshold fitted on a half
    # separates it perfectly; applied to the other half it errs, and that is what cross-fitting must show.
    episodes = np.repeat(np.arange(8), 10)
    rng = np.random.default_rng(0)
    truth = rng.random(80) < 0.3
    truth[::10] = True
    order = np.random.default_rng(0).permutation(8)
    half_b = np.isin(episodes, order[1::2])
    probability = np.where(truth, 0.3, 0.1) + 0.4 * half_b
    decided, thresholds = cross_fitted(probability, truth, episodes, seed=0)
    # Chosen on B (for A): the lowest threshold that separates B, 0.51; chosen on A (for B): 0.11.
    assert thresholds == [pytest.approx(0.51), pytest.approx(0.11)]
    assert not decided[~half_b].any()  # A's probabilities never reach B's threshold
    assert decided[half_b].all()  # every step of B clears A's threshold


def test_event_figures_count_exactly_and_leave_out_absent_classes():
    events = StepEvents(
        reward_probabilities=np.array([[0.1, 0.2, 0.7], [0.0, 0.6, 0.4], [0.0, 0.9, 0.1], [0.0, 0.4, 0.6]]),
        end_probability=np.array([0.6, 0.2, 0.45, 0.1]),
        reward_class=np.array([2, 2, 1, 1]),
        ended=np.array([True, False, True, False]),
        episodes=np.array([0, 0, 1, 1]),
        context=np.array([1, 2, 1, 2]),
    )
    figures = event_figures(events, draws=50)
    # Positive rewards by argmax: steps 0 and 3 decided, step 0 right, step 1 missed: P 1/2, R 1/2.
    assert figures["reward/positive/argmax/precision"] == 0.5 and figures["reward/positive/argmax/recall"] == 0.5
    assert figures["reward/positive/argmax/f1"] == pytest.approx(0.5)
    assert figures["end/argmax/precision"] == 1.0 and figures["end/argmax/recall"] == 0.5
    assert figures["end/support"] == 2 and figures["end/majority_f1"] == 0.0
    assert figures["end/threshold"] == pytest.approx(0.21)  # the lowest threshold that takes both ends, not step 1
    assert "reward/negative/support" not in figures  # no negative reward among the steps
    low, high = figures["end/threshold/f1_ci"]
    assert 0 <= low <= figures["end/threshold/f1"] <= high <= 1


def test_reward_sign_probabilities_of_a_twohot_head_sum_the_bins_of_each_sign():
    torch.manual_seed(0)
    model = WorldModel(dataclasses.replace(world_model_config(16, 3, 3, 4), reward="twohot"))
    logits = torch.randn(5, len(model.reward_bins))
    masses = reward_sign_probabilities(model, logits)
    assert masses.shape == (5, 3)
    torch.testing.assert_close(masses.sum(-1), torch.ones(5))
    from sequence_model.rewards import symexp

    values = symexp(model.reward_bins)
    positive = logits.softmax(-1)[:, values >= 0.5].sum(-1)
    torch.testing.assert_close(masses[:, 2], positive)
