"""The planner finds the one rewarded action sequence of a stub world model (100 trials at once, as 100
environments), for discrete actions (CEM) and box actions (MPPI); the prior's sequences are scored once a plan; a
plan starts from the last one shifted; imagined returns, with and without the critic's bootstrap, equal a
step-by-step imagination of each sequence (also scored by expected outcomes); the actor proposes its own actions; MPC
keeps the agent's recurrent state as the agent does."""

import dataclasses

import numpy as np
import pytest
import torch

from iris_wm.agent.actor_critic import ActorCritic, ActorCriticConfig
from iris_wm.agent.mpc import MPCPolicy
from iris_wm.agent.planning import ImaginedReturns, Planner, PlannerConfig
from iris_wm.agent.policy import AgentPolicy
from iris_wm.data.spaces import ActionSpace
from iris_wm.envs.imagination import ImaginationConfig, ImaginationEnv
from iris_wm.runtime.errors import ConfigError
from sequence_model.ensemble import WorldModelEnsemble
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


def _loop_return(
    model, ac, config, tokens, recurrent, sequence, end_penalty=0.0, expected=False, policy_prior=0.0, critic=True
):
    """One sequence's score by a step-by-step imagination with the critic at the horizon, and the chance it is alive
    at the end; ``expected``: expected rewards and ends; ``policy_prior``: plus that times the actor's discounted
    log-probabilities of the sequence's actions while it is alive."""
    env = ImaginationEnv(model, config=config)
    current, state = env.reset(tokens), recurrent
    total, alive = 0.0, 1.0
    for t in range(len(sequence)):
        out = ac(current, state)
        state = out.state
        total += 0.9**t * alive * policy_prior * float(out.logits.log_softmax(-1)[0, sequence[t]])
        step = env.step(sequence[t : t + 1])
        reward = float(step.expected_reward) if expected else float(step.reward)
        end = float(step.end_probability) if expected else float(step.terminated)
        total += 0.9**t * alive * (reward - end_penalty * end)
        alive *= 1.0 - end
        current = step.tokens
    if critic:
        total += 0.9 ** len(sequence) * alive * float(ac(current, state).value)
    return total, alive


def test_expected_outcomes_weigh_each_step_by_the_chance_of_being_alive():
    model, ac = _tiny_agent()
    with torch.no_grad():
        ac.critic.weight.normal_(std=1.0)
    g = torch.Generator().manual_seed(5)
    tokens = torch.randint(0, 11, (2, 1, 3), generator=g)
    recurrent = (torch.randn(2, 8, generator=g), torch.randn(2, 8, generator=g))
    sequences = torch.randint(0, 4, (2, 5, 3), generator=g)
    config = ImaginationConfig(temperature=0.0, precision="fp32")
    scorer = ImaginedReturns(
        model, 0.9, config, actor_critic=ac, end_penalty=2.0, expected_rewards=True, expected_ends=True
    )
    scorer.set_context(tokens, recurrent=recurrent)
    with torch.no_grad():
        values = scorer(sequences)
        for e in range(2):
            for n in range(5):
                state = (recurrent[0][e : e + 1], recurrent[1][e : e + 1])
                want, _ = _loop_return(model, ac, config, tokens[e : e + 1], state, sequences[e, n], 2.0, True)
                assert values[e, n].item() == pytest.approx(want, abs=1e-5)
    # A known chance of an end below one half: the likelier outcome never ends, the expected one counts it.
    with torch.no_grad():
        for head, bias in ((model.termination_head, [0.0, -0.8473]), (model.reward_head, [-30.0, 0.0, -30.0])):
            head[-1].weight.zero_()
            head[-1].bias.copy_(torch.tensor(bias))  # p(end) = 0.3; the reward is 0
    for expected, want in ((False, 0.0), (True, -sum(0.9**t * 0.7**t * 0.3 for t in range(3)))):
        plain = ImaginedReturns(model, 0.9, config, end_penalty=1.0, expected_ends=expected)
        plain.set_context(tokens)
        with torch.no_grad():
            assert torch.allclose(plain(sequences), torch.full((2, 5), want), atol=1e-4)


def _tiny_agent(num_actions=4, vocab=11, K=3):
    torch.manual_seed(3)
    model = WorldModel(
        WorldModelConfig(
            vocab_size=vocab,
            tokens_per_frame=K,
            num_actions=num_actions,
            context_steps=4,
            gpt=GPTConfig(num_layers=2, num_heads=2, embed_dim=16),
            prediction="parallel",
        )
    ).eval()
    config = ActorCriticConfig(
        num_actions=num_actions, observation="tokens", vocab_size=vocab, tokens_per_frame=K, encoder_dim=16, lstm_dim=8
    )
    return model, ActorCritic(config).eval()


