"""The actor-critic and its training in imagination, on tiny random models."""

from dataclasses import asdict

import pytest
import torch

from helpers import tiny
from iris_wm.agent.actor_critic import ActorCritic, ActorCriticConfig
from iris_wm.agent.module import ActorCriticModule
from iris_wm.agent.objective import AgentObjective, alive_mask
from iris_wm.data.windows import StepBatch

K, V, A, C = 4, 16, 3, 4


def wm_config():
    return tiny.world_model_config(V, K, A, C, dropout=0.0)


def tok_config():
    return tiny.tokenizer_config(V)


def module(observation="tokens", horizon=5, **objective):
    torch.manual_seed(0)
    config = ActorCriticConfig(
        num_actions=A,
        observation=observation,
        frame_size=16,
        channels=(4, 4),
        vocab_size=V,
        tokens_per_frame=K,
        token_embed_dim=4,
        encoder_dim=16,
        lstm_dim=16,
    )
    return ActorCriticModule(
        config,
        objective=AgentObjective(horizon=horizon, **objective),
        burn_in=3,
        world_model_config=asdict(wm_config()),
        tokenizer_config=asdict(tok_config()),
    )


def batch(B=6, T=3):
    g = torch.Generator().manual_seed(1)
    return StepBatch(
        torch.randint(0, V, (B, T, K), generator=g),
        torch.randint(0, A, (B, T), generator=g),
        torch.zeros(B, T),
        torch.zeros(B, T, dtype=torch.bool),
        torch.zeros(B, T, dtype=torch.bool),
        torch.ones(B, T, dtype=torch.bool),
        torch.zeros(B, T, dtype=torch.long),
    )


def test_alive_mask_keeps_the_steps_up_to_the_first_end():
    ends = torch.tensor([[False, True, False, True], [False, False, False, False], [True, False, False, False]])
    expected = torch.tensor([[True, True, False, False], [True, True, True, True], [True, False, False, False]])
    assert torch.equal(alive_mask(ends), expected)


@pytest.mark.parametrize("observation", ["tokens", "frames"])
def test_imagined_trajectory_shapes_and_gradients_reach_only_the_actor_critic(observation):
    m = module(observation)
    m.train()
    assert not m.world_model.training and not m.tokenizer.training
    traj = m.imagine(batch())
    assert traj.logits.shape == (6, 5, A) and traj.values.shape == (6, 6) and traj.rewards.shape == (6, 5)
    assert set(traj.rewards.unique().tolist()) <= {-1.0, 0.0, 1.0}
    total, metrics = m.loss(batch())
    total.backward()
    assert all(p.grad is not None for p in m.actor_critic.parameters())
    assert all(p.grad is None for p in m.world_model.parameters())
    assert torch.isfinite(total) and set(metrics) >= {"policy_loss", "value_loss", "entropy", "imagined_return"}
    # A near-uniform initial policy: entropy close to log A.
    assert abs(float(metrics["entropy"].detach()) - torch.log(torch.tensor(float(A)))) < 0.01


def test_loss_is_deterministic_for_a_seed():
    m = module()
    torch.manual_seed(3)
    first, _ = m.loss(batch())
    torch.manual_seed(3)
    second, _ = m.loss(batch())
    assert torch.equal(first, second)


def test_steps_after_an_imagined_end_do_not_count():
    m = module()
    # Make the world model always predict the end: every trajectory ends at its first step.
    head = m.world_model.termination_head[-1]
    torch.nn.init.zeros_(head.weight)
    head.bias.data = torch.tensor([-100.0, 100.0])
    traj = m.imagine(batch())
    assert traj.ends.all()
    _, metrics = m.loss(batch())
    assert float(metrics["imagined_end_rate"]) == 1.0
    # Only step 0 is alive, and its lambda-return is its reward: the value loss is (V_0 - r_0)^2 averaged.


def test_target_critic_follows_the_critic_by_ema():
    m = module(target_critic_decay=0.5)
    source = next(m.actor_critic.parameters())
    target = next(m.target_critic.parameters())
    before = target.detach().clone()
    with torch.no_grad():
        source.add_(1.0)
    m.update_target()
    torch.testing.assert_close(target, before + 0.5)
    total, _ = m.loss(batch())
    total.backward()
    assert next(m.target_critic.parameters()).grad is None


