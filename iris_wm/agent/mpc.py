"""Acting by planning: :class:`MPCPolicy` plans every real step with a :class:`~iris_wm.agent.planning.Planner`
and the world model's :class:`~iris_wm.agent.planning.ImaginedReturns`, behind the same ``act`` as the agent's
policy. Only the environments that are playing are planned for: at the end of an evaluation, when some
environments have no episode left to play, their slots cost nothing (``active``)."""

from __future__ import annotations

import numpy as np
import torch

from iris_wm.agent.actor_critic import ActorCritic, State
from iris_wm.agent.planning import ImaginedReturns, Planner, PlannerConfig, shield
from iris_wm.agent.rollout import observe
from iris_wm.data.spaces import ActionSpace
from iris_wm.runtime.errors import ConfigError


class MPCPolicy:
    """Acting by planning: each real step, the frame is encoded and every environment's plan is made in the world
    model's imagination, primed with that one real step (as IRIS's imagination is), with its state where the world
    model models one. With an ``actor_critic`` (the agent's), its actor proposes ``prior_samples`` sequences and its
    critic values each sequence's last imagined step; its recurrent state follows the real frames as the agent's
    does when it acts; with ``choose: shield`` its actor, sampled at ``temperature`` as the agent alone would be,
    proposes the action the plan may overrule. Same ``act`` as :class:`~iris_wm.agent.policy.AgentPolicy`."""

    def __init__(
        self,
        tokenizer,
        world_model,
        config: PlannerConfig,
        generator: torch.Generator | None = None,
        actor_critic: ActorCritic | None = None,
        temperature: float = 0.5,
    ):
        if config.choose == "shield" and actor_critic is None:
            raise ConfigError("planner.choose shield keeps the agent's own actions: plan with an agent (--agent).")
        self.temperature = temperature
        if world_model is not None and config.horizon > world_model.config.context_steps - 1:
            steps = world_model.config.context_steps
            raise ConfigError(
                f"A plan of horizon {config.horizon} from one real step needs {config.horizon + 1} steps of context; "
                f"this world model holds {steps}, and beyond them its imagination would forget the real step it "
                f"started from. Plan with --planner.horizon {steps - 1} or less, or train a world model with a longer "
                "context (model.config.context_steps)."
            )
        self.tokenizer, self.world_model, self.generator = tokenizer, world_model, generator
        self.config, self.actor_critic = config, actor_critic
        self.scorer = self._scorer()
        self.planner: Planner | None = None
        self.state: State | None = None
        self.rows: torch.Tensor | None = None  # the environments planned for at this step (None: all)
        self.first_values: torch.Tensor | None = None  # choose shield: the last step's best score per first action

    def _scorer(self):
        return ImaginedReturns(
            self.world_model,
            self.config.gamma,
            actor_critic=self.actor_critic,
            tokenizer=self.tokenizer,
            bootstrap=self.config.critic,
            end_penalty=self.config.end_penalty,
            disagreement_penalty=self.config.disagreement_penalty,
            expected_rewards=self.config.expected_rewards,
            expected_ends=self.config.expected_ends,
            policy_prior=self.config.policy_prior,
        )

    def _set_context(self, tokens: torch.Tensor, proprio: torch.Tensor | None, state: State | None) -> None:
        """Where the plans start: the current real step of each environment planned for (and the agent's recurrent
        state there)."""
        self.scorer.set_context(tokens[:, None], None, None if proprio is None else proprio[:, None], state)

    def bind(self, space: ActionSpace) -> MPCPolicy:
        """The real environment's action space: discrete, or a box whose bounds the plans keep within."""
        if space.is_discrete:
            self.planner = Planner(self.config, num_actions=space.n)
        elif self.config.choose == "shield":
            raise ConfigError("planner.choose shield is for discrete actions; use 'best' or 'sample' with a box.")
        else:
            low, high = (torch.tensor(bound, dtype=torch.float32) for bound in (space.low, space.high))
            self.planner = Planner(self.config, low=low, high=high)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.world_model.parameters()).device

    def _shield(self, own: torch.Tensor) -> torch.Tensor:
        """``choose: shield``: the plan's elites are scored again with the agent's action ``own (E,)`` first, so the
        best sequence starting with it is known even where the plan never drew it; then :func:`shield`."""
        elites = self.planner.elites.clone()
        elites[:, :, 0] = own[:, None].to(elites)
        values = self.scorer(elites).float().amax(1, keepdim=True)
        self.first_values = self.planner.first_values.scatter_reduce(1, own[:, None].long(), values, "amax")
        return shield(own, self.first_values, self.config.shield_margin)

    @torch.no_grad()
    def act(self, frames, new_episode, states=None, active=None) -> torch.Tensor:
        """Actions for ``frames (E, 3, H, W)``; ``new_episode (E,)`` starts those environments afresh. With
        ``active (E,)`` only the environments where it is True are planned for: the others' actions are 0 (or the
        box's low corner) and their recurrent state and last plan are kept as they were."""
        if self.planner is None:
            raise RuntimeError("MPCPolicy: bind(...) it to the environment's action space before acting.")
        E = len(frames)
        every = active is None or bool(np.all(np.asarray(active)))
        rows = slice(None) if every else torch.as_tensor(np.flatnonzero(np.asarray(active)), device=self.device)
        self.rows = None if every else rows
        frames = torch.as_tensor(frames, device=self.device)[rows]
        tokens = None if self.tokenizer is None else self.tokenizer.encode(frames)
        new = torch.as_tensor(new_episode, device=self.device, dtype=torch.bool)
        self.planner.forget(new)
        new = new[rows]
        proprio = None if states is None else torch.as_tensor(states, device=self.device).float()[rows]
        ac, state = self.actor_critic, None
        if ac is not None:
            if self.state is None or self.state[0].shape[0] != E:
                self.state = ac.initial_state(E, self.device)
            state = ActorCritic.reset_state(tuple(x[rows] for x in self.state), ~new)
        self._set_context(tokens, proprio, state)
        prior = None
        if ac is not None and self.config.prior_samples > 0:
            prior = self.scorer.prior(self.config.prior_samples, self.config.horizon, self.generator)
        everyone = self.planner.previous
        if everyone is not None:
            self.planner.previous = everyone[rows]
        chosen = self.planner.plan(self.scorer, len(frames), prior, device=self.device, generator=self.generator)
        if ac is not None:  # the agent's recurrent state reads the real frame, as when it acts itself
            out = ac(observe(ac, self.tokenizer, tokens), state, proprio if ac.reads_state else None)
            state = out.state
            if self.config.choose == "shield":
                chosen = self._shield(ac.policy(out.logits).sample(self.generator, self.temperature))
        if ac is not None:
            for kept, updated in zip(self.state, state, strict=True):
                kept[rows] = updated
        if everyone is None or everyone.shape[0] != E:
            everyone = self.planner._initial(E, self.device)
        everyone[rows] = self.planner.previous
        self.planner.previous = everyone
        actions = torch.zeros(E, *chosen.shape[1:], dtype=chosen.dtype, device=chosen.device)
        if self.planner.low is not None:
            actions[:] = self.planner.low.to(actions)
        actions[rows] = chosen
        return actions