def test_the_critic_bootstraps_each_sequence_from_its_recurrent_state_as_a_step_by_step_loop():
    model, ac = _tiny_agent()
    with torch.no_grad():
        ac.critic.weight.normal_(std=1.0)  # values far from 0, so a missing bootstrap would show
        model.termination_head[-1].bias.copy_(torch.tensor([0.0, -0.7]))  # some sequences end, most do not
    g = torch.Generator().manual_seed(4)
    tokens = torch.randint(0, 11, (2, 1, 3), generator=g)
    recurrent = (torch.randn(2, 8, generator=g), torch.randn(2, 8, generator=g))
    sequences = torch.randint(0, 4, (2, 5, 3), generator=g)
    config = ImaginationConfig(temperature=0.0, precision="fp32")
    scorer = ImaginedReturns(model, gamma=0.9, config=config, actor_critic=ac)
    scorer.set_context(tokens, recurrent=recurrent)
    with torch.no_grad():
        values = scorer(sequences)
    plain = ImaginedReturns(model, gamma=0.9, config=config)
    plain.set_context(tokens)
    ended = 0
    with torch.no_grad():
        assert not torch.allclose(values, plain(sequences))
        for e in range(2):
            for n in range(5):
                state = (recurrent[0][e : e + 1], recurrent[1][e : e + 1])
                want, alive = _loop_return(model, ac, config, tokens[e : e + 1], state, sequences[e, n])
                assert values[e, n].item() == pytest.approx(want, abs=1e-5)
                ended += alive == 0
    assert 0 < ended < 10


@pytest.mark.parametrize("critic", [True, False])
def test_the_policy_prior_adds_the_actors_log_probabilities_of_each_sequence_while_it_lives(critic):
    model, ac = _tiny_agent()
    with torch.no_grad():
        ac.critic.weight.normal_(std=1.0)
        ac.actor.weight.normal_(std=1.0)  # log-probabilities that differ between actions and steps
        model.termination_head[-1].bias.copy_(torch.tensor([0.0, -0.7]))  # some sequences end, so the mask counts
    g = torch.Generator().manual_seed(6)
    tokens = torch.randint(0, 11, (2, 1, 3), generator=g)
    recurrent = (torch.randn(2, 8, generator=g), torch.randn(2, 8, generator=g))
    sequences = torch.randint(0, 4, (2, 6, 3), generator=g)
    config = ImaginationConfig(temperature=0.0, precision="fp32")
    scorer = ImaginedReturns(model, 0.9, config, actor_critic=ac, bootstrap=critic, end_penalty=1.0, policy_prior=0.7)
    scorer.set_context(tokens, recurrent=recurrent)
    ended = 0
    with torch.no_grad():
        values = scorer(sequences)
        for e in range(2):
            for n in range(6):
                state = (recurrent[0][e : e + 1], recurrent[1][e : e + 1])
                want, alive = _loop_return(
                    model, ac, config, tokens[e : e + 1], state, sequences[e, n], 1.0, policy_prior=0.7, critic=critic
                )
                assert values[e, n].item() == pytest.approx(want, abs=1e-5)
                ended += alive == 0
    assert 0 < ended < 12


def test_the_policy_prior_breaks_ties_for_the_actor_and_needs_a_discrete_actor():
    model, ac = _tiny_agent()
    with torch.no_grad():
        ac.critic.weight.zero_()
        ac.critic.bias.zero_()  # every sequence is worth the same but for the actor's preference
        ac.actor.weight.zero_()
        ac.actor.bias.copy_(torch.tensor([0.0, 3.0, 0.0, 0.0]))
        model.reward_head[-1].weight.zero_()
        model.reward_head[-1].bias.copy_(torch.tensor([0.0, 9.0, 0.0]))  # reward 0 everywhere
        model.termination_head[-1].bias.copy_(torch.tensor([9.0, 0.0]))  # no end
        model.termination_head[-1].weight.zero_()
    config = ImaginationConfig(temperature=0.0, precision="fp32")
    plan = PlannerConfig(samples=16, elites=4, prior_samples=0, iterations=2, horizon=3, policy_prior=0.1)
    scorer = ImaginedReturns(model, 0.9, config, actor_critic=ac, policy_prior=plan.policy_prior)
    scorer.set_context(torch.zeros(8, 1, 3, dtype=torch.long), recurrent=ac.initial_state(8))
    chosen = Planner(plan, num_actions=4).plan(scorer, 8, generator=torch.Generator().manual_seed(0))
    assert bool((chosen == 1).all())
    with pytest.raises(ValueError, match="plan with an agent"):
        ImaginedReturns(model, policy_prior=0.1)
    box_config = ActorCriticConfig(action_dim=2, action_low=[-1.0] * 2, action_high=[1.0] * 2, observation="tokens")
    box = ActorCritic(dataclasses.replace(box_config, vocab_size=11, tokens_per_frame=3))
    with pytest.raises(ValueError, match="for discrete actions"):
        ImaginedReturns(model, actor_critic=box, policy_prior=0.1)
    with pytest.raises(ValueError, match="policy_prior"):
        PlannerConfig(policy_prior=-1.0)


