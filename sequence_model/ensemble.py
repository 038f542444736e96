"""An ensemble of world models of one configuration (different seeds), run as one world model.

:class:`WorldModelEnsemble` has the interface the imagination drives (``forward`` with a cache, ``interleave``,
``observation_ids``, ``restrict``, ``expected_reward``, ``transformer.new_cache``): every member reads the same
ids with its own KV cache, and the output's logits are those of the members' mixture (the log of their mean
probabilities), so imagination samples the ensemble's predictive distribution and every member sees the same
trajectory. The output also carries the members' disagreement about each prediction (:func:`mutual_information`),
``H(mean_m p_m) - mean_m H(p_m)`` (the Jensen-Shannon divergence of the M distributions with equal
weights), which is zero where they agree and grows where the data did not pin the prediction down (Lakshminarayanan
et al. 2017; Plan2Explore's disagreement, Sekar et al. 2020).

The members run one after the other, each a batched call over the whole batch: at the sizes here each member's step
is a few large matrix products, so stacking their weights into one call would save little (`make bench-planning`
measures an ensemble step against M single steps).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sequence_model.world_model import WorldModel, WorldModelConfig


def mixture_and_information(member_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(M, ..., V)`` logits of ``M`` members -> the log-probabilities of their mixture ``(..., V)`` (the log of
    their mean probabilities, floored at 1e-30, far below anything drawn) and their mutual information ``(...)``:
    the entropy of the mean distribution minus the mean entropy (nats; in ``[0, log M]``), in fp32, from one pass."""
    log_p = member_logits.float().log_softmax(-1)
    p = log_p.exp()
    mean_entropy = (p * log_p).sum(-1).mean(0).neg_()
    mixture = p.mean(0).clamp_min_(1e-30).log_()
    information = (mixture.exp() * mixture).sum(-1).neg_().sub_(mean_entropy).clamp_min_(0.0)
    return mixture, information


def mutual_information(member_logits: torch.Tensor) -> torch.Tensor:
    """The members' mutual information alone (see :func:`mixture_and_information`)."""
    return mixture_and_information(member_logits)[1]


@dataclass
class EnsembleConfig:
    """What a saved ensemble is: ``size`` world models of the ``member`` configuration."""

    member: WorldModelConfig
    size: int = 5

    def __post_init__(self):
        if isinstance(self.member, dict):
            self.member = WorldModelConfig(**self.member)
        if self.size < 2:
            raise ValueError(f"An ensemble needs at least 2 world models; got size {self.size}.")


# Checkpoints are read with torch.load(weights_only=True); hyperparameters can hold this dataclass.
torch.serialization.add_safe_globals([EnsembleConfig])


@dataclass
class EnsembleOutput:
    """A :class:`~sequence_model.world_model.WorldModelOutput` of the mixture, with the members' disagreement (mutual
    information, nats) about each prediction."""

    observation_logits: torch.Tensor  # (B, P, V) of the mixture (log-probabilities, fp32)
    reward_logits: torch.Tensor  # (B, A, R)
    termination_logits: torch.Tensor  # (B, A, 2)
    observation_information: torch.Tensor  # (B, P)
    reward_information: torch.Tensor  # (B, A)
    termination_information: torch.Tensor  # (B, A)


class EnsembleCache:
    """One KV cache per member, filled together: ``size``, ``max_tokens`` and ``buffer`` are the first member's."""

    def __init__(self, caches: list):
        self.caches = caches

    @property
    def size(self) -> int:
        return self.caches[0].size

    @property
    def max_tokens(self) -> int:
        return self.caches[0].max_tokens

    @property
    def buffer(self) -> torch.Tensor:
        return self.caches[0].buffer

    def reset(self) -> None:
        for cache in self.caches:
            cache.reset()


class _Transformers:
    """``transformer.new_cache`` of the ensemble: a cache for each member."""

    def __init__(self, ensemble: WorldModelEnsemble):
        self.ensemble = ensemble

    def new_cache(self, batch: int, device=None, dtype=torch.float32, differentiable: bool = False) -> EnsembleCache:
        members = self.ensemble.members
        return EnsembleCache([m.transformer.new_cache(batch, device, dtype, differentiable) for m in members])


class WorldModelEnsemble(nn.Module):
    """``M >= 2`` world models of one configuration, run as one (see the module's docstring)."""

    def __init__(self, members: EnsembleConfig | list[WorldModel] | nn.ModuleList):
        super().__init__()
        if isinstance(members, EnsembleConfig):
            members = [WorldModel(members.member) for _ in range(members.size)]
        if len(members) < 2:
            raise ValueError(f"An ensemble needs at least 2 world models; got {len(members)}.")
        first = members[0].config
        for i, member in enumerate(members[1:], 1):
            if member.config != first:
                raise ValueError(
                    f"Ensemble member {i} has another configuration than member 0: train every member with the same "
                    "world-model config and a different seed."
                )
        if first.state_dim:
            raise ValueError("Ensembles of world models of proprioception are not supported yet: use frame tokens.")
        self.members = nn.ModuleList(members)

    @property
    def saved_config(self) -> EnsembleConfig:
        """The configuration a saved ensemble is rebuilt from (``config`` is a member's, which imagination reads)."""
        return EnsembleConfig(self.config, self.size)

    @property
    def config(self) -> WorldModelConfig:
        return self.members[0].config

    @property
    def size(self) -> int:
        return len(self.members)

    @property
    def transformer(self) -> _Transformers:
        return _Transformers(self)

    @property
    def state_codec(self):
        return None

    def interleave(self, *args, **kwargs):
        return self.members[0].interleave(*args, **kwargs)

    def observation_ids(self, *args, **kwargs):
        return self.members[0].observation_ids(*args, **kwargs)

    def restrict(self, logits: torch.Tensor, first_slot: int) -> torch.Tensor:
        return self.members[0].restrict(logits, first_slot)

    def expected_reward(self, reward_logits: torch.Tensor) -> torch.Tensor:
        return self.members[0].expected_reward(reward_logits)

    def forward(
        self,
        ids: torch.Tensor,
        cache: EnsembleCache | None = None,
        actions: torch.Tensor | None = None,
        values: torch.Tensor | None = None,
    ) -> EnsembleOutput:
        caches = cache.caches if cache is not None else [None] * self.size
        outputs = [member(ids, c, actions, values) for member, c in zip(self.members, caches, strict=True)]
        observation, observation_mi = mixture_and_information(torch.stack([o.observation_logits for o in outputs]))
        reward, reward_mi = mixture_and_information(torch.stack([o.reward_logits for o in outputs]))
        termination, termination_mi = mixture_and_information(torch.stack([o.termination_logits for o in outputs]))
        return EnsembleOutput(observation, reward, termination, observation_mi, reward_mi, termination_mi)
