"""What the actor-critic learns from an imagined rollout (IRIS section 2.3, appendix B).

lambda-returns (gamma 0.995, lambda 0.95) from the imagined rewards and ends and the critic's values (or an EMA
target critic's); REINFORCE with the value as baseline, an entropy bonus, and value regression. Steps after the
first imagined episode end never happened and are masked out.

For box actions the actor can instead follow dynamics gradients (Dreamer's actor, ``actor_gradient: dynamics``):
it maximises the lambda-returns themselves, differentiated through the reparameterised actions, the world model's
imagined states and rewards, and the target critic's values of those states.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

import torch

from iris_wm.agent.returns import lambda_returns
from iris_wm.agent.rollout import Rollout
from iris_wm.envs.imagination import ImaginationConfig
from iris_wm.runtime.checks import at_least, within
from iris_wm.runtime.errors import ConfigError


@dataclass
class AgentObjective:
    """What the actor-critic learns from (defaults: IRIS)."""

    horizon: int = 20
    """Imagined steps per trajectory (IRIS: 20)."""
    gamma: float = 0.995
    """Discount factor."""
    lambda_: float = 0.95
    """lambda of the lambda-returns."""
    entropy_weight: float = 0.001
    """Weight of the policy's entropy bonus."""
    value_weight: float = 1.0
    """Weight of the value regression."""
    target_critic_decay: float | None = None
    """EMA decay of a target critic whose values give the returns (None: the critic itself, as IRIS)."""
    return_scale_decay: float | None = field(default=None, metadata={"added": "issue 19"})
    """DreamerV3's return normalisation: advantages are divided by ``max(1, S)``, ``S`` a moving average (this decay;
    DreamerV3: 0.99) of the spread of the lambda-returns from their 5th to their 95th percentile, so the policy's
    step does not grow with the reward's scale while small returns are left as they are. None: off (IRIS)."""
    imagination: ImaginationConfig = field(default_factory=ImaginationConfig.iris)
    """How imagined steps are drawn (default: IRIS's, every outcome sampled)."""
    actor_gradient: Literal["reinforce", "dynamics"] = field(default="reinforce", metadata={"added": "issue 19"})
    """``reinforce`` (IRIS, DreamerV3) or, for box actions, ``dynamics``: the returns differentiated through the
    reparameterised actions and the differentiable imagination (Dreamer v1/v2 for continuous control). Needs a target
    critic (``target_critic_decay``), whose values of the imagined states carry the gradient without the actor
    pushing the critic it is judged by."""

    def __post_init__(self):
        if isinstance(self.imagination, dict):
            self.imagination = ImaginationConfig(**self.imagination)
        at_least(1, "objective", horizon=self.horizon)
        within(0, 1, "objective", gamma=self.gamma, lambda_=self.lambda_, target_critic_decay=self.target_critic_decay)
        within(0, 1, "objective", return_scale_decay=self.return_scale_decay)
        at_least(0, "objective", entropy_weight=self.entropy_weight, value_weight=self.value_weight)
        if self.actor_gradient not in ("reinforce", "dynamics"):
            got = self.actor_gradient
            raise ConfigError(f"objective: actor_gradient must be 'reinforce' or 'dynamics'; got {got!r}.")
        if self.actor_gradient == "dynamics":
            if self.target_critic_decay is None:
                raise ConfigError(
                    "objective: dynamics gradients judge the actor by a target critic; set target_critic_decay "
                    "(e.g. 0.98)."
                )
            # A new config (the one given may be shared), checked again as one: a differentiable imagination is fp32.
            self.imagination = dataclasses.replace(self.imagination, differentiable=True)


# Checkpoints are read with torch.load(weights_only=True); the agent's hyperparameters can hold this dataclass.
torch.serialization.add_safe_globals([AgentObjective])


@dataclass
class AgentLosses:
    total: torch.Tensor
    policy: torch.Tensor
    value: torch.Tensor
    entropy: torch.Tensor
    imagined_return: torch.Tensor  # mean undiscounted imagined reward per trajectory, up to its end
    end_rate: torch.Tensor  # share of trajectories that ended within the horizon
    mean_value: torch.Tensor


def alive_mask(ends: torch.Tensor) -> torch.Tensor:
    """``(B, H)``: True for the steps up to and including the first end (a step after an end never happened)."""
    ended_before = torch.cumsum(ends.long(), dim=1) - ends.long()
    return ended_before == 0


def update_return_scale(scale: torch.Tensor, returns: torch.Tensor, alive: torch.Tensor, decay: float) -> None:
    """Move ``scale`` (a 0-d tensor; negative: not yet set) towards the 5th-to-95th percentile spread of the
    ``returns`` of the steps that happened, in place."""
    spread = torch.quantile(returns[alive.bool()].float(), torch.tensor([0.05, 0.95], device=returns.device)).diff()[0]
    scale.copy_(torch.where(scale < 0, spread, decay * scale + (1 - decay) * spread))


def agent_losses(
    rollout: Rollout, target_values: torch.Tensor, objective: AgentObjective, return_scale: torch.Tensor | None = None
) -> AgentLosses:
    """The losses of one rollout; ``target_values (B, H + 1)`` give the returns (the critic's own, detached, or a
    target critic's; for dynamics gradients, the target critic's with the graph back to the actions). With return
    normalisation, ``return_scale`` is its running spread, updated here."""
    ends, gamma, lambda_ = rollout.ends, objective.gamma, objective.lambda_
    differentiable = lambda_returns(rollout.rewards.float(), target_values.float(), ends, gamma, lambda_)
    returns = differentiable.detach()
    alive = alive_mask(rollout.ends).float()
    count = alive.sum().clamp_min(1.0)
    chosen, entropies = rollout.log_probs.float(), rollout.entropies.float()  # the policy head's own distribution
    values = rollout.values[:, :-1].float()
    scale = torch.ones((), device=values.device)
    if objective.return_scale_decay is not None and return_scale is not None:
        update_return_scale(return_scale, returns, alive, objective.return_scale_decay)
        scale = return_scale.clamp_min(1.0)
    if objective.actor_gradient == "dynamics":
        policy = -(differentiable / scale * alive).sum() / count
    else:
        advantage = (returns - values).detach() / scale
        policy = -(chosen * advantage * alive).sum() / count
    entropy = (entropies * alive).sum() / count
    value = ((values - returns).pow(2) * alive).sum() / count
    total = policy - objective.entropy_weight * entropy + objective.value_weight * value
    return AgentLosses(
        total,
        policy,
        value,
        entropy,
        (rollout.rewards.detach() * alive).sum(1).mean(),
        rollout.ends.any(1).float().mean(),
        values.mean().detach(),
    )
