"""`ActorCriticModule`: the Lightning system that trains the actor-critic entirely in imagination.

One training step (IRIS section 2.3, appendix B):

1. Burn-in: the actor-critic reads ``burn_in - 1`` real observations of a window (no gradient) to build its
   recurrent state; the world model is primed with the last ``prime_steps`` real steps.
2. Rollout: from the last real observation, ``horizon`` imagined steps, the policy acting at each one
   (:func:`~iris_wm.agent.rollout.rollout`).
3. The objective of :mod:`iris_wm.agent.objective`: lambda-returns, REINFORCE with a value baseline, entropy.

The world model and the tokenizer are submodules (so a checkpoint holds the whole agent); only the
actor-critic's parameters are optimised. The module opens no files: its models come from their configs (a
checkpoint of this module is rebuilt so), or are attached, frozen by the agent stage, which loads the ones
named by ``world_model`` and ``tokenizer``, or live by the online loop, which trains them (:meth:`attach`).
"""

from __future__ import annotations

import copy
from dataclasses import asdict

import torch
from lightning import LightningModule

from iris_wm.agent.actor_critic import ActorCritic, ActorCriticConfig, State
from iris_wm.agent.objective import AgentLosses, AgentObjective, agent_losses
from iris_wm.agent.rollout import Rollout, burn_in, rollout
from iris_wm.data.sizes import check_sizes
from iris_wm.data.store import TokenStore, WrongStoreKind
from iris_wm.data.tokens import check_tokenizer
from iris_wm.envs.imagination import ImaginationEnv
from iris_wm.runtime.errors import ConfigError
from sequence_model.world_model import WorldModel, WorldModelConfig
from tokenizer.model import Tokenizer, TokenizerConfig


