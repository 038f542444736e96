"""The actor-critic acting in imagination: one function for the agent's training step and the online loop's
pictures, so both read, sample and step exactly alike.

At each of ``horizon`` steps the actor-critic reads the current frame (its tokens, or the frame the tokenizer
decodes from them), an action is sampled from its policy, and the imagination environment steps; a last read
after the final step gives the value that bootstraps the horizon. Nothing is read back to the host.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from iris_wm.agent.actor_critic import ActorCritic, State
from iris_wm.envs.imagination import ImaginationEnv


def observe(actor_critic: ActorCritic, tokenizer, tokens: torch.Tensor) -> torch.Tensor:
    """What ``actor_critic`` reads of frames given as tokens ``(B, K)``: the tokens, or the decoded frames."""
    return tokens if actor_critic.reads_tokens else tokenizer.decode(tokens)


@torch.no_grad()
def burn_in(actor_critic: ActorCritic, tokens: torch.Tensor, states: torch.Tensor | None = None, decode=None) -> State:
    """The recurrent state after reading real steps ``tokens (B, C, K)`` from a fresh state (and their
    proprioception ``(B, C, S)`` where the network reads it; no gradient). A frame-reading network reads them
    decoded by ``decode`` (tokens ``(N, K)`` -> frames), all at once."""
    state = actor_critic.initial_state(tokens.shape[0], tokens.device)
    seen = tokens if actor_critic.reads_tokens else decode(tokens.flatten(0, 1)).unflatten(0, tokens.shape[:2])
    for t in range(tokens.shape[1]):
        state = actor_critic(seen[:, t], state, states[:, t] if actor_critic.reads_state else None).state
    return state


@dataclass
class Rollout:
    """``horizon`` imagined steps of a batch of ``B`` trajectories."""

    tokens: list[torch.Tensor]  # H + 1 frames as tokens (B, K): the starting frame, then each imagined one
    observations: list[torch.Tensor]  # H + 1 of what the actor-critic read (tokens or decoded frames)
    logits: torch.Tensor  # (B, H, A) policy logits at each imagined step (box: means and raw log stds)
    values: torch.Tensor  # (B, H + 1) critic values of the observations; the last bootstraps the horizon
    actions: torch.Tensor  # (B, H) ids, or (B, H, D) pre-squash Gaussian draws for box actions
    rewards: torch.Tensor  # (B, H)
    ends: torch.Tensor  # (B, H) bool: the world model ended the episode after this step's action
    log_probs: torch.Tensor | None = None  # (B, H) of the actions taken, with gradient to the policy
    entropies: torch.Tensor | None = None  # (B, H) of the policy at each step (box: at the draw), with gradient
    states: list[torch.Tensor] | None = None  # H + 1 proprioceptive states read (B, S), where the network reads them
    # Reparameterised rollouts: the states as imagined, with the graph back to the actions (the network read them
    # detached), and the rewards keep theirs.
    imagined_states: list[torch.Tensor] | None = None


def rollout(
    actor_critic: ActorCritic,
    env: ImaginationEnv,
    current: torch.Tensor,
    state: State,
    horizon: int,
    generator: torch.Generator | None = None,
    reparameterize: bool = False,
) -> Rollout:
    """Act for ``horizon`` steps in ``env`` (already reset; ``current`` are its frames' tokens ``(B, K)``) from the
    actor-critic's recurrent ``state``. Gradients flow through the actor-critic's outputs (the training step);
    actions are sampled from the detached policy, with ``generator`` where given. A network that reads
    proprioception reads the imagined state (the world model's, decoded), starting from the primed one.

    ``reparameterize`` (box actions, a differentiable ``env``): the draws are ``mean + std * noise`` with gradient
    to the policy, and the imagined rewards and states keep the graph back to them (dynamics gradients, Dreamer's
    actor); the network reads the states detached, as Dreamer's actor and critic read theirs."""
    tokens, observations, logits, values, actions, rewards, ends = [current], [], [], [], [], [], []
    log_probs, entropies = [], []
    proprio = env.current_state() if actor_critic.reads_state else None
    states = [proprio] if proprio is not None else None
    imagined_states = [proprio] if reparameterize and proprio is not None else None
    for t in range(horizon + 1):
        observation = current if actor_critic.reads_tokens else env.frames(current)
        out = actor_critic(observation, state, proprio)
        observations.append(observation)
        values.append(out.value)
        if t == horizon:
            break
        policy = actor_critic.policy(out.logits)
        with torch.set_grad_enabled(reparameterize and torch.is_grad_enabled()):  # else the draw carries no gradient
            drawn = policy.sample(generator)
        step = env.step(policy.to_env(drawn))
        action = drawn.detach()  # log_prob and entropy below carry the policy's own gradient
        logits.append(out.logits)
        actions.append(action)
        log_probs.append(policy.log_prob(action))
        entropies.append(policy.entropy(action))
        rewards.append(step.reward)
        ends.append(step.terminated)
        state, current = out.state, step.tokens
        if states is not None:
            proprio = step.state
            if imagined_states is not None:
                imagined_states.append(proprio)
                proprio = proprio.detach()
            states.append(proprio)
        tokens.append(current)
    return Rollout(
        tokens,
        observations,
        torch.stack(logits, 1),
        torch.stack(values, 1),
        torch.stack(actions, 1),
        torch.stack(rewards, 1),
        torch.stack(ends, 1),
        torch.stack(log_probs, 1),
        torch.stack(entropies, 1),
        states,
        imagined_states,
    )
