"""`ActorCriticModule`: the Lightning system that trains the actor-critic entirely in imagination.

One training step (IRIS section 2.3, appendix B):

1. Burn-in: the actor-critic reads ``burn_in - 1`` real observations of a window (no gradient) to build its
   recurrent state; the world model is primed with the last ``prime_steps`` real steps.
2. Rollout: from the last real observation, ``horizon`` imagined steps, the policy acting at each one.
3. lambda-returns (gamma 0.995, lambda 0.95) from the imagined rewards and ends and the critic's values
   (or an EMA target critic's); REINFORCE with the value baseline, an entropy bonus, and value regression.
   Steps after the first imagined episode end are masked out.

The world model and the tokenizer are frozen here: they are submodules (so a checkpoint holds the whole
agent) kept in eval mode, and only the actor-critic's parameters are optimised. The online loop attaches
the live models it trains instead (:meth:`attach`).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field

import torch
from lightning import LightningModule

from iris_wm.agent.actor_critic import ActorCritic, ActorCriticConfig, State
from iris_wm.agent.returns import lambda_returns
from iris_wm.imagination import ImaginationConfig, ImaginationEnv
from sequence_model.world_model import WorldModel, WorldModelConfig
from tokenizer.model import Tokenizer, TokenizerConfig


def _imagination_defaults() -> ImaginationConfig:
    # IRIS samples the next tokens, the reward and the episode end from the world model's distributions.
    return ImaginationConfig(temperature=1.0, sample_rewards=True, sample_terminations=True)


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
    imagination: ImaginationConfig = field(default_factory=_imagination_defaults)
    """How imagined steps are drawn."""


# Checkpoints are read with torch.load(weights_only=True); the hyperparameters hold these dataclasses.
torch.serialization.add_safe_globals([ActorCriticConfig, AgentObjective, ImaginationConfig])


@dataclass
class Trajectory:
    """One batch of imagined trajectories of ``H`` steps."""

    logits: torch.Tensor  # (B, H, A) policy logits at each imagined step
    values: torch.Tensor  # (B, H + 1) critic values of the observations, the last one bootstraps
    target_values: torch.Tensor  # (B, H + 1) values the returns are computed from (detached)
    actions: torch.Tensor  # (B, H)
    rewards: torch.Tensor  # (B, H)
    ends: torch.Tensor  # (B, H) bool: the world model ended the episode after this step's action


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


class ActorCriticModule(LightningModule):
    """Trains an :class:`ActorCritic` in the imagination of a frozen world model and tokenizer."""

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
            world_model: checkpoint of the trained world model (`iris-wm world-model fit`).
            tokenizer: checkpoint of the tokenizer whose tokens the world model was trained on.
            objective: horizon, discount, lambda, entropy bonus, target critic and imagination sampling.
            burn_in: real steps per training window; the actor-critic reads all but the last to build its
                state, and imagination starts from the last (IRIS: 20).
            prime_steps: real steps the world model is primed with (default: the whole window, capped at its
                context minus one; IRIS primes with one frame).
            learning_rate: Adam learning rate (IRIS: 1e-4).
            world_model_config: set when a checkpoint of this module is saved (the world model is rebuilt from
                it and its weights come from the checkpoint); leave unset.
            tokenizer_config: the same for the tokenizer; leave unset.
        """
        super().__init__()
        self.config = config = ActorCriticConfig(**config) if isinstance(config, dict) else config
        self.objective = AgentObjective(**objective) if isinstance(objective, dict) else objective
        if isinstance(self.objective.imagination, dict):
            self.objective.imagination = ImaginationConfig(**self.objective.imagination)
        if burn_in < 1 or self.objective.horizon < 1:
            raise ValueError(f"burn_in and horizon must be at least 1; got {burn_in} and {self.objective.horizon}.")
        wm, tok = self._frozen_models(world_model, tokenizer, world_model_config, tokenizer_config)
        self.save_hyperparameters()
        self.hparams.world_model_config = asdict(wm.config) if wm is not None else None
        self.hparams.tokenizer_config = asdict(tok.config) if tok is not None else None
        self.actor_critic = ActorCritic(config)
        self.target_critic = None
        if self.objective.target_critic_decay is not None:
            self.target_critic = copy.deepcopy(self.actor_critic).requires_grad_(False)
        self.world_model, self.tokenizer = wm, tok
        self._frozen = True
        if wm is not None:
            self._check_sizes(wm, tok)
        self._imagination: ImaginationEnv | None = None

    # ------------------------------------------------------------------ the frozen models
    @staticmethod
    def _frozen_models(world_model, tokenizer, world_model_config, tokenizer_config):
        if world_model_config is not None:
            wm = WorldModel(WorldModelConfig(**world_model_config))
            tok = Tokenizer(TokenizerConfig(**tokenizer_config)) if tokenizer_config is not None else None
        elif world_model is not None:
            if tokenizer is None:
                raise ValueError(
                    "Give the tokenizer checkpoint (--model.tokenizer) with the world model's: the "
                    "agent reads real frames through it."
                )
            from iris_wm.imagine import load_models

            wm, tok = load_models(world_model, tokenizer)
        else:
            return None, None
        wm.requires_grad_(False).eval()
        if tok is not None:
            tok.requires_grad_(False).eval()
        return wm, tok

    def attach(self, world_model: WorldModel, tokenizer: Tokenizer) -> ActorCriticModule:
        """Use live models (the online loop trains them): imagination reads them, never updates them."""
        self._check_sizes(world_model, tokenizer)
        self.world_model, self.tokenizer = world_model, tokenizer
        self._frozen = False
        self._imagination = None
        return self

    def _check_sizes(self, wm: WorldModel, tok: Tokenizer | None) -> None:
        cfg, w = self.config, wm.config
        if cfg.num_actions != w.num_actions:
            raise ValueError(
                f"The actor-critic has {cfg.num_actions} actions but the world model {w.num_actions}: "
                "train both on data of the same game."
            )
        if cfg.observation == "tokens" and (cfg.vocab_size, cfg.tokens_per_frame) != (w.vocab_size, w.tokens_per_frame):
            raise ValueError(
                f"The actor-critic reads {cfg.tokens_per_frame} tokens of {cfg.vocab_size} codes but the "
                f"world model predicts {w.tokens_per_frame} of {w.vocab_size}: link the sizes to the "
                "token store (the CLI does)."
            )
        if tok is not None and (tok.vocab_size, tok.tokens_per_frame) != (w.vocab_size, w.tokens_per_frame):
            raise ValueError(
                f"The tokenizer ({tok.tokens_per_frame} tokens of {tok.vocab_size} codes) does not match "
                f"the world model ({w.tokens_per_frame} of {w.vocab_size}): use the tokenizer whose "
                "token store the world model was trained on."
            )
        if cfg.observation == "frames" and tok is None:
            raise ValueError("A frame-reading actor-critic needs the tokenizer to decode imagined frames.")

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
    def observe(self, tokens: torch.Tensor) -> torch.Tensor:
        """What the actor-critic reads of a frame given as tokens ``(B, K)``: the tokens or the decoded frame."""
        return tokens if self.actor_critic.reads_tokens else self.tokenizer.decode(tokens)

    def _env(self) -> ImaginationEnv:
        if self.world_model is None:
            raise ValueError("No world model: give --model.world_model and --model.tokenizer checkpoints.")
        if self._imagination is None:
            self._imagination = ImaginationEnv(self.world_model, self.tokenizer, self.objective.imagination)
        return self._imagination

    def burn_in_state(self, network: ActorCritic, tokens: torch.Tensor) -> State:
        """The recurrent state after reading real observations ``(B, C, K)`` (no gradient)."""
        state = network.initial_state(tokens.shape[0], tokens.device)
        with torch.no_grad():
            for t in range(tokens.shape[1]):
                state = network(self.observe(tokens[:, t]), state).state
        return state

    def imagine(self, batch) -> Trajectory:
        """Burn in on a batch of real windows, then roll the policy out in imagination for ``horizon`` steps."""
        tokens, actions = batch.observations, batch.actions  # (B, C, K), (B, C)
        if tokens.is_floating_point() or tokens.dtype == torch.uint8:
            raise ValueError(
                "The agent trains on a token store: encode the episodes first "
                "(`iris-wm tokenizer predict ... --token_writer.output TOKENS`)."
            )
        if not bool(batch.mask.all()):
            raise ValueError("Agent windows must lie inside their episode: use the data option complete_windows.")
        B, C, _ = tokens.shape
        env = self._env()
        prime = min(self.hparams.prime_steps or C, C, env.context_steps - 1)
        current = env.reset(tokens[:, C - prime :], actions[:, C - prime : C - 1])
        state = self.burn_in_state(self.actor_critic, tokens[:, :-1])
        target_state = self.burn_in_state(self.target_critic, tokens[:, :-1]) if self.target_critic else None
        logits, values, targets, taken, rewards, ends = [], [], [], [], [], []
        for t in range(self.objective.horizon + 1):
            observation = self.observe(current)
            out = self.actor_critic(observation, state)
            values.append(out.value)
            if target_state is not None:
                with torch.no_grad():
                    target = self.target_critic(observation, target_state)
                target_state = target.state
                targets.append(target.value)
            if t == self.objective.horizon:
                break
            action = torch.multinomial(out.logits.detach().float().softmax(-1), 1).squeeze(-1)
            step = env.step(action)
            logits.append(out.logits)
            taken.append(action)
            rewards.append(step.reward)
            ends.append(step.terminated)
            state, current = out.state, step.tokens
        values = torch.stack(values, 1)
        return Trajectory(
            torch.stack(logits, 1),
            values,
            torch.stack(targets, 1) if targets else values.detach(),
            torch.stack(taken, 1),
            torch.stack(rewards, 1),
            torch.stack(ends, 1),
        )

    # ------------------------------------------------------------------ the objective
    def compute_loss(self, batch) -> AgentLosses:
        obj = self.objective
        traj = self.imagine(batch)
        returns = lambda_returns(traj.rewards, traj.target_values.float(), traj.ends, obj.gamma, obj.lambda_)
        alive = alive_mask(traj.ends).float()
        count = alive.sum().clamp_min(1.0)
        log_probs = traj.logits.float().log_softmax(-1)
        chosen = log_probs.gather(-1, traj.actions[..., None]).squeeze(-1)
        values = traj.values[:, :-1].float()
        advantage = (returns - values).detach()
        policy = -(chosen * advantage * alive).sum() / count
        entropy = (-(log_probs.exp() * log_probs).sum(-1) * alive).sum() / count
        value = ((values - returns.detach()).pow(2) * alive).sum() / count
        total = policy - obj.entropy_weight * entropy + obj.value_weight * value
        return AgentLosses(
            total,
            policy,
            value,
            entropy,
            (traj.rewards * alive).sum(1).mean(),
            traj.ends.any(1).float().mean(),
            values.mean().detach(),
        )

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
        from iris_wm.data.store import TokenStore
        from iris_wm.data.token_writer import check_tokenizer

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