class ActorCriticModule(LightningModule):
    """Trains an :class:`ActorCritic` in the imagination of a world model, reading frames through a tokenizer."""

    def __init__(
        self,
        config: ActorCriticConfig = ActorCriticConfig(),  # noqa: B008  (never mutated; jsonargparse expands it)
        world_model: str | None = None,
        tokenizer: str | None = None,
        objective: AgentObjective = AgentObjective(),  # noqa: B008
        burn_in: int = 20,
        prime_steps: int | None = None,
        learning_rate: float = 1e-4,
        world_model_config: dict | None = None,
        tokenizer_config: dict | None = None,
    ):
        """
        Args:
            config: sizes of the actor-critic (actions, vocabulary and tokens per frame come from the token store).
            world_model: the trained world model: a checkpoint of its stage, a pretrained folder or a Hub id. The
                agent stage loads it and attaches it, frozen.
            tokenizer: the tokenizer whose tokens the world model was trained on (the same kinds of source).
            objective: horizon, discount, lambda, entropy bonus, target critic and imagination sampling.
            burn_in: real steps per training window; the actor-critic reads all but the last to build its
                state, and imagination starts from the last (IRIS: 20).
            prime_steps: real steps the world model is primed with (default: the whole window, capped at its
                context minus one; IRIS primes with one frame).
            learning_rate: Adam learning rate (IRIS: 1e-4).
            world_model_config: recorded when a model is attached, so that a checkpoint of this module rebuilds the
                world model (its weights come from the checkpoint); leave unset.
            tokenizer_config: the same for the tokenizer; leave unset.
        """
        super().__init__()
        self.config = config = ActorCriticConfig(**config) if isinstance(config, dict) else config
        self.objective = AgentObjective(**objective) if isinstance(objective, dict) else objective
        if burn_in < 1 or self.objective.horizon < 1:
            raise ConfigError(f"burn_in and horizon must be at least 1; got {burn_in} and {self.objective.horizon}.")
        self.save_hyperparameters()
        self.actor_critic = ActorCritic(config)
        self.target_critic = None
        if self.objective.target_critic_decay is not None:
            self.target_critic = copy.deepcopy(self.actor_critic).requires_grad_(False)
        if self.objective.return_scale_decay is not None:  # saved with the weights, so a resumed fit goes on with it
            self.register_buffer("return_scale", torch.tensor(-1.0))
        self.world_model: WorldModel | None = None
        self.tokenizer: Tokenizer | None = None
        self._frozen = True
        self._imagination: ImaginationEnv | None = None
        if world_model_config is not None:
            tok = Tokenizer(TokenizerConfig(**tokenizer_config)) if tokenizer_config is not None else None
            self.attach(WorldModel(WorldModelConfig(**world_model_config)), tok, frozen=True)

    # ------------------------------------------------------------------ the world model and tokenizer
    def attach(self, world_model: WorldModel, tokenizer: Tokenizer | None, frozen: bool = True) -> ActorCriticModule:
        """Imagine with ``world_model``, reading frames through ``tokenizer``. Frozen models (the agent stage) are
        kept in eval mode without gradients and recorded in the hyperparameters, so a checkpoint holds the whole
        agent; live ones (the online loop trains them) are read, never updated, here."""
        wants, has = self.actor_critic.config.state_dim, world_model.config.state_dim
        if wants is not None and wants != has:
            raise ConfigError(
                f"The actor-critic reads a state of {wants} components, but the world model imagines "
                f"{'none' if has is None else f'one of {has}'}: train both on the same store."
            )
        check_sizes(actor_critic=self.actor_critic, world_model=world_model, tokenizer=tokenizer)
        if self.actor_critic.config.observation == "frames" and tokenizer is None:
            raise ConfigError("A frame-reading actor-critic needs the tokenizer to decode imagined frames.")
        if frozen:
            world_model.requires_grad_(False).eval()
            if tokenizer is not None:
                tokenizer.requires_grad_(False).eval()
            self.hparams.world_model_config = asdict(world_model.config)
            self.hparams.tokenizer_config = asdict(tokenizer.config) if tokenizer is not None else None
        self.world_model, self.tokenizer = world_model, tokenizer
        self._frozen = frozen
        self._imagination = None
        return self

    def train(self, mode: bool = True):
        super().train(mode)
        # Frozen models stay in eval mode (no dropout in imagination); live ones are the loop's to set.
        if self._frozen:
            for frozen in (self.world_model, self.tokenizer):
                if frozen is not None:
                    frozen.eval()
        if self.target_critic is not None:
            self.target_critic.eval()
        return self

    # ------------------------------------------------------------------ imagination
    def _env(self) -> ImaginationEnv:
        if self.world_model is None:
            raise ConfigError(
                "No world model to imagine with: attach one (ActorCriticModule.attach), as the agent stage does "
                "with the world model and tokenizer it is given."
            )
        if self._imagination is None:
            self._imagination = ImaginationEnv(self.world_model, self.tokenizer, self.objective.imagination)
        return self._imagination

    def burn_in_state(self, network: ActorCritic, tokens: torch.Tensor, states: torch.Tensor | None = None) -> State:
        """The recurrent state after reading real observations ``(B, C, K)`` (and their proprioception ``(B, C, S)``
        where the network reads it; no gradient). A frame-reading network reads them decoded all at once by the
        imagination's decoder (in its precision)."""
        return burn_in(network, tokens, states, lambda flat: self._env().frames(flat))

    def imagine(self, batch) -> Rollout:
        """Burn in on a batch of real windows, then roll the policy out in imagination for ``horizon`` steps."""
        tokens, actions = batch.observations, batch.actions  # (B, C, K), (B, C)
        if tokens.is_floating_point() or tokens.dtype == torch.uint8:
            raise WrongStoreKind(
                "The agent trains on a token store, not on frames: encode the episodes into one first.", "encode"
            )
        if not bool(batch.mask.all()):
            raise ConfigError("Agent windows must lie inside their episode: use the data option complete_windows.")
        C = tokens.shape[1]
        env = self._env()
        prime = min(self.hparams.prime_steps or C, C, env.context_steps - 1)
        states = batch.states if self.world_model.config.state_dim else None
        primed = None if states is None else states[:, C - prime :]
        current = env.reset(tokens[:, C - prime :], actions[:, C - prime : C - 1], primed)
        state = self.burn_in_state(self.actor_critic, tokens[:, :-1], None if states is None else states[:, :-1])
        dynamics = self.objective.actor_gradient == "dynamics"
        return rollout(self.actor_critic, env, current, state, self.objective.horizon, reparameterize=dynamics)

    def _target_values(self, batch, imagined: Rollout) -> torch.Tensor:
        """``(B, H + 1)`` values the returns are computed from: the target critic's, reading what the actor-critic
        read, or the critic's own, detached. For dynamics gradients the target critic (frozen: no gradient reaches
        its weights) reads the imagined states with their graph, so its values carry the gradient to the actions."""
        if self.target_critic is None:
            return imagined.values.detach()
        states = batch.states[:, :-1] if self.target_critic.reads_state else None
        state = self.burn_in_state(self.target_critic, batch.observations[:, :-1], states)
        read = imagined.imagined_states or imagined.states
        with torch.set_grad_enabled(imagined.imagined_states is not None and torch.is_grad_enabled()):
            values = []
            for t, observation in enumerate(imagined.observations):
                out = self.target_critic(observation, state, read[t] if read else None)
                values.append(out.value)
                state = out.state
        return torch.stack(values, 1)

    # ------------------------------------------------------------------ the objective
    def compute_loss(self, batch) -> AgentLosses:
        imagined = self.imagine(batch)
        scale = getattr(self, "return_scale", None)
        return agent_losses(imagined, self._target_values(batch, imagined), self.objective, scale)

    def loss(self, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One objective for the Trainer and the online loop: ``(loss, metrics)``."""
        losses = self.compute_loss(batch)
        return losses.total, {
            "loss": losses.total,
            "policy_loss": losses.policy,
            "value_loss": losses.value,
            "entropy": losses.entropy,
            "imagined_return": losses.imagined_return,
            "imagined_end_rate": losses.end_rate,
            "value": losses.mean_value,
        }

    @torch.no_grad()
    def update_target(self) -> None:
        """Move the EMA target critic towards the critic (after each optimiser step)."""
        if self.target_critic is None:
            return
        decay = self.objective.target_critic_decay
        for target, source in zip(self.target_critic.parameters(), self.actor_critic.parameters(), strict=True):
            target.lerp_(source, 1.0 - decay)

    # ------------------------------------------------------------------ Lightning hooks
    def setup(self, stage: str) -> None:
        # A token store encoded by another tokenizer would have the agent read codes the world model never saw.
        store = getattr(getattr(self.trainer, "datamodule", None), "store", None)
        if self._frozen and self.tokenizer is not None and isinstance(store, TokenStore):
            check_tokenizer(store, self.tokenizer)

    def training_step(self, batch, batch_idx):
        total, metrics = self.loss(batch)
        self.log_dict({f"train/{k}": v for k, v in metrics.items()}, batch_size=len(batch))
        self.log("imagined_return", metrics["imagined_return"], prog_bar=True, logger=False, batch_size=len(batch))
        return total

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.update_target()

    def configure_optimizers(self):
        return torch.optim.Adam(self.actor_critic.parameters(), lr=self.hparams.learning_rate)
