"""Planning with the world model (model-predictive control): at every real step, action sequences are scored in
imagination and the first action of the best is taken; the plan is made again at the next step.

- **Discrete actions, the cross-entropy method**: per-step categorical distributions over the actions, refined
  ``iterations`` times towards the ``elites`` best of ``samples`` drawn sequences (mixed with ``prior_samples``
  from a prior, e.g. the actor, drawn once per plan). Starts uniform, or from the last plan shifted by one step.
- **Box actions, MPPI** (TD-MPC2's defaults): a per-step Gaussian over the box scaled to [-1, 1], refined
  ``iterations`` times to the mean and spread of the elites weighted by ``exp(temperature * (score - best))``,
  its spread kept within [``min_std``, ``max_std``].

A plan needs only ``score(actions) -> (E, N)``: the value of ``N`` sequences ``(E, N, H, ...)`` for each of ``E``
environments. :class:`ImaginedReturns` scores them with a world model, every sequence of every environment in one
batched imagination from that environment's real context: ``sum_t gamma^t r_t`` over the steps before the first
imagined end. Nothing in a plan reads a value back to the host.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from iris_wm.data.spaces import ActionSpace
from iris_wm.envs.imagination import ImaginationConfig, ImaginationEnv
from iris_wm.runtime.checks import at_least, within

Score = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class PlannerConfig:
    samples: int = 512
    """Sequences drawn per iteration (besides the prior's)."""
    elites: int = 64
    """Best sequences the distributions move towards."""
    prior_samples: int = 24
    """Sequences from the prior (the actor), drawn once per plan and scored in every iteration (0: none). The
    caller draws them (:meth:`Planner.plan`'s ``prior``); :class:`MPCPolicy` has no actor prior yet."""
    horizon: int = 3
    """Steps a sequence plans ahead."""
    iterations: int = 6
    temperature: float = 0.5
    """MPPI: elites weighted by exp(temperature * (score - best score))."""
    min_std: float = 0.05
    max_std: float = 2.0
    smoothing: float = 0.1
    """CEM: share of the previous distribution kept at each update (the rest is the elites' frequencies)."""
    warm_start: bool = True
    """Start from the last plan shifted by one step (uniform / mean 0 at the new last step)."""
    gamma: float = 0.99
    """Discount of the imagined rewards a sequence is scored by."""

    def __post_init__(self):
        at_least(1, "planner", samples=self.samples, elites=self.elites, horizon=self.horizon)
        at_least(1, "planner", iterations=self.iterations)
        at_least(0, "planner", prior_samples=self.prior_samples, temperature=self.temperature)
        within(0, 1, "planner", smoothing=self.smoothing, gamma=self.gamma)
        if self.elites > self.samples + self.prior_samples:
            raise ValueError(
                f"planner: elites ({self.elites}) must not exceed the sequences scored "
                f"({self.samples} + {self.prior_samples} from the prior)."
            )
        if not 0 < self.min_std <= self.max_std:
            raise ValueError(f"planner: need 0 < min_std <= max_std; got {self.min_std} and {self.max_std}.")


class Planner:
    """Plans for ``E`` environments at once; ``num_actions`` for discrete actions, or the box's ``low`` and ``high``
    (``(A,)`` tensors) for continuous ones."""

    def __init__(
        self,
        config: PlannerConfig,
        num_actions: int | None = None,
        low: torch.Tensor | None = None,
        high: torch.Tensor | None = None,
    ):
        if (num_actions is None) == (low is None or high is None):
            raise ValueError("Give a planner num_actions (discrete) or low and high (a box), not both or neither.")
        self.config, self.num_actions = config, num_actions
        self.low, self.high = low, high
        self.previous: torch.Tensor | None = None  # the last plan's distribution (probabilities, or the mean)

    def reset(self) -> None:
        """Forget the last plan (a new episode starts everywhere)."""
        self.previous = None

    def forget(self, where: torch.Tensor) -> None:
        """Forget the last plan of the environments where ``where (E,)`` is True (their episode starts anew)."""
        if self.previous is not None:
            fresh = self._initial(self.previous.shape[0], self.previous.device)
            self.previous = torch.where(where.view(-1, 1, 1).to(fresh.device), fresh, self.previous)

    def _initial(self, envs: int, device) -> torch.Tensor:
        H = self.config.horizon
        if self.num_actions is not None:
            return torch.full((envs, H, self.num_actions), 1.0 / self.num_actions, device=device)
        return torch.zeros(envs, H, len(self.low), device=device)

    def _start(self, envs: int, device) -> torch.Tensor:
        start = self._initial(envs, device)
        if self.config.warm_start and self.previous is not None and self.previous.shape[0] == envs:
            start[:, :-1] = self.previous[:, 1:]
        return start

    def to_env(self, u: torch.Tensor) -> torch.Tensor:
        """Box actions in [-1, 1] -> the box."""
        low, high = self.low.to(u.device), self.high.to(u.device)
        return low + (u.clamp(-1, 1) + 1) / 2 * (high - low)

    def to_unit(self, a: torch.Tensor) -> torch.Tensor:
        low, high = self.low.to(a.device), self.high.to(a.device)
        return ((a - low) / (high - low) * 2 - 1).clamp(-1, 1)

    @torch.no_grad()
    def plan(
        self,
        score: Score,
        envs: int,
        prior: torch.Tensor | None = None,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The first action of the best plan for each of ``envs`` environments: ``(E,)`` ids or ``(E, A)``.
        ``prior`` ``(E, P, H, ...)`` are sequences from a prior (in the environment's units)."""
        if self.num_actions is not None:
            return self._cem(score, envs, prior, device, generator)
        return self._mppi(score, envs, prior, device, generator)

    def _elites(self, candidates: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        top = values.topk(min(self.config.elites, values.shape[1]), dim=1)
        index = top.indices.view(*top.indices.shape, *([1] * (candidates.dim() - 2)))
        return torch.take_along_dim(candidates, index, dim=1), top.values

    def _cem(self, score, envs, prior, device, generator):
        cfg, n = self.config, self.num_actions
        probabilities = self._start(envs, device)
        best_value = torch.full((envs,), -torch.inf, device=device)
        best = torch.zeros(envs, dtype=torch.long, device=device)
        fixed = None if prior is None else prior.to(device).long()
        for _ in range(cfg.iterations):
            flat = probabilities.repeat_interleave(cfg.samples, 0).reshape(-1, n)
            drawn = torch.multinomial(flat, 1, generator=generator).view(envs, cfg.samples, cfg.horizon)
            candidates = drawn if fixed is None else torch.cat([fixed, drawn], 1)
            values = score(candidates)
            elites, elite_values = self._elites(candidates, values)
            counts = torch.nn.functional.one_hot(elites, n).float().mean(1)  # (E, H, n)
            probabilities = cfg.smoothing * probabilities + (1 - cfg.smoothing) * counts
            better = elite_values[:, 0] > best_value
            best = torch.where(better, elites[:, 0, 0], best)
            best_value = torch.where(better, elite_values[:, 0], best_value)
        self.previous = probabilities
        return best

    def _mppi(self, score, envs, prior, device, generator):
        cfg, A = self.config, len(self.low)
        mean = self._start(envs, device)
        std = torch.full_like(mean, cfg.max_std)
        fixed = None if prior is None else self.to_unit(prior.to(device).float())
        for _ in range(cfg.iterations):
            noise = torch.randn(envs, cfg.samples, cfg.horizon, A, device=device, generator=generator)
            drawn = (mean[:, None] + std[:, None] * noise).clamp(-1, 1)
            candidates = drawn if fixed is None else torch.cat([fixed, drawn], 1)
            values = score(self.to_env(candidates))
            elites, elite_values = self._elites(candidates, values)
            weights = torch.exp(cfg.temperature * (elite_values - elite_values[:, :1]))
            weights = (weights / weights.sum(1, keepdim=True))[..., None, None]  # (E, k, 1, 1)
            mean = (weights * elites).sum(1)
            std = (weights * (elites - mean[:, None]) ** 2).sum(1).sqrt().clamp(cfg.min_std, cfg.max_std)
        self.previous = mean
        return self.to_env(elites[:, 0, 0])


class ImaginedReturns:
    """``score`` for a :class:`Planner` from a world model: set each environment's real context, then every call
    rolls all sequences out in one batched imagination from it (greedy by default) and returns
    ``sum_t gamma^t r_t`` over the steps up to the first imagined end."""

    def __init__(self, world_model, gamma: float = 0.99, config: ImaginationConfig | None = None):
        within(0, 1, "planner", gamma=gamma)
        self.env = ImaginationEnv(world_model, config=config or ImaginationConfig(temperature=0.0))
        self.gamma = gamma
        self.context = None

    def set_context(
        self, tokens: torch.Tensor, actions: torch.Tensor | None = None, states: torch.Tensor | None = None
    ) -> None:
        """The last ``C`` real steps of each of ``E`` environments, as :meth:`ImaginationEnv.reset` takes them."""
        self.context = (tokens, actions, states)

    def __call__(self, actions: torch.Tensor) -> torch.Tensor:
        if self.context is None:
            raise RuntimeError("ImaginedReturns: set_context(...) with the real steps before scoring sequences.")
        E, N, H = actions.shape[:3]
        tokens, past, states = (None if x is None else x.repeat_interleave(N, 0) for x in self.context)
        self.env.reset(tokens, past, states)
        flat = actions.reshape(E * N, H, *actions.shape[3:])
        total = torch.zeros(E * N, device=self.env.device)
        alive = torch.ones_like(total)
        for t in range(H):
            step = self.env.step(flat[:, t])
            total = total + self.gamma**t * alive * step.reward.float()
            alive = alive * (~step.terminated).float()
        return total.view(E, N)


class MPCPolicy:
    """Acting by planning: each real step, the frame is encoded and every environment's plan is made in the world
    model's imagination, primed with that one real step (as IRIS's imagination is), with its state where the world
    model models one. Same ``act`` as :class:`~iris_wm.agent.policy.AgentPolicy`."""

    def __init__(self, tokenizer, world_model, config: PlannerConfig, generator: torch.Generator | None = None):
        self.tokenizer, self.world_model, self.generator = tokenizer, world_model, generator
        self.config = config
        self.scorer = ImaginedReturns(world_model, config.gamma)
        self.planner: Planner | None = None

    def bind(self, space: ActionSpace) -> MPCPolicy:
        """The real environment's action space: discrete, or a box whose bounds the plans keep within."""
        if space.is_discrete:
            self.planner = Planner(self.config, num_actions=space.n)
        else:
            low, high = (torch.tensor(bound, dtype=torch.float32) for bound in (space.low, space.high))
            self.planner = Planner(self.config, low=low, high=high)
        return self

    @property
    def device(self) -> torch.device:
        return self.scorer.env.device

    @torch.no_grad()
    def act(self, frames, new_episode, states=None) -> torch.Tensor:
        if self.planner is None:
            raise RuntimeError("MPCPolicy: bind(...) it to the environment's action space before acting.")
        frames = torch.as_tensor(frames, device=self.device)
        tokens = self.tokenizer.encode(frames)
        self.planner.forget(torch.as_tensor(new_episode, device=self.device, dtype=torch.bool))
        proprio = None if states is None else torch.as_tensor(states, device=self.device).float()[:, None]
        self.scorer.set_context(tokens[:, None], None, proprio)
        return self.planner.plan(self.scorer, len(frames), device=self.device, generator=self.generator)
