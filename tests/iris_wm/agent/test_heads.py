"""The policy distributions: the squashed Gaussian's density against torch.distributions, actions inside the box,
seeded draws, and REINFORCE through the rollout moving a continuous policy the way the reward points."""

from types import SimpleNamespace

import pytest
import torch
from torch.distributions import AffineTransform, Normal, TanhTransform, TransformedDistribution

from helpers import tiny
from iris_wm.agent.actor_critic import ActorCritic, ActorCriticConfig
from iris_wm.agent.heads import BoxPolicy, DiscretePolicy
from iris_wm.agent.objective import AgentObjective, agent_losses
from iris_wm.agent.rollout import rollout
from iris_wm.envs.imagination import ImaginationConfig
from iris_wm.runtime.errors import ConfigError

LOW, HIGH = torch.tensor([-1.0, 0.0]), torch.tensor([1.0, 4.0])


def test_the_squashed_gaussian_density_is_the_change_of_variables():
    torch.manual_seed(0)
    params = torch.randn(5, 4)
    policy = BoxPolicy(params, LOW, HIGH)
    u = policy.sample(torch.Generator().manual_seed(1))
    reference = TransformedDistribution(
        Normal(policy.mean, policy.log_std.exp()),
        [TanhTransform(), AffineTransform((LOW + HIGH) / 2, (HIGH - LOW) / 2)],
    )
    action = policy.to_env(u)
    torch.testing.assert_close(policy.log_prob(u), reference.log_prob(action).sum(-1), rtol=1e-4, atol=1e-4)
    assert ((action >= LOW) & (action <= HIGH)).all()
    torch.testing.assert_close(policy.gaussian_entropy(), Normal(policy.mean, policy.log_std.exp()).entropy().sum(-1))
    # Far in the tail the action sits on the bound, and the density is still finite (computed from u, not from a).
    assert torch.isfinite(policy.log_prob(torch.full((5, 2), 30.0))).all()
    assert torch.equal(policy.to_env(policy.sample(temperature=0)), policy.to_env(policy.mean))
    again = BoxPolicy(params, LOW, HIGH).sample(torch.Generator().manual_seed(1))
    assert torch.equal(u, again)


def test_the_entropy_bonus_is_the_squashed_distributions_and_does_not_reward_saturation():
    # Its mean over draws is the entropy of the actions in the box: the mean of -log p(a) over the same draws.
    params = torch.tensor([[0.3, -1.2, 0.0, 0.5]]).expand(200_000, 4)
    policy = BoxPolicy(params, LOW, HIGH)
    u = policy.sample(torch.Generator().manual_seed(0))
    estimate, reference = policy.entropy(u).mean(), -policy.log_prob(u).mean()
    assert abs(float(estimate - reference)) < 0.01
    # The Gaussian's entropy grows with its spread; the squashed one falls once the tanh folds it onto the bounds.
    # std 1 against std e (log_std 0 and 1):
    spreads = [BoxPolicy(torch.tensor([[0.0, 0.0, raw, raw]]).expand(50_000, 4), LOW, HIGH) for raw in (0.0, 5.0)]
    assert torch.allclose(spreads[0].log_std, torch.zeros(1))  # a new network's raw 0: std 1 before the tanh
    narrow, wide = (p.entropy(p.sample(torch.Generator().manual_seed(1))).mean() for p in spreads)
    assert spreads[1].gaussian_entropy()[0] > spreads[0].gaussian_entropy()[0] and wide < narrow
    # Its gradient reaches the mean and the spread (reparameterised at the draw).
    params = torch.tensor([[0.3, -1.2, 0.0, 0.5]], requires_grad=True)
    policy = BoxPolicy(params, LOW, HIGH)
    policy.entropy(policy.sample(torch.Generator().manual_seed(2))).sum().backward()
    assert (params.grad != 0).all()


def test_the_categorical_keeps_the_discrete_policy_as_it_was():
    logits = torch.randn(4, 3)
    policy = DiscretePolicy(logits)
    actions = torch.tensor([0, 2, 1, 1])
    torch.testing.assert_close(
        policy.log_prob(actions), torch.distributions.Categorical(logits=logits).log_prob(actions)
    )
    torch.testing.assert_close(policy.entropy(), torch.distributions.Categorical(logits=logits).entropy())
    assert torch.equal(policy.sample(temperature=0), logits.argmax(-1))


class PushRight:
    """A stand-in imagination: reward is the first action component, nothing ends, the tokens never change."""

    def __init__(self, batch: int):
        self.batch = batch

    def step(self, actions):
        assert actions.shape == (self.batch, 2)
        return SimpleNamespace(
            tokens=torch.zeros(self.batch, 4, dtype=torch.long),
            reward=actions[:, 0].detach(),
            terminated=torch.zeros(self.batch, dtype=torch.bool),
            state=None,
        )

    def current_state(self):
        return None


