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
imagined end, plus ``gamma^H V(s_H)`` where an actor-critic's critic reads the imagined steps along (TD-MPC2's
bootstrap); the same actor proposes the prior's sequences by acting in that imagination. The prior is scored once
per plan. Nothing in a plan reads a value back to the host. :class:`~iris_wm.agent.mpc.MPCPolicy` acts with them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from iris_wm.agent.actor_critic import ActorCritic, State
from iris_wm.agent.rollout import rollout
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
    """Sequences from the prior (the actor acting in imagination), drawn and scored once per plan and kept among the
    candidates of every iteration (0: none; :class:`MPCPolicy` draws them where it has an actor-critic)."""
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
    end_penalty: float = 0.0
    """Subtracted (discounted) from a sequence's score at its first predicted end: a lost life on Atari, which the
    world model predicts as an end, otherwise costs a plan only the rewards it no longer sees."""
    model: str = "learned"
    """What sequences are scored in: ``learned``, the agent's world model; ``emulator``, the Atari emulator restored
    from a snapshot of each real environment (a perfect model, to check the planner apart from the world model)."""
    disagreement_penalty: float = 0.0
    """With an ensemble world model: subtracted (discounted) times the members' token disagreement at each imagined
    step, so plans keep to what the members agree on (0: off)."""
    critic: bool = True
    """Add ``gamma^H V(s_H)``, the critic's value after the last imagined step, where there is an actor-critic."""
    expected_rewards: bool = False
    """Score each imagined step by its expected reward (a sign: p(+1) - p(-1)) rather than the likelier one."""
    expected_ends: bool = False
    """Weigh each imagined step by the chance that no end came before it (and count the end penalty by the end's
    chance) rather than by the likelier ends: a risk below one half still counts. In Breakout it teaches the planner
    never to serve the ball (docs/LOG.md, issue 18)."""
    policy_prior: float = 0.0
    """Add this times ``sum_t gamma^t log pi(a_t | s_t)``, the actor's log-probability of each imagined step's
    action, to a sequence's score (discrete actions, with an agent): where the imagined rewards and the critic tell
    sequences apart by less than the actor does, the actor's choice wins, rather than the critic's noise. Without
    it, in Breakout the planner, seeing no reward within its horizon either way, deferred serving the ball for
    hundreds of steps (docs/LOG.md, issue 18)."""
    choose: str = "best"
    """The action taken: ``best``, the first action of the best sequence scored; ``sample``, the first action of an
    elite drawn with probability proportional to ``exp(temperature * (score - best score))`` (TD-MPC2); ``shield``
    (discrete actions, with an agent), the agent's own sampled action unless the best sequence that starts with it
    scores more than ``shield_margin`` below the best one (then the best one's first action): the plan only
    overrules the agent where it foresees a loss, e.g. a lost life with ``end_penalty``."""
    shield_margin: float = 0.5
    """``choose: shield``: how far below the best sequence the agent's action may fall before it is overruled."""

    def __post_init__(self):
        at_least(1, "planner", samples=self.samples, elites=self.elites, horizon=self.horizon)
        at_least(1, "planner", iterations=self.iterations)
        at_least(0, "planner", prior_samples=self.prior_samples, temperature=self.temperature)
        at_least(0, "planner", end_penalty=self.end_penalty, disagreement_penalty=self.disagreement_penalty)
        at_least(0, "planner", policy_prior=self.policy_prior, shield_margin=self.shield_margin)
        within(0, 1, "planner", smoothing=self.smoothing, gamma=self.gamma)
        if self.elites > self.samples + self.prior_samples:
            raise ValueError(
                f"planner: elites ({self.elites}) must not exceed the sequences scored "
                f"({self.samples} + {self.prior_samples} from the prior)."
            )
        if self.model not in ("learned", "emulator"):
            raise ValueError(f"planner: model must be 'learned' or 'emulator'; got {self.model!r}.")
        if self.choose not in ("best", "sample", "shield"):
            raise ValueError(f"planner: choose must be 'best', 'sample' or 'shield'; got {self.choose!r}.")
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
        self.first_values: torch.Tensor | None = None  # discrete: the last plan's best score per first action (E, n)
        self.elites: torch.Tensor | None = None  # discrete: the last plan's elite sequences, best first (E, k, H)

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
        """The first action of the plan for each of ``envs`` environments: ``(E,)`` ids or ``(E, A)``.
        ``prior`` ``(E, P, H, ...)`` are sequences from a prior (in the environment's units), scored once here."""
        fixed = None
        if prior is not None:
            if prior.dim() < 3 or prior.shape[0] != envs or prior.shape[2] != self.config.horizon:
                raise ValueError(
                    f"The prior's sequences must be (envs {envs}, P, horizon {self.config.horizon}, ...); got "
                    f"{tuple(prior.shape)}: draw them with the planner's horizon."
                )
            prior = prior.to(device)
            fixed = (prior.long() if self.num_actions is not None else self.to_unit(prior.float()), score(prior))
        if self.num_actions is not None:
            return self._cem(score, envs, fixed, device, generator)
        return self._mppi(score, envs, fixed, device, generator)

    def _candidates(self, score, drawn, fixed, to_env=None):
        """The drawn sequences after the prior's, with their values (the prior's scored already)."""
        values = score(drawn if to_env is None else to_env(drawn))
        if fixed is None:
            return drawn, values
        return torch.cat([fixed[0], drawn], 1), torch.cat([fixed[1].to(values), values], 1)

    def _elites(self, candidates: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        top = values.topk(min(self.config.elites, values.shape[1]), dim=1)
        index = top.indices.view(*top.indices.shape, *([1] * (candidates.dim() - 2)))
        return torch.take_along_dim(candidates, index, dim=1), top.values

    def _weights(self, elite_values: torch.Tensor) -> torch.Tensor:
        """``(E, k)`` normalised ``exp(temperature * (score - best))`` of the elites (best first)."""
        weights = torch.exp(self.config.temperature * (elite_values - elite_values[:, :1]))
        return weights / weights.sum(1, keepdim=True)

    def _choose(self, elites: torch.Tensor, elite_values: torch.Tensor, generator) -> torch.Tensor:
        """The first step of the elite taken: the best, or one drawn by its weight."""
        if self.config.choose == "best":
            return elites[:, 0, 0]
        pick = torch.multinomial(self._weights(elite_values), 1, generator=generator)[:, 0]  # (E,)
        return elites[torch.arange(len(pick), device=pick.device), pick, 0]

    def _cem(self, score, envs, fixed, device, generator):
        cfg, n = self.config, self.num_actions
        probabilities = self._start(envs, device)
        best_value = torch.full((envs,), -torch.inf, device=device)
        best = torch.zeros(envs, dtype=torch.long, device=device)
        first_values = torch.full((envs, n), -torch.inf, device=device)
        for _ in range(cfg.iterations):
            flat = probabilities.repeat_interleave(cfg.samples, 0).reshape(-1, n)
            drawn = torch.multinomial(flat, 1, generator=generator).view(envs, cfg.samples, cfg.horizon)
            candidates, values = self._candidates(score, drawn, fixed)
            first_values = first_values.scatter_reduce(1, candidates[:, :, 0], values.float(), "amax")
            elites, elite_values = self._elites(candidates, values)
            counts = torch.nn.functional.one_hot(elites, n).float().mean(1)  # (E, H, n)
            probabilities = cfg.smoothing * probabilities + (1 - cfg.smoothing) * counts
            better = elite_values[:, 0] > best_value
            best = torch.where(better, elites[:, 0, 0], best)
            best_value = torch.where(better, elite_values[:, 0], best_value)
        self.previous, self.first_values, self.elites = probabilities, first_values, elites
        return best if cfg.choose != "sample" else self._choose(elites, elite_values, generator)

    def _mppi(self, score, envs, fixed, device, generator):
        cfg, A = self.config, len(self.low)
        mean = self._start(envs, device)
        std = torch.full_like(mean, cfg.max_std)
        for _ in range(cfg.iterations):
            noise = torch.randn(envs, cfg.samples, cfg.horizon, A, device=device, generator=generator)
            drawn = (mean[:, None] + std[:, None] * noise).clamp(-1, 1)
            candidates, values = self._candidates(score, drawn, fixed, self.to_env)
            elites, elite_values = self._elites(candidates, values)
            weights = self._weights(elite_values)[..., None, None]  # (E, k, 1, 1)
            mean = (weights * elites).sum(1)
            std = (weights * (elites - mean[:, None]) ** 2).sum(1).sqrt().clamp(cfg.min_std, cfg.max_std)
        self.previous = mean
        return self.to_env(self._choose(elites, elite_values, generator))


def shield(agent: torch.Tensor, first_values: torch.Tensor, margin: float) -> torch.Tensor:
    """``choose: shield``: the agent's actions ``(E,)`` where the best sequence starting with each scored within
    ``margin`` of the best sequence (or none starting with it was scored: no evidence against it), otherwise the best
    sequence's first action. ``first_values (E, n)``: the best score per first action, -inf where none was drawn."""
    best_value, best_action = first_values.max(1)
    own = first_values.gather(1, agent[:, None].long()).squeeze(1)
    keep = (own >= best_value - margin) | torch.isinf(own)
    return torch.where(keep, agent.long(), best_action)


def check_policy_prior(weight: float, actor_critic: ActorCritic | None) -> None:
    """The actor's log-probabilities in a plan's score need an actor, and one over discrete actions."""
    if weight > 0 and actor_critic is None:
        raise ValueError("planner.policy_prior weighs the actor's log-probabilities: plan with an agent (--agent).")
    if weight > 0 and actor_critic.config.continuous:
        raise ValueError(
            "planner.policy_prior is for discrete actions; a box's plans are squashed, so the actor's density of "
            "them is not defined here. Set --planner.policy_prior 0 (MPPI's prior sequences still come from it)."
        )


class ImaginedReturns:
    """``score`` for a :class:`Planner` from a world model: set each environment's real context, then every call
    rolls all sequences out in one batched imagination from it (greedy by default) and returns
    ``sum_t gamma^t r_t`` over the steps up to the first imagined end (less ``gamma^t end_penalty`` there); with
    ``expected_rewards`` ``r_t`` is the reward's expectation, with ``expected_ends`` each step is weighed by the
    chance that no end came before it and the penalty by the end's chance. With
    an ``actor_critic`` (the agent's), its actor proposes the sequences of :meth:`prior`, and (``bootstrap``) its
    critic reads the imagined steps from its recurrent state at the context's last frame and adds
    ``gamma^H V(s_H)``."""

    def __init__(
        self,
        world_model,
        gamma: float = 0.99,
        config: ImaginationConfig | None = None,
        actor_critic: ActorCritic | None = None,
        tokenizer=None,
        bootstrap: bool = True,
        end_penalty: float = 0.0,
        disagreement_penalty: float = 0.0,
        expected_rewards: bool = False,
        expected_ends: bool = False,
        policy_prior: float = 0.0,
    ):
        within(0, 1, "planner", gamma=gamma)
        check_policy_prior(policy_prior, actor_critic)
        decodes = actor_critic is not None and not actor_critic.reads_tokens  # the frames it reads, decoded
        if decodes and tokenizer is None:
            raise ValueError("An actor-critic that reads frames needs the tokenizer to decode the imagined ones.")
        config = config or ImaginationConfig(temperature=0.0)
        self.env = ImaginationEnv(world_model, tokenizer if decodes else None, config=config)
        self.gamma, self.actor_critic, self.end_penalty = gamma, actor_critic, end_penalty
        self.expected_rewards, self.expected_ends = expected_rewards, expected_ends
        self.critic = actor_critic if bootstrap else None
        self.policy_prior = policy_prior
        self.reader = actor_critic if bootstrap or policy_prior > 0 else None  # reads the imagined steps along
        if disagreement_penalty > 0 and not hasattr(world_model, "members"):
            raise ValueError(
                "disagreement_penalty needs an ensemble of world models (iris-wm ensemble build); this is one model."
            )
        self.disagreement_penalty = disagreement_penalty
        self.context, self.recurrent = None, None

    def set_context(
        self,
        tokens: torch.Tensor,
        actions: torch.Tensor | None = None,
        states: torch.Tensor | None = None,
        recurrent: State | None = None,
    ) -> None:
        """The last ``C`` real steps of each of ``E`` environments, as :meth:`ImaginationEnv.reset` takes them, and
        the actor-critic's recurrent state before it reads the last of them (where there is one)."""
        if self.actor_critic is not None and recurrent is None:
            raise ValueError(
                "ImaginedReturns with an actor-critic: pass its recurrent state before the context's last frame."
            )
        self.context, self.recurrent = (tokens, actions, states), recurrent

    def _reset(self, copies: int) -> tuple[torch.Tensor, State | None]:
        if self.context is None:
            raise RuntimeError("ImaginedReturns: set_context(...) with the real steps before scoring sequences.")
        tokens, past, states = (None if x is None else x.repeat_interleave(copies, 0) for x in self.context)
        current = self.env.reset(tokens, past, states)
        recurrent = None if self.recurrent is None else tuple(x.repeat_interleave(copies, 0) for x in self.recurrent)
        return current, recurrent

    def _read(self, current: torch.Tensor, recurrent: State, proprio: torch.Tensor | None):
        ac = self.reader
        observation = current if ac.reads_tokens else self.env.frames(current)
        return ac(observation, recurrent, proprio if ac.reads_state else None)

    def __call__(self, actions: torch.Tensor) -> torch.Tensor:
        E, N, H = actions.shape[:3]
        current, recurrent = self._reset(N)
        proprio = self.env.current_state() if self.reader is not None and self.reader.reads_state else None
        flat = actions.reshape(E * N, H, *actions.shape[3:])
        total = torch.zeros(E * N, device=self.env.device)
        alive = torch.ones_like(total)
        for t in range(H):
            if self.reader is not None:
                read = self._read(current, recurrent, proprio)
                recurrent = read.state
                if self.policy_prior > 0:
                    log_pi = self.reader.policy(read.logits).log_prob(flat[:, t]).float()
                    total = total + self.gamma**t * alive * self.policy_prior * log_pi
            step = self.env.step(flat[:, t])
            reward = step.expected_reward if self.expected_rewards else step.reward.float()
            ended = alive * (step.end_probability if self.expected_ends else step.terminated.float())
            total = total + self.gamma**t * (alive * reward - self.end_penalty * ended)
            if self.disagreement_penalty > 0:
                total = total - self.gamma**t * alive * self.disagreement_penalty * step.disagreement.tokens.float()
            alive = alive - ended
            current, proprio = step.tokens, step.state
        if self.critic is not None:
            total = total + self.gamma**H * alive * self._read(current, recurrent, proprio).value.float()
        return total.view(E, N)

    @torch.no_grad()
    def prior(self, count: int, horizon: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``count`` sequences of ``horizon`` actions per environment ``(E, count, H, ...)``, in the environment's
        units: the actor acting in the imagination from the context (its policy sampled at every step)."""
        if self.actor_critic is None:
            raise RuntimeError("ImaginedReturns.prior needs the agent's actor-critic (actor_critic=...).")
        current, recurrent = self._reset(count)
        imagined = rollout(self.actor_critic, self.env, current, recurrent, horizon, generator)
        actions = imagined.actions
        if self.actor_critic.config.continuous:
            actions = self.actor_critic.policy(imagined.logits).to_env(actions)
        return actions.unflatten(0, (-1, count))
