"""The actor-critic's training step in imagination, ours beside the reference design's (issue 16).

One step is the agent's hot loop: burn-in (the actor-critic reads the window's real frames or tokens without
gradient), the world model primed with the last real frame, ``horizon`` imagined steps with the policy acting at
each, lambda-returns, the losses, backward and the optimiser step. The figure is imagined steps per second,
``batch * horizon / seconds``. The reference does what the reference code does (benchmarks/reference_design.py):
the burn-in frames encoded and decoded again, ``K + 1`` passes and a decoded frame per imagined step, rewards and
ends read back to the host, and the same actor-critic and objective as ours.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from reference_design import ReferenceImagination, ReferenceWorldModel

from iris_wm.agent.actor_critic import ActorCritic, ActorCriticConfig
from iris_wm.agent.module import ActorCriticModule
from iris_wm.agent.objective import AgentObjective, agent_losses
from iris_wm.agent.rollout import Rollout
from iris_wm.envs.imagination import ImaginationConfig
from sequence_model.world_model import WorldModel, WorldModelConfig
from tokenizer.model import Tokenizer, TokenizerConfig

K, V, A, BURN_IN, HORIZON = 16, 512, 4, 20, 20


@dataclass
class Windows:
    """The batch the agent module reads: real windows of tokens and the actions taken."""

    observations: torch.Tensor  # (B, C, K)
    actions: torch.Tensor  # (B, C)
    mask: torch.Tensor  # (B, C)

    def __len__(self) -> int:
        return self.observations.shape[0]


def windows(batch: int) -> Windows:
    g = torch.Generator().manual_seed(0)
    return Windows(
        torch.randint(0, V, (batch, BURN_IN, K), generator=g),
        torch.randint(0, A, (batch, BURN_IN), generator=g),
        torch.ones(batch, BURN_IN, dtype=torch.bool),
    )


def actor_critic_config(observation: str) -> ActorCriticConfig:
    """The IRIS actor-critic (frames), or the token-reading one at the same LSTM width."""
    return ActorCriticConfig(num_actions=A, observation=observation, vocab_size=V, tokens_per_frame=K)


def ours(batch: int, observation: str, prediction: str, precision: str, timed, repeats: int) -> dict:
    """Imagined steps/s of our agent step at IRIS sizes, imagining in ``precision`` (the actor-critic in fp32)."""
    torch.manual_seed(0)
    wm = WorldModel(WorldModelConfig(vocab_size=V, tokens_per_frame=K, num_actions=A, prediction=prediction))
    imagination = ImaginationConfig.iris(precision=precision)
    module = ActorCriticModule(
        actor_critic_config(observation),
        objective=AgentObjective(horizon=HORIZON, imagination=imagination),
        burn_in=BURN_IN,
        prime_steps=1,
    )
    module.attach(wm, Tokenizer(TokenizerConfig()), frozen=True)
    optimizer = torch.optim.Adam(module.actor_critic.parameters(), lr=1e-4)
    data = windows(batch)

    def step():
        module.compute_loss(data).total.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    seconds = timed(step, repeats)
    return {
        "batch": batch,
        "observation": observation,
        "prediction": prediction,
        "steps_per_s": batch * HORIZON / seconds,
    }


def reference(batch: int, timed, repeats: int) -> dict:
    """Imagined steps/s of the reference design's agent step (frames policy, fp32)."""
    torch.manual_seed(0)
    tokenizer = Tokenizer(TokenizerConfig()).eval()
    env = ReferenceImagination(ReferenceWorldModel(num_actions=A), tokenizer)
    actor_critic = ActorCritic(actor_critic_config("frames"))
    optimizer = torch.optim.Adam(actor_critic.parameters(), lr=1e-4)
    objective = AgentObjective(horizon=HORIZON)
    frames = tokenizer.decode(windows(batch).observations.flatten(0, 1)).view(batch, BURN_IN, 3, 64, 64)

    def step():
        with torch.no_grad():  # burn-in on the tokenizer's reconstructions of the real frames
            state = actor_critic.initial_state(batch)
            seen = tokenizer.decode(tokenizer.encode(frames.flatten(0, 1))).view_as(frames)
            for t in range(BURN_IN - 1):
                state = actor_critic(seen[:, t], state).state
            observation = env.reset(tokenizer.encode(seen[:, -1]))
        logits, values, actions, rewards, ends = [], [], [], [], []
        for t in range(HORIZON + 1):
            out = actor_critic(observation, state)
            values.append(out.value)
            if t == HORIZON:
                break
            action = torch.distributions.Categorical(logits=out.logits.detach()).sample()
            observation, reward, done = env.step(action)
            logits.append(out.logits)
            actions.append(action)
            rewards.append(torch.from_numpy(reward).float())
            ends.append(torch.from_numpy(done))
            state = out.state
        stack = torch.stack
        log_softmax = stack(logits, 1).float().log_softmax(-1)  # the reference's categorical policy terms
        taken = log_softmax.gather(-1, stack(actions, 1)[..., None]).squeeze(-1)
        entropies = -(log_softmax.exp() * log_softmax).sum(-1)
        rollout = Rollout(
            [],
            [],
            stack(logits, 1),
            stack(values, 1),
            stack(actions, 1),
            stack(rewards, 1),
            stack(ends, 1),
            taken,
            entropies,
        )
        agent_losses(rollout, rollout.values.detach(), objective).total.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    seconds = timed(step, repeats)
    return {
        "batch": batch,
        "observation": "frames",
        "prediction": "reference",
        "steps_per_s": batch * HORIZON / seconds,
    }