def test_checkpoint_round_trip_rebuilds_the_frozen_models(tmp_path):
    m = module()
    from lightning import Trainer

    trainer = Trainer(max_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(m)
    path = tmp_path / "agent.ckpt"
    trainer.save_checkpoint(path)
    loaded = ActorCriticModule.load_from_checkpoint(path, weights_only=True)
    for name, tensor in m.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name


def test_size_mismatches_are_refused():
    config = ActorCriticConfig(num_actions=A + 1, observation="tokens", vocab_size=V, tokens_per_frame=K)
    with pytest.raises(
        ValueError,
        match=r"actor critic \(.*4 actions\) and the world model \(.*3 actions\) do not fit .*\(actions differ\)",
    ):
        ActorCriticModule(config, world_model_config=asdict(wm_config()), tokenizer_config=asdict(tok_config()))
    config = ActorCriticConfig(num_actions=A, observation="tokens", vocab_size=V * 2, tokens_per_frame=K)
    with pytest.raises(ValueError, match=r"actor critic \(32 codes.*, the world model \(16 codes.*\(codes differ\)"):
        ActorCriticModule(config, world_model_config=asdict(wm_config()), tokenizer_config=asdict(tok_config()))
    other = asdict(tok_config())
    other["quantizer"]["codebook_size"] = V * 2
    config = ActorCriticConfig(num_actions=A, observation="tokens", vocab_size=V, tokens_per_frame=K)
    with pytest.raises(
        ValueError,
        match=r"world model \(16 codes.* and the tokenizer \(32 codes.*\(codes differ\).*tokens of this tokenizer",
    ):
        ActorCriticModule(config, world_model_config=asdict(wm_config()), tokenizer_config=other)
    with pytest.raises(ValueError, match="uint8"):
        network = ActorCritic(ActorCriticConfig(num_actions=A, frame_size=16, channels=(4, 4)))
        network(torch.zeros(1, 3, 16, 16), network.initial_state(1))


def test_dynamics_gradients_reach_the_actor_through_the_world_model_and_train_nothing_else():
    # A box world model of frames and a 2-component state; the actor follows the returns' gradient through the
    # reparameterised actions, the imagined states and rewards and the target critic's values.
    torch.manual_seed(0)
    wm = dict(
        asdict(wm_config()),
        num_actions=None,
        action_dim=2,
        state_dim=2,
        state_bins=8,
        state_low=[-1.0, -1.0],
        state_high=[1.0, 1.0],
        reward="twohot",
    )
    config = tiny.box_actor_critic_config(V, K, state_dim=2, state_low=[-1.0, -1.0], state_high=[1.0, 1.0])
    objective = AgentObjective(horizon=3, actor_gradient="dynamics", target_critic_decay=0.9)
    m = ActorCriticModule(config, objective=objective, burn_in=3, world_model_config=wm)
    m.train()
    g = torch.Generator().manual_seed(1)
    steps = StepBatch(
        torch.randint(0, V, (4, 3, K), generator=g),
        torch.rand(4, 3, 2, generator=g) * 2 - 1,
        torch.zeros(4, 3),
        torch.zeros(4, 3, dtype=torch.bool),
        torch.zeros(4, 3, dtype=torch.bool),
        torch.ones(4, 3, dtype=torch.bool),
        torch.zeros(4, 3, dtype=torch.long),
        torch.rand(4, 3, 2, generator=g) - 0.5,
    )
    imagined = m.imagine(steps)
    assert imagined.rewards.requires_grad and imagined.imagined_states[-1].requires_grad
    values = m._target_values(steps, imagined)
    assert values.requires_grad  # through the imagined states the target critic reads
    policy = torch.autograd.grad(-values[:, -1].sum(), imagined.imagined_states[1])[0]
    assert float(policy.abs().sum()) > 0
    total, _ = m.loss(steps)
    total.backward()
    assert all(p.grad is not None for p in m.actor_critic.actor.parameters())
    assert all(p.grad is None for p in m.world_model.parameters())
    assert all(p.grad is None for p in m.target_critic.parameters())