def test_the_actor_prior_proposes_the_actors_actions_and_is_scored_once_a_plan():
    model, ac = _tiny_agent()
    with torch.no_grad():
        ac.actor.bias.copy_(torch.tensor([0.0, 0.0, 30.0, 0.0]))  # the actor always takes action 2
    scorer = ImaginedReturns(model, config=ImaginationConfig(temperature=0.0, precision="fp32"), actor_critic=ac)
    scorer.set_context(torch.zeros(3, 1, 3, dtype=torch.long), recurrent=ac.initial_state(3))
    prior = scorer.prior(5, 4, torch.Generator().manual_seed(0))
    assert prior.shape == (3, 5, 4) and bool((prior == 2).all())
    calls = []

    def score(candidates):
        calls.append(candidates.shape[1])
        return (candidates == 2).all(-1).float()  # only the prior's sequence is rewarded

    config = PlannerConfig(samples=8, elites=2, prior_samples=5, iterations=3, horizon=4)
    chosen = Planner(config, num_actions=4).plan(score, 3, prior=prior)
    with pytest.raises(ValueError, match="draw them with the planner's horizon"):
        Planner(PlannerConfig(), num_actions=4).plan(score, 3, prior=prior)
    assert calls == [5, 8, 8, 8] and bool((chosen == 2).all())


def test_choosing_by_sample_draws_elites_by_their_weight():
    values = torch.tensor([0.0, -1.0, -50.0, -2.0])  # sequence i starts with action i

    def score(candidates):
        return values[candidates[..., 0]]

    prior = torch.arange(4).view(1, 4, 1).expand(400, 4, 2)
    g = torch.Generator().manual_seed(0)
    # One iteration of 1 draw: the elites are the prior's 3 best, weighted exp(-t * gap): 1, e^-1, e^-2 at t = 1.
    config = PlannerConfig(samples=1, elites=3, prior_samples=4, iterations=1, horizon=2, temperature=1.0)
    chosen = Planner(PlannerConfig(**{**config.__dict__, "choose": "sample"}), num_actions=4).plan(
        score, 400, prior=prior, generator=g
    )
    shares = torch.bincount(chosen, minlength=4).float() / 400
    weights = torch.tensor([1.0, torch.e**-1, 0.0, torch.e**-2])
    assert shares[2] == 0 and torch.allclose(shares, weights / weights.sum(), atol=0.07)
    assert bool((Planner(config, num_actions=4).plan(score, 400, prior=prior, generator=g) == 0).all())
    with pytest.raises(ValueError, match="choose must be"):
        PlannerConfig(choose="softmax")


def test_mpc_policy_keeps_the_agents_recurrent_state_as_the_agent_does():
    model, ac = _tiny_agent(vocab=4, K=4)

    class Quadrants:  # frames -> 4 tokens: the mean of each quadrant, in 4 levels
        def encode(self, frames):
            q = frames.float().unflatten(2, (2, 32)).unflatten(4, (2, 32)).mean((1, 3, 5)).flatten(1)
            return (q / 64).long().clamp(0, 3)

    g = torch.Generator().manual_seed(5)
    mpc = MPCPolicy(
        Quadrants(), model, PlannerConfig(samples=6, elites=2, prior_samples=3, horizon=2, iterations=2), g, ac
    ).bind(ActionSpace.discrete(4))
    agent = AgentPolicy(ac, Quadrants())
    for t in range(4):
        frames = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8, generator=g)
        new = torch.tensor([t == 0, t == 2])
        actions = mpc.act(frames, new)
        agent.act(frames, new)
        assert actions.shape == (2,) and bool(((actions >= 0) & (actions < 4)).all())
        assert all(torch.equal(a, b) for a, b in zip(mpc.state, agent.state, strict=True))


