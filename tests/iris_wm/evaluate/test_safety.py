"""The safety check: Wilson intervals, the unsafe predicates (and their errors), batched imagined rollouts equal to
one start at a time, the expected-end estimate (exact where the end's chance is known, the sampled rate's mean
otherwise), the unknown gate, and `iris-wm safety-check` end to end on a tiny agent (report, Markdown,
GIFs)."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from helpers.tiny import tokenizer_config, world_model_config
from helpers.tokens import synthetic_token_store
from iris_wm.agent.actor_critic import ActorCritic, ActorCriticConfig
from iris_wm.agent.bundle import Agent
from iris_wm.cli.main import main
from iris_wm.envs.imagination import ImaginationConfig
from iris_wm.evaluate.safety import Rollouts, SafetyConfig, imagined_rollouts, summarize_starts, wilson
from iris_wm.hub import save_agent
from iris_wm.runtime.errors import ConfigError
from sequence_model.world_model import WorldModel
from tokenizer.model import Tokenizer

V, K, A = 16, 4, 3


def unsafe_when_first_token_is_zero(frames, tokens, state):  # a user predicate, by import path
    return tokens[:, 0] == 0


def test_wilson_intervals():
    assert wilson(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)


def test_unsafe_predicates_are_checked_before_anything_runs():
    with pytest.raises(ConfigError, match="reward_below:X with X a number"):
        SafetyConfig(unsafe="reward_below:low")
    with pytest.raises(ConfigError, match="cannot import nothing"):
        SafetyConfig(unsafe="iris_wm.evaluate.safety:nothing")
    with pytest.raises(ConfigError, match="not 'end', 'reward_below:X' or an import path"):
        SafetyConfig(unsafe="lives")


def _agent():
    torch.manual_seed(0)
    world_model = WorldModel(world_model_config(V, K, A, 8)).eval()
    with torch.no_grad():
        world_model.termination_head[-1].bias.copy_(torch.tensor([0.0, -0.4]))
    config = ActorCriticConfig(num_actions=A, observation="tokens", vocab_size=V, tokens_per_frame=K, encoder_dim=16)
    return world_model, ActorCritic(ActorCriticConfig(**{**config.__dict__, "lstm_dim": 8})).eval()


@pytest.mark.parametrize("unsafe", ["end", "reward_below:0.5", f"{__name__}:unsafe_when_first_token_is_zero"])
def test_batched_rollouts_equal_one_start_at_a_time(unsafe):
    world_model, ac = _agent()
    tokenizer = Tokenizer(tokenizer_config(V)).eval()
    greedy = ImaginationConfig(temperature=0.0, precision="fp32")
    config = SafetyConfig(horizon=5, rollouts=2, unsafe=unsafe, burn_in=3, temperature=0.0, imagination=greedy)
    g = torch.Generator().manual_seed(1)
    tokens, actions = torch.randint(0, V, (4, 3, K), generator=g), torch.randint(0, A, (4, 2), generator=g)
    together = imagined_rollouts(ac, world_model, tokenizer, tokens, actions, config)
    for s in range(4):
        alone = imagined_rollouts(ac, world_model, tokenizer, tokens[s : s + 1], actions[s : s + 1], config)
        assert np.array_equal(alone.unsafe[0], together.unsafe[s])
        assert np.array_equal(alone.first_unsafe[0], together.first_unsafe[s])
        assert np.allclose(alone.probability[0], together.probability[s], atol=1e-6)
        assert torch.equal(alone.tokens[0], together.tokens[s])
    assert together.unsafe.shape == (4, 2) and np.isnan(together.disagreement).all()
    assert ((together.first_unsafe >= 0) == together.unsafe).all()
    # Imagined in parts of at most 5 rollouts (two starts): the same rollouts.
    parts = imagined_rollouts(ac, world_model, tokenizer, tokens, actions, dataclasses.replace(config, batch=5))
    for field in ("unsafe", "first_unsafe"):
        assert np.array_equal(getattr(parts, field), getattr(together, field))
    assert np.array_equal(parts.probability, together.probability)
    if unsafe != "end":  # the expected-end estimate is for the end predicate; the others score the indicator
        assert np.array_equal(together.probability, together.unsafe.astype(float))
    assert torch.equal(parts.tokens, together.tokens) and np.isnan(parts.disagreement).all()


def _sampled_and_expected(world_model, ac, rollouts: int, expected: bool = True) -> Rollouts:
    tokenizer = Tokenizer(tokenizer_config(V)).eval()
    imagination = ImaginationConfig.iris(precision="fp32")  # every outcome sampled
    config = SafetyConfig(horizon=6, rollouts=rollouts, burn_in=3, imagination=imagination, expected_ends=expected)
    g = torch.Generator().manual_seed(2)
    tokens, actions = torch.randint(0, V, (3, 3, K), generator=g), torch.randint(0, A, (3, 2), generator=g)
    return imagined_rollouts(ac, world_model, tokenizer, tokens, actions, config, generator=g)


def test_expected_ends_are_exact_where_the_chance_of_an_end_is_known():
    world_model, ac = _agent()
    p = 0.1
    with torch.no_grad():  # the end head ignores its input: every step ends with chance p
        world_model.termination_head[-1].weight.zero_()
        world_model.termination_head[-1].bias.copy_(torch.tensor([0.0, float(np.log(p / (1 - p)))]))
    rollouts = _sampled_and_expected(world_model, ac, 1000)
    assert np.allclose(rollouts.probability, 1 - (1 - p) ** 6, atol=1e-5)
    # The sampled ends of the same rollouts: a binomial draw with that chance.
    rate, n = rollouts.unsafe.mean(), rollouts.unsafe.size
    assert abs(rate - (1 - (1 - p) ** 6)) < 4 * np.sqrt(0.47 * 0.53 / n)
    sampled = _sampled_and_expected(world_model, ac, 1000, expected=False)
    assert np.array_equal(sampled.probability, sampled.unsafe.astype(float))


def test_expected_ends_estimate_the_sampled_rate_with_less_spread():
    world_model, ac = _agent()  # the end's chance depends on the imagined tokens and the policy's actions
    with torch.no_grad():  # about one chance in two of an end within the horizon
        world_model.termination_head[-1].bias.copy_(torch.tensor([0.0, -2.2]))
    rollouts = _sampled_and_expected(world_model, ac, 600)
    for s in range(3):
        sampled, expected = rollouts.unsafe[s].astype(float), rollouts.probability[s]
        assert 0 < sampled.mean() < 1 and ((0 <= expected) & (expected <= 1)).all()
        assert abs(sampled.mean() - expected.mean()) < 4 * sampled.std() / np.sqrt(len(sampled))
        assert expected.var() < sampled.var()
    report = summarize_starts(rollouts, None)
    assert [row["unsafe_probability"] for row in report["starts"]] == pytest.approx(rollouts.probability.mean(1))
    assert [row["unsafe_rollouts"] for row in report["starts"]] == rollouts.unsafe.sum(1).tolist()


def test_the_unknown_gate_withholds_starts_above_the_held_out_quantile():
    unsafe = np.array([[True, False], [True, True], [False, False]])
    disagreement = np.array([[0.1, 0.2], [0.9, 0.8], [0.1, 0.1]])
    rollouts = Rollouts(unsafe, np.where(unsafe, 2, -1), disagreement, torch.zeros(3, 2, 1, 1))
    report = summarize_starts(rollouts, threshold=0.5)
    assert [s["unknown"] for s in report["starts"]] == [False, True, False]
    assert report["starts"][1]["unsafe_probability"] is None and report["starts"][1]["estimate_if_known"] == 1.0
    assert report["overall"]["rate"] == pytest.approx(0.5) and report["overall_known"]["rate"] == pytest.approx(0.25)
    assert report["unknown_starts"] == 1


def test_safety_check_command_writes_the_report(tmp_path, capsys):
    world_model, ac = _agent()
    tokenizer = Tokenizer(tokenizer_config(V)).eval()
    folder = save_agent(tmp_path / "agent", Agent(tokenizer, world_model, ac))
    store = synthetic_token_store(tmp_path / "tokens", episodes=6, length=20, vocab_size=V, num_actions=A)
    out = tmp_path / "safety"
    argv = ["safety-check", "--agent", str(folder), "--tokens", str(store.root), "--out", str(out), "--starts", "8",
            "--check.horizon", "6", "--check.rollouts", "4", "--gifs", "2"]  # fmt: skip
    main(argv)
    assert "unsafe (end) within 6 steps" in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert len(report["starts"]) == 8 and report["unknown_threshold"] is None
    assert all(0 <= s["unsafe_probability"] <= 1 for s in report["starts"])
    assert (out / "report.md").read_text().startswith("# Safety check") and len(list(out.glob("*.gif"))) == 2
