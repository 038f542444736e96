"""`Agent`: the models that act together, a tokenizer, a world model and an actor-critic, checked to fit.

What evaluation, imagination, the online loop and the Hub pass around instead of loose tuples. Loading one from a
checkpoint, a pretrained folder or the Hub is ``iris_wm.hub.load_agent``; saving it, ``iris_wm.hub.save_agent``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from iris_wm.agent.actor_critic import ActorCritic
from iris_wm.agent.policy import AgentPolicy
from iris_wm.data.sizes import check_sizes
from iris_wm.envs.imagination import ImaginationConfig, ImaginationEnv
from iris_wm.runtime.errors import ConfigError
from sequence_model.world_model import WorldModel
from tokenizer.model import Tokenizer

COMPONENTS = ("tokenizer", "world_model", "actor_critic")


@dataclass
class Agent:
    """A tokenizer with the world model trained on its tokens and the actor-critic trained in that world model's
    imagination. The world model or the actor-critic may be absent (imagining recorded actions needs no
    actor-critic; playing the real game needs no world model); the sizes of those present must agree."""

    tokenizer: Tokenizer
    world_model: WorldModel | None = None
    actor_critic: ActorCritic | None = None

    def __post_init__(self):
        check_sizes(tokenizer=self.tokenizer, world_model=self.world_model, actor_critic=self.actor_critic)

    @property
    def components(self) -> dict[str, torch.nn.Module]:
        """The models present, by name (``tokenizer``, ``world_model``, ``actor_critic``)."""
        return {name: getattr(self, name) for name in COMPONENTS if getattr(self, name) is not None}

    def to(self, device: torch.device | str) -> Agent:
        for model in self.components.values():
            model.to(device)
        return self

    def eval(self) -> Agent:
        for model in self.components.values():
            model.eval()
        return self

    def _need(self, name: str, use: str):
        model = getattr(self, name)
        if model is None:
            raise ConfigError(f"This agent has no {name.replace('_', ' ')}, which {use} needs.")
        return model

    def policy(self, temperature: float = 1.0, epsilon: float = 0.0, generator: torch.Generator | None = None):
        """The batched policy over real frames (:class:`~iris_wm.agent.policy.AgentPolicy`)."""
        actor_critic = self._need("actor_critic", "acting")
        return AgentPolicy(actor_critic, self.tokenizer, temperature, epsilon, generator)

    def imagination(self, config: ImaginationConfig | None = None, generator: torch.Generator | None = None):
        """A batched imagination environment over this agent's world model, decoding with its tokenizer."""
        return ImaginationEnv(self._need("world_model", "imagination"), self.tokenizer, config, generator)
