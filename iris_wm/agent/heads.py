"""The policy's distribution over actions, one interface for both kinds of action space.

- :class:`DiscretePolicy`: a categorical over ``n`` actions (IRIS).
- :class:`BoxPolicy`: a tanh-squashed Gaussian over a box ``[low, high]``: a Gaussian draw ``u`` per component,
  ``a = low + (tanh(u) + 1) / 2 * (high - low)``. Its log-probability is the Gaussian's with the change of
  variables, ``- sum log(1 - tanh(u)^2) - sum log((high - low) / 2)``, computed from ``u`` (kept as the sampled
  action), never from ``a``, so it stays finite at the bounds. The squashed distribution has no closed-form
  entropy; the bonus is its one-draw estimate at the action taken, ``-log p(a)`` with the draw reparameterised
  (``u = mean + std * eps``, ``eps`` fixed), as SAC's (Haarnoja et al. 2018). The Gaussian's own entropy would
  reward a spread that the tanh folds onto the bounds: a policy pushed towards bang-bang noise, not towards
  trying every action (docs/LOG.md, issue 19).

Sampling takes a ``torch.Generator``, as the categorical draw does, so a run is reproducible from its seeds.
"""

from __future__ import annotations

import math

import torch

LOG_STD_RANGE = (-5.0, 1.0)
"""The Gaussian's log standard deviation is squashed into this range (std 0.007 to 2.7 before the tanh)."""
INITIAL_LOG_STD = 0.0
"""The log standard deviation of a raw output of 0: std 1 before the tanh. (A new ActorCritic's head starts its raw
outputs at 0.55, so at log std 0.63, std 1.9: docs/LOG.md, issue 19.)"""
_SHIFT = math.atanh(2 * (INITIAL_LOG_STD - LOG_STD_RANGE[0]) / (LOG_STD_RANGE[1] - LOG_STD_RANGE[0]) - 1)


class DiscretePolicy:
    """A categorical over actions from ``logits (B, n)``; sampled actions are ids ``(B,)``."""

    def __init__(self, logits: torch.Tensor):
        self.logits = logits.float()

    def sample(self, generator: torch.Generator | None = None, temperature: float = 1.0) -> torch.Tensor:
        if temperature == 0:
            return self.mode()
        probs = (self.logits / temperature).softmax(-1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)

    def to_env(self, sampled: torch.Tensor) -> torch.Tensor:
        return sampled

    def mode(self) -> torch.Tensor:
        return self.logits.argmax(-1)

    def log_prob(self, sampled: torch.Tensor) -> torch.Tensor:
        return self.logits.log_softmax(-1).gather(-1, sampled[..., None].long()).squeeze(-1)

    def entropy(self, sampled: torch.Tensor | None = None) -> torch.Tensor:
        """The categorical's entropy (exact; ``sampled`` is not needed)."""
        log_probs = self.logits.log_softmax(-1)
        return -(log_probs.exp() * log_probs).sum(-1)


class BoxPolicy:
    """A tanh-squashed Gaussian over ``[low, high]`` from ``params (B, 2 D)``: the means, then the raw log standard
    deviations. Sampled actions are the pre-squash draws ``u (B, D)``; :meth:`to_env` maps them into the box."""

    def __init__(self, params: torch.Tensor, low: torch.Tensor, high: torch.Tensor):
        mean, raw = params.float().chunk(2, dim=-1)
        lo, hi = LOG_STD_RANGE
        self.mean = mean
        self.log_std = lo + (hi - lo) * (torch.tanh(raw + _SHIFT) + 1) / 2
        self.low, self.high = low.to(mean), high.to(mean)

    def sample(self, generator: torch.Generator | None = None, temperature: float = 1.0) -> torch.Tensor:
        if temperature == 0:
            return self.mean
        noise = torch.randn(self.mean.shape, device=self.mean.device, generator=generator)
        return self.mean + temperature * self.log_std.exp() * noise

    def to_env(self, sampled: torch.Tensor) -> torch.Tensor:
        """Pre-squash draws ``u`` -> actions in the box."""
        return self.low + (torch.tanh(sampled) + 1) / 2 * (self.high - self.low)

    def mode(self) -> torch.Tensor:
        """The squashed mean's pre-squash value (``to_env`` of it is the action taken at temperature 0)."""
        return self.mean

    def log_prob(self, sampled: torch.Tensor) -> torch.Tensor:
        """Log density of the box action ``to_env(sampled)``, summed over components."""
        u = sampled.float()
        gaussian = -0.5 * ((u - self.mean) / self.log_std.exp()).pow(2) - self.log_std - 0.5 * math.log(2 * math.pi)
        return (gaussian - self._log_jacobian(u)).sum(-1)

    def _log_jacobian(self, u: torch.Tensor) -> torch.Tensor:
        """``log |da/du|`` per component: ``log(1 - tanh(u)^2)``, written stably as ``2 (log 2 - u - softplus(-2u))``,
        plus ``log((high - low) / 2)``."""
        squash = 2 * (math.log(2) - u - torch.nn.functional.softplus(-2 * u))
        return squash + torch.log((self.high - self.low) / 2)

    def gaussian_entropy(self) -> torch.Tensor:
        """The pre-squash Gaussian's entropy, summed over components."""
        return (self.log_std + 0.5 * math.log(2 * math.pi * math.e)).sum(-1)

    def entropy(self, sampled: torch.Tensor) -> torch.Tensor:
        """The squashed distribution's entropy estimated at the draw ``sampled`` (pre-squash ``u``), summed over
        components: the Gaussian's entropy plus ``log |da/du|`` at ``u`` re-expressed as ``mean + std * eps``, so the
        estimate's gradient reaches both (its mean over draws is the entropy of the actions in the box)."""
        eps = ((sampled.float() - self.mean) / self.log_std.exp()).detach()
        return self.gaussian_entropy() + self._log_jacobian(self.mean + self.log_std.exp() * eps).sum(-1)
