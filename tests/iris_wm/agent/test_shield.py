"""``choose: shield``: the plan keeps the agent's own sampled action unless the best sequence starting with it scores
more than the margin below the best; the planner's best score per first action is the maximum over every candidate
it scored; MPC with a shield scores the actor's action after the plan's elites, and takes it under a huge margin and
the best-scored first action under none."""

import pytest
import torch

from helpers.tiny import box_actor_critic_config, world_model_config
from iris_wm.agent.actor_critic import ActorCritic, ActorCriticConfig
from iris_wm.agent.mpc import MPCPolicy
from iris_wm.agent.planning import Planner, PlannerConfig, shield
from iris_wm.data.spaces import ActionSpace
from iris_wm.runtime.errors import ConfigError
from sequence_model.world_model import WorldModel


def test_the_best_score_per_first_action_is_the_maximum_over_every_candidate_scored():
    seen = []
    weights = torch.randn(3, 6, 4, generator=torch.Generator().manual_seed(0))

    def score(candidates):  # (E, N, H) -> (E, N): a fixed score of each step's action
        values = torch.take_along_dim(weights, candidates.transpose(1, 2), dim=2).sum(1)
        seen.append((candidates.clone(), values))
        return values

    prior = torch.randint(0, 4, (3, 2, 6), generator=torch.Generator().manual_seed(1))
    planner = Planner(PlannerConfig(samples=5, elites=2, prior_samples=2, horizon=6, iterations=3), num_actions=4)
    planner.plan(score, 3, prior=prior, generator=torch.Generator().manual_seed(2))
    candidates = torch.cat([c for c, _ in seen], 1)
    values = torch.cat([v for _, v in seen], 1)
    want = torch.full((3, 4), -torch.inf)
    for e in range(3):
        for first, value in zip(candidates[e, :, 0].tolist(), values[e].tolist(), strict=True):
            want[e, first] = max(want[e, first].item(), value)
    assert torch.equal(planner.first_values, want)


def test_the_agents_action_is_kept_within_the_margin_and_overruled_beyond_it():
    first_values = torch.tensor(
        [[1.0, 0.8, -torch.inf, 0.2], [1.0, 0.8, -torch.inf, 0.2], [1.0, 0.8, -torch.inf, 0.2], [0.0, 3.0, 2.0, 1.0]]
    )
    agent = torch.tensor([1, 3, 2, 0])
    # within 0.5 of the best: kept; 0.8 below: overruled; never drawn: kept; 3.0 below: overruled
    assert shield(agent, first_values, 0.5).tolist() == [1, 0, 2, 1]
    assert shield(agent, first_values, 10.0).tolist() == [1, 3, 2, 0]


def _tiny_agent(**actor):
    torch.manual_seed(3)
    model = WorldModel(world_model_config(11, 3, 4, context_steps=4)).eval()
    config = ActorCriticConfig(
        num_actions=4, observation="tokens", vocab_size=11, tokens_per_frame=3, encoder_dim=16, lstm_dim=8, **actor
    )
    ac = ActorCritic(config).eval()
    with torch.no_grad():
        ac.critic.weight.normal_(std=1.0)  # sequences worth different amounts
        ac.actor.weight.zero_()
        ac.actor.bias.copy_(torch.tensor([0.0, 0.0, 30.0, 0.0]))  # the actor always takes action 2
    return model, ac


class FirstTokens:
    """A stand-in tokenizer: a frame's 3 tokens are its first 3 pixels of the first channel, modulo 11."""

    def encode(self, frames):
        return frames[:, 0, 0, :3].long() % 11


@pytest.mark.parametrize("margin", [1e9, 0.0])
def test_mpc_with_a_shield_takes_the_actors_action_under_a_huge_margin_and_the_plans_under_none(margin):
    model, ac = _tiny_agent()
    plan = PlannerConfig(
        samples=8,
        elites=2,
        prior_samples=0,
        horizon=3,
        iterations=2,
        end_penalty=1.0,
        choose="shield",
        shield_margin=margin,
    )
    shielded = MPCPolicy(FirstTokens(), model, plan, torch.Generator().manual_seed(4), ac).bind(ActionSpace.discrete(4))
    g = torch.Generator().manual_seed(5)
    overruled = 0
    for t in range(4):
        frames = torch.randint(0, 256, (6, 3, 64, 64), dtype=torch.uint8, generator=g)
        new = torch.full((6,), t == 0)
        chosen = shielded.act(frames, new)
        assert chosen.shape == (6,)
        if margin > 1:
            assert bool((chosen == 2).all())
        else:
            # the actor's action was scored too (its best sequence: the plan's elites after it)
            assert bool(torch.isfinite(shielded.first_values.gather(1, torch.full((6, 1), 2))).all())
            values = shielded.first_values
            assert torch.equal(values.gather(1, chosen[:, None])[:, 0], values.amax(1))  # a best first action
            overruled += int((chosen != 2).sum())
    assert margin > 1 or overruled > 0  # the plan overrules the actor somewhere under no margin


def test_a_shield_needs_an_agent_and_discrete_actions():
    model, ac = _tiny_agent()
    with pytest.raises(ConfigError, match="plan with an agent"):
        MPCPolicy(FirstTokens(), model, PlannerConfig(choose="shield", horizon=2))
    box = ActorCritic(box_actor_critic_config(11, 3))
    space = ActionSpace.box([-1.0, -1.0], [1.0, 1.0])
    with pytest.raises(ConfigError, match="for discrete actions"):
        MPCPolicy(FirstTokens(), model, PlannerConfig(choose="shield", horizon=2), None, box).bind(space)
    with pytest.raises(ValueError, match="shield_margin"):
        PlannerConfig(shield_margin=-1.0)
