"""lambda-returns against their definition: a weighted mix of n-step returns, computed naively."""

import pytest
import torch

from iris_wm.agent.returns import lambda_returns


def _n_step(rewards, values, ends, gamma, t, n):
    """G_t^(n) = r_t + g r_{t+1} + ... + g^(n-1) r_{t+n-1} + g^n V_{t+n}, cut at the first end."""
    total, discount = 0.0, 1.0
    for k in range(n):
        total += discount * rewards[t + k]
        if ends[t + k]:
            return total
        discount *= gamma
    return total + discount * values[t + n]


def _naive(rewards, values, ends, gamma, lam):
    H = len(rewards)
    out = []
    for t in range(H):
        m = H - t  # the longest n-step return reaches the bootstrap value V_H
        mix = sum((1 - lam) * lam ** (n - 1) * _n_step(rewards, values, ends, gamma, t, n) for n in range(1, m))
        out.append(mix + lam ** (m - 1) * _n_step(rewards, values, ends, gamma, t, m))
    return out


@pytest.mark.parametrize("gamma,lam", [(0.995, 0.95), (0.9, 0.0), (1.0, 1.0), (0.5, 0.7)])
def test_lambda_returns_equal_the_mix_of_n_step_returns(gamma, lam):
    g = torch.Generator().manual_seed(0)
    B, H = 5, 9
    rewards = torch.randn(B, H, generator=g, dtype=torch.float64)
    values = torch.randn(B, H + 1, generator=g, dtype=torch.float64)
    ends = torch.rand(B, H, generator=g) < 0.2
    got = lambda_returns(rewards, values, ends, gamma, lam)
    for b in range(B):
        expected = _naive(rewards[b].tolist(), values[b].tolist(), ends[b].tolist(), gamma, lam)
        torch.testing.assert_close(got[b], torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=1e-12)


def test_special_cases():
    rewards = torch.tensor([[1.0, 2.0, 3.0]])
    values = torch.tensor([[10.0, 20.0, 30.0, 40.0]])
    never = torch.zeros(1, 3, dtype=torch.bool)
    # lambda = 0: one-step TD targets.
    torch.testing.assert_close(lambda_returns(rewards, values, never, 0.5, 0.0), torch.tensor([[11.0, 17.0, 23.0]]))
    # lambda = 1: the Monte Carlo return bootstrapped at the horizon.
    torch.testing.assert_close(
        lambda_returns(rewards, values, never, 0.5, 1.0), torch.tensor([[1 + 1 + 0.75 + 5.0, 2 + 1.5 + 10.0, 3 + 20.0]])
    )
    # An end after step 1: nothing after it counts.
    ends = torch.tensor([[False, True, False]])
    torch.testing.assert_close(lambda_returns(rewards, values, ends, 0.5, 1.0)[0, :2], torch.tensor([2.0, 2.0]))


def test_shapes_are_checked():
    with pytest.raises(ValueError, match=r"values of shape \(B, H \+ 1\)"):
        lambda_returns(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3), 0.99, 0.95)
    with pytest.raises(ValueError, match="gamma and lambda"):
        lambda_returns(torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2, 3), 1.5, 0.95)


def test_return_normalisation_divides_advantages_by_the_running_percentile_spread():
    from iris_wm.agent.objective import AgentObjective, agent_losses, alive_mask
    from iris_wm.agent.rollout import Rollout

    torch.manual_seed(0)
    B, H = 64, 5
    rewards = torch.randn(B, H) * 10
    ends = torch.zeros(B, H, dtype=torch.bool)
    ends[:8, 2] = True  # steps after an end do not count, in the spread either
    values = torch.randn(B, H + 1)
    log_probs = torch.randn(B, H, requires_grad=True)
    imagined = Rollout(
        [], [], torch.zeros(B, H, 2), values, torch.zeros(B, H), rewards, ends, log_probs, torch.zeros(B, H)
    )
    plain = AgentObjective(horizon=H, entropy_weight=0.0, value_weight=0.0)
    normalised = AgentObjective(horizon=H, entropy_weight=0.0, value_weight=0.0, return_scale_decay=0.9)
    returns = lambda_returns(rewards, values, ends, plain.gamma, plain.lambda_)
    alive = alive_mask(ends)
    low, high = torch.quantile(returns[alive], torch.tensor([0.05, 0.95]))
    scale = torch.tensor(-1.0)  # unset: the first batch sets it
    first = agent_losses(imagined, values, normalised, scale)
    torch.testing.assert_close(scale, high - low)
    assert float(scale) > 1
    torch.testing.assert_close(first.policy, agent_losses(imagined, values, plain).policy / (high - low))
    flat = Rollout(
        [], [], torch.zeros(B, H, 2), values * 0, torch.zeros(B, H), rewards * 0, ends, log_probs, torch.zeros(B, H)
    )
    agent_losses(flat, values * 0, normalised, scale)  # returns with no spread: the average moves by (1 - decay)
    torch.testing.assert_close(scale, 0.9 * (high - low))
    # Returns that spread less than 1 are left as they are (max(1, S)).
    quiet = Rollout(
        [], [], torch.zeros(B, H, 2), values / 100, torch.zeros(B, H), rewards / 100, ends, log_probs, torch.zeros(B, H)
    )
    fresh = torch.tensor(-1.0)
    torch.testing.assert_close(
        agent_losses(quiet, values / 100, normalised, fresh).policy, agent_losses(quiet, values / 100, plain).policy
    )
    assert 0 < float(fresh) < 1
    with pytest.raises(ValueError, match="return_scale_decay"):
        AgentObjective(return_scale_decay=1.5)
