"""The agent acting in real environments: frames -> tokenizer -> actor-critic -> actions, a batch at a time."""

from __future__ import annotations

import numpy as np
import torch

from iris_wm.agent.actor_critic import ActorCritic
from iris_wm.agent.rollout import observe


class AgentPolicy:
    """A batched policy over real frames that keeps each environment's recurrent state between calls.

    The actor-critic reads what it reads in imagination: the tokens of the frame, or the frame the tokenizer
    reconstructs from them (IRIS). ``temperature`` divides the logits, or scales a box policy's spread (0: the most
    likely action; IRIS evaluates at 0.5); with probability ``epsilon`` an action is uniformly random instead.
    """

    def __init__(
        self,
        actor_critic: ActorCritic,
        tokenizer,
        temperature: float = 1.0,
        epsilon: float = 0.0,
        generator: torch.Generator | None = None,
    ):
        if temperature < 0 or not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"temperature must be >= 0 and epsilon in [0, 1]; got {temperature} and {epsilon}.")
        self.actor_critic, self.tokenizer = actor_critic, tokenizer
        self.temperature, self.epsilon = temperature, epsilon
        self.generator = generator
        self.state = None

    @property
    def device(self) -> torch.device:
        return next(self.actor_critic.parameters()).device

    def reset(self, batch: int) -> None:
        self.state = self.actor_critic.initial_state(batch, self.device)

    @torch.no_grad()
    def act(
        self,
        frames: np.ndarray | torch.Tensor,
        new_episode: np.ndarray | torch.Tensor,
        states: np.ndarray | torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``frames uint8 (B, 3, H, W)`` and ``new_episode (B,)`` (reset that environment's state), and the
        proprioception ``(B, S)`` for a network that reads it -> actions ``(B,)`` (discrete) or ``(B, D)`` (box)."""
        frames = torch.as_tensor(frames, device=self.device)
        keep = ~torch.as_tensor(new_episode, device=self.device, dtype=torch.bool)
        if self.state is None or self.state[0].shape[0] != frames.shape[0]:
            self.reset(frames.shape[0])
        state = ActorCritic.reset_state(self.state, keep)
        proprio = None if states is None else torch.as_tensor(states, device=self.device).float()
        observed = observe(self.actor_critic, self.tokenizer, self.tokenizer.encode(frames))
        out = self.actor_critic(observed, state, proprio)
        self.state = out.state
        policy = self.actor_critic.policy(out.logits)
        actions = policy.to_env(policy.sample(self.generator, self.temperature))
        if self.epsilon > 0:
            B = actions.shape[0]
            explore = torch.rand(B, device=self.device, generator=self.generator) < self.epsilon
            if self.actor_critic.config.continuous:
                low, high = self.actor_critic.action_low, self.actor_critic.action_high
                uniform = low + torch.rand(actions.shape, device=self.device, generator=self.generator) * (high - low)
                actions = torch.where(explore[:, None], uniform, actions)
            else:
                uniform = torch.randint(0, out.logits.shape[-1], (B,), device=self.device, generator=self.generator)
                actions = torch.where(explore, uniform, actions)
        return actions