def test_mpc_plans_only_for_the_active_environments_as_a_policy_of_those_alone_would():
    model, ac = _tiny_agent(vocab=4, K=4)

    class Quadrants:
        def encode(self, frames):
            q = frames.float().unflatten(2, (2, 32)).unflatten(4, (2, 32)).mean((1, 3, 5)).flatten(1)
            return (q / 64).long().clamp(0, 3)

    config = PlannerConfig(samples=6, elites=2, prior_samples=3, horizon=2, iterations=2)
    three = MPCPolicy(Quadrants(), model, config, torch.Generator().manual_seed(6), ac).bind(ActionSpace.discrete(4))
    two = MPCPolicy(Quadrants(), model, config, torch.Generator().manual_seed(6), ac).bind(ActionSpace.discrete(4))
    g = torch.Generator().manual_seed(7)
    frames = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8, generator=g)
    three.act(frames, torch.ones(3, dtype=torch.bool))  # every environment has a state and a last plan
    idle_state = [x[1].clone() for x in three.state]
    idle_plan = three.planner.previous[1].clone()
    two.state = tuple(x[[0, 2]].clone() for x in three.state)
    two.planner.previous = three.planner.previous[[0, 2]].clone()
    two.generator.set_state(three.generator.get_state())
    for t in range(3):
        frames = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8, generator=g)
        new = torch.tensor([t == 1, False, False])
        actions = three.act(frames, new, active=np.array([True, False, True]))
        alone = two.act(frames[[0, 2]], new[[0, 2]])
        assert torch.equal(actions[[0, 2]], alone) and actions[1] == 0
        assert all(torch.equal(x[[0, 2]], y) for x, y in zip(three.state, two.state, strict=True))
        assert torch.equal(three.planner.previous[[0, 2]], two.planner.previous)
        assert all(torch.equal(x[1], y) for x, y in zip(three.state, idle_state, strict=True))
        assert torch.equal(three.planner.previous[1], idle_plan)


def test_a_horizon_beyond_the_world_models_context_is_refused_and_the_longest_one_never_reprimes():
    model, ac = _tiny_agent()  # a context of 4 steps: one real step and 3 imagined
    with pytest.raises(
        ConfigError,
        match="horizon 4 from one real step needs 5 steps of context; this world model "
        "holds 4.*--planner.horizon 3 or less",
    ):
        MPCPolicy(None, model, PlannerConfig(horizon=4), None, ac)
    scorer = MPCPolicy(None, model, PlannerConfig(horizon=3), None, ac).scorer
    primes = []
    original = scorer.env._prime
    scorer.env._prime = lambda: primes.append(1) or original()
    scorer.set_context(torch.zeros(2, 1, 3, dtype=torch.long), recurrent=ac.initial_state(2))
    with torch.no_grad():
        scorer(torch.zeros(2, 5, 3, dtype=torch.long))
    assert len(primes) == 1  # the reset's, never a sliding window's


def test_the_disagreement_penalty_subtracts_the_ensembles_disagreement_along_each_sequence():
    members = [_tiny_agent()[0] for _ in range(2)]
    torch.manual_seed(9)
    members[1] = WorldModel(members[0].config).eval()  # another seed: the members disagree
    ensemble = WorldModelEnsemble(members).eval()
    config = ImaginationConfig(temperature=0.0, precision="fp32")
    g = torch.Generator().manual_seed(6)
    tokens, sequences = torch.randint(0, 11, (2, 1, 3), generator=g), torch.randint(0, 4, (2, 4, 3), generator=g)
    plain = ImaginedReturns(ensemble, gamma=0.8, config=config)
    penalised = ImaginedReturns(ensemble, gamma=0.8, config=config, disagreement_penalty=2.0)
    for scorer in (plain, penalised):
        scorer.set_context(tokens)
    env = ImaginationEnv(ensemble, config=config)
    env.reset(tokens.repeat_interleave(4, 0))
    cost, alive = torch.zeros(8), torch.ones(8)
    for t in range(3):
        step = env.step(sequences.reshape(8, 3)[:, t])
        cost += 0.8**t * alive * 2.0 * step.disagreement.tokens
        alive = alive * (~step.terminated).float()
    assert float(cost.min()) > 0
    assert torch.allclose(penalised(sequences), plain(sequences) - cost.view(2, 4), atol=1e-5)
    with pytest.raises(ValueError, match="needs an ensemble"):
        ImaginedReturns(members[0], disagreement_penalty=1.0)
