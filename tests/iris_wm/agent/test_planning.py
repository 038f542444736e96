"""The planner finds the one rewarded action sequence of a stub world model (100 trials at once, as 100
environments), for discrete actions (CEM) and box actions (MPPI); the prior's sequences are scored; a plan starts
from the last one shifted; imagined returns equal a step-by-step imagination of each sequence."""

import pytest
import torch

from iris_wm.agent.planning import ImaginedReturns, Planner, PlannerConfig
from iris_wm.envs.imagination import ImaginationConfig, ImaginationEnv
from sequence_model.gpt import GPTConfig
from sequence_model.world_model import WorldModel, WorldModelConfig

TRIALS, H = 100, 3


def test_cem_finds_the_one_rewarded_sequence_in_at_least_99_of_100_trials():
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 4, (TRIALS, H), generator=g)  # Breakout's 4 actions, 64 sequences

    def score(candidates):  # (E, N, H) -> 1 for the target sequence, 0 for every other
        return (candidates == target[:, None]).all(-1).float()

    planner = Planner(PlannerConfig(), num_actions=4)
    found = planner.plan(score, TRIALS, generator=g) == target[:, 0]
    assert int(found.sum()) >= 99
    assert torch.allclose(planner.previous.sum(-1), torch.ones(TRIALS, H))  # distributions stay distributions
    # With 8 draws of 64 sequences the target is usually missed, unless the prior proposes it.
    few = PlannerConfig(samples=8, elites=4, prior_samples=1, iterations=1)
    hit = Planner(few, num_actions=4).plan(score, TRIALS, prior=target[:, None], generator=g) == target[:, 0]
    assert bool(hit.all())


def test_mppi_finds_the_rewarded_box_sequence_in_at_least_99_of_100_trials():
    g = torch.Generator().manual_seed(1)
    low, high = torch.tensor([-2.0, 0.0]), torch.tensor([2.0, 1.0])
    target = low + torch.rand(TRIALS, H, 2, generator=g) * (high - low)
    scale = (high - low) / 2

    def score(candidates):  # a narrow bump around the target sequence (in the box's units)
        return torch.exp(-(((candidates - target[:, None]) / scale) ** 2).sum((-1, -2)) / 0.05)

    planner = Planner(PlannerConfig(), low=low, high=high)
    first = planner.plan(score, TRIALS, generator=g)
    assert first.shape == (TRIALS, 2) and bool(((first >= low) & (first <= high)).all())
    assert int((((first - target[:, 0]) / scale).abs() < 0.1).all(-1).sum()) >= 99
    # The next plan starts from this one shifted by a step: its first step's mean is this plan's second.
    start = planner._start(TRIALS, "cpu")
    assert torch.equal(start[:, 0], planner.previous[:, 1]) and torch.equal(start[:, -1], torch.zeros(TRIALS, 2))
    planner.forget(torch.arange(TRIALS) < 50)
    assert bool((planner.previous[:50] == 0).all()) and not bool((planner.previous[50:] == 0).all())


def test_planner_settings_are_checked():
    with pytest.raises(ValueError, match="elites .* must not exceed"):
        PlannerConfig(samples=4, prior_samples=0, elites=8)
    with pytest.raises(ValueError, match="num_actions .* or low and high"):
        Planner(PlannerConfig())


def test_imagined_returns_equal_a_step_by_step_imagination_of_each_sequence():
    torch.manual_seed(0)
    model = WorldModel(
        WorldModelConfig(
            vocab_size=11,
            tokens_per_frame=3,
            num_actions=4,
            context_steps=4,
            gpt=GPTConfig(num_layers=2, num_heads=2, embed_dim=16),
            prediction="parallel",
        )
    ).eval()
    g = torch.Generator().manual_seed(2)
    tokens, past = torch.randint(0, 11, (2, 2, 3), generator=g), torch.randint(0, 4, (2, 1), generator=g)
    sequences = torch.randint(0, 4, (2, 5, 4), generator=g)  # 2 environments, 5 sequences of 4 steps
    scorer = ImaginedReturns(model, gamma=0.9, config=ImaginationConfig(temperature=0.0, precision="fp32"))
    scorer.set_context(tokens, past)
    values = scorer(sequences)
    env = ImaginationEnv(model, config=ImaginationConfig(temperature=0.0, precision="fp32"))
    for e in range(2):
        for n in range(5):
            env.reset(tokens[e : e + 1], past[e : e + 1])
            total, alive = 0.0, 1.0
            for t in range(4):
                step = env.step(sequences[e, n, t : t + 1])
                total += 0.9**t * alive * float(step.reward)
                alive *= 1.0 - float(step.terminated)
            assert values[e, n].item() == pytest.approx(total, abs=1e-5)
