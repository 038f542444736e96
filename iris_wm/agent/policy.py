"""The agent acting in real environments: frames -> tokenizer -> actor-critic -> actions, a batch at a time."""

from __future__ import annotations

import numpy as np
import torch

from iris_wm.agent.actor_critic import ActorCritic
from iris_wm.agent.rollout import observe


class AgentPolicy:
    """A batched policy over real frames that keeps each environment's recurrent state between calls.

    The actor-critic reads what it reads in imagination: the tokens of the frame, or the frame the tokenizer
    reconstructs from them (IRIS). ``temperature`` divides the logits (0: the most likely action; IRIS
    evaluates at 0.5); with probability ``epsilon`` an action is uniformly random instead.
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
    def act(self, frames: np.ndarray | torch.Tensor, new_episode: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``frames uint8 (B, 3, H, W)`` and ``new_episode (B,)`` (reset that environment's state) -> ``(B,)``."""
        frames = torch.as_tensor(frames, device=self.device)
        keep = ~torch.as_tensor(new_episode, device=self.device, dtype=torch.bool)
        if self.state is None or self.state[0].shape[0] != frames.shape[0]:
            self.reset(frames.shape[0])
        state = ActorCritic.reset_state(self.state, keep)
        out = self.actor_critic(observe(self.actor_critic, self.tokenizer, self.tokenizer.encode(frames)), state)
        self.state = out.state
        logits = out.logits.float()
        if self.temperature == 0:
            actions = logits.argmax(-1)
        else:
            probs = (logits / self.temperature).softmax(-1)
            actions = torch.multinomial(probs, 1, generator=self.generator).squeeze(-1)
        if self.epsilon > 0:
            B, A = logits.shape
            uniform = torch.randint(0, A, (B,), device=self.device, generator=self.generator)
            explore = torch.rand(B, device=self.device, generator=self.generator) < self.epsilon
            actions = torch.where(explore, uniform, actions)
        return actions