def box_actor_critic(**extra) -> ActorCritic:
    torch.manual_seed(0)
    return ActorCritic(tiny.box_actor_critic_config(5, 4, **extra))


def test_reinforce_through_the_rollout_moves_a_box_policy_towards_reward():
    network = box_actor_critic()
    optimizer = torch.optim.Adam(network.parameters(), lr=0.01)
    objective = AgentObjective(horizon=5, entropy_weight=0.0)
    generator = torch.Generator().manual_seed(0)

    def mean_first_action():
        out = network(torch.zeros(64, 4, dtype=torch.long), network.initial_state(64))
        policy = network.policy(out.logits)
        return float(policy.to_env(policy.mode())[:, 0].mean())

    before = mean_first_action()
    for _ in range(60):
        imagined = rollout(
            network, PushRight(64), torch.zeros(64, 4, dtype=torch.long), network.initial_state(64), 5, generator
        )
        assert imagined.actions.shape == (64, 5, 2) and imagined.log_probs.requires_grad
        loss = agent_losses(imagined, imagined.values.detach(), objective).total
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert before == pytest.approx(0, abs=0.05) and mean_first_action() > 0.5


class Reach:
    """A stand-in differentiable imagination: a 1-D position moved by the first action component, rewarded for
    being near 0.6; the graph runs from the actions to the positions and rewards."""

    def __init__(self, batch: int):
        self.position = torch.zeros(batch, 1)

    def step(self, actions):
        self.position = self.position + 0.5 * actions[:, :1]
        return SimpleNamespace(
            tokens=torch.zeros(len(actions), 4, dtype=torch.long),
            reward=-(self.position[:, 0] - 0.6).abs(),
            terminated=torch.zeros(len(actions), dtype=torch.bool),
            state=self.position,
        )

    def current_state(self):
        return self.position


def test_dynamics_gradients_move_a_box_policy_through_the_imagined_states():
    network = box_actor_critic(state_dim=1, state_low=[-3.0], state_high=[3.0])
    optimizer = torch.optim.Adam(network.parameters(), lr=0.01)
    objective = AgentObjective(horizon=4, entropy_weight=0.0, actor_gradient="dynamics", target_critic_decay=0.9)
    generator = torch.Generator().manual_seed(0)
    tokens = torch.zeros(64, 4, dtype=torch.long)
    for update in range(40):
        imagined = rollout(network, Reach(64), tokens, network.initial_state(64), 4, generator, reparameterize=True)
        assert imagined.rewards.requires_grad and imagined.imagined_states[-1].requires_grad
        assert not any(s.requires_grad for s in imagined.states)  # the network read them detached
        if update == 0:
            first = float(imagined.rewards.detach().sum(1).mean())
        loss = agent_losses(imagined, torch.zeros(64, 5), objective).total
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    # From 0, the best is to reach 0.6 and stay: a return of about -0.6 - 0.1 over 4 steps, from about -2.2 at first.
    assert first < -1.5 and float(imagined.rewards.detach().sum(1).mean()) > -1.0


def test_dynamics_gradients_need_a_target_critic_and_make_the_imagination_differentiable():
    with pytest.raises(ConfigError, match="target_critic_decay"):
        AgentObjective(actor_gradient="dynamics")
    with pytest.raises(ConfigError, match="actor_gradient"):
        AgentObjective(actor_gradient="backprop")
    assert AgentObjective(actor_gradient="dynamics", target_critic_decay=0.98).imagination.differentiable
    with pytest.raises(ConfigError, match="fp32"):
        AgentObjective(actor_gradient="dynamics", target_critic_decay=0.9, imagination={"precision": "bf16"})
    assert not AgentObjective().imagination.differentiable
    given = ImaginationConfig.iris()  # a config passed in is not changed under its owner
    objective = AgentObjective(actor_gradient="dynamics", target_critic_decay=0.9, imagination=given)
    assert objective.imagination.differentiable and not given.differentiable


def test_a_network_that_reads_proprioception_scales_it_and_refuses_to_go_without():
    network = box_actor_critic(state_dim=3, state_low=[0.0, 0.0, -2.0], state_high=[1.0, 10.0, 2.0])
    tokens = torch.zeros(2, 4, dtype=torch.long)
    out = network(tokens, network.initial_state(2), torch.tensor([[0.5, 5.0, 0.0], [1.0, 10.0, 2.0]]))
    assert out.logits.shape == (2, 4) and out.value.shape == (2,)
    with pytest.raises(ValueError, match=r"pass proprio of shape \(2, 3\)"):
        network(tokens, network.initial_state(2))
    with pytest.raises(Exception, match="num_actions or action_dim"):
        ActorCritic(ActorCriticConfig(observation="tokens", vocab_size=5, tokens_per_frame=4))
