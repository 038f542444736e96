"""A batched imagination environment: the world model rolled out with a KV cache.

``reset`` primes the cache with ``C`` real steps (observation tokens and the actions between them; IRIS
primes with one frame). ``step(actions)`` then imagines one step for every environment of the batch:
reward and episode end are read at the action position. With an autoregressive world model the ``K`` tokens
of the next frame are sampled one after another, the last token of a frame fed together with the next
action, so a step costs ``K`` transformer passes (IRIS: ``K + 1``). With a parallel one, the whole current frame
and the action go in as one block and all ``K`` tokens of the next frame come out of that one pass. Nothing
in ``step`` reads a value back to the host.

When the next step would not fit in the context (``context_steps * (K + 1)`` tokens; for a parallel world
model, the step it predicts must fit too, as in a training window), the cache is re-primed: cleared and
refilled in one pass with the last ``reprime_steps`` steps, positions starting at 0 again, exactly like a
training window that starts there. Frames are decoded only when asked (``frames()``):
a policy that reads tokens never pays for the decoder.

A ``differentiable`` imagination keeps the graph from the actions of a continuous world model to what they
imagine (fp32, a cache grown by concatenation): the predicted states (expected values) and rewards (expected
values, for the sign head too) carry gradients to the actions; frame tokens and ends are draws and carry none.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from iris_wm.runtime.checks import at_least
from iris_wm.runtime.errors import ConfigError
from iris_wm.runtime.hardware import inference_dtype
from sequence_model.world_model import WorldModel


@dataclass
class ImaginationConfig:
    """How imagined steps are drawn."""

    temperature: float = 1.0
    """Sampling temperature of observation tokens (0: argmax)."""
    sample_rewards: bool = False
    """Sample rewards from the sign head instead of taking the most likely class (a two-hot head always
    gives its expected value)."""
    sample_terminations: bool = False
    """Sample episode ends instead of taking the most likely outcome."""
    reprime_steps: int | None = None
    """Steps kept when the context is full (default: context_steps - 1, a sliding window)."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """Weights the world model and the decoder imagine with: ``auto`` is bf16 on a GPU or a CPU with bf16 hardware
    (AVX512-BF16, AMX) and fp32 elsewhere. A bf16 copy of the models is made once and refreshed from them at every
    ``reset``, so the models themselves (and checkpoints) keep their weights."""
    differentiable: bool = False
    """Keep the graph from the actions to the imagined states and rewards (``step`` under autograd where grad mode
    is on; always fp32; rewards are expected values): for an actor trained by dynamics gradients."""

    def __post_init__(self):
        at_least(0, "imagination", temperature=self.temperature)
        at_least(1, "imagination", reprime_steps=self.reprime_steps)
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ConfigError(f"imagination: precision must be 'auto', 'fp32' or 'bf16'; got {self.precision!r}.")
        if self.differentiable and self.precision == "bf16":
            raise ConfigError("imagination: a differentiable imagination runs in fp32; set precision to auto or fp32.")

    @classmethod
    def iris(cls, **overrides) -> ImaginationConfig:
        """IRIS's imagination for training the actor-critic: the next tokens, the reward and the episode end are
        all sampled from the world model's distributions."""
        return cls(**{"temperature": 1.0, "sample_rewards": True, "sample_terminations": True, **overrides})


# Checkpoints are read with torch.load(weights_only=True); the agent's hyperparameters can hold this dataclass.
torch.serialization.add_safe_globals([ImaginationConfig])


@dataclass
class Disagreement:
    """How much an ensemble's members disagree about one imagined step, each ``(B,)`` in nats: the mutual information
    of their next-frame token distributions (the mean over the K tokens), of their reward and of their end."""

    tokens: torch.Tensor
    reward: torch.Tensor
    end: torch.Tensor


@dataclass
class ImaginedStep:
    tokens: torch.Tensor  # (B, K) observation tokens of the new frame
    reward: torch.Tensor  # (B,) float
    terminated: torch.Tensor  # (B,) bool: the world model predicts the episode ended after this action
    done: torch.Tensor  # (B,) bool: terminated at this or an earlier imagined step
    state: torch.Tensor | None = None  # (B, S) float: the predicted proprioception (expected values), if modelled
    disagreement: Disagreement | None = None  # where the world model is an ensemble
    end_probability: torch.Tensor | None = None  # (B,) float: the world model's chance that this step ends
    expected_reward: torch.Tensor | None = None  # (B,) float: the reward's expectation (a sign: p(+1) - p(-1))


def _with_graph_if_differentiable(method):
    """Run ``method`` under autograd only for a differentiable imagination (and where grad mode is on)."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with torch.set_grad_enabled(self.config.differentiable and torch.is_grad_enabled()):
            return method(self, *args, **kwargs)

    return wrapper


def _draw(logits: torch.Tensor, temperature: float, sample: bool, generator: torch.Generator | None) -> torch.Tensor:
    """Gumbel-max sampling (argmax when not sampling or at temperature 0); stays on the device."""
    if not sample or temperature <= 0:
        return logits.argmax(-1)
    uniform = torch.rand(logits.shape, device=logits.device, generator=generator).clamp_(1e-10, 1.0)
    return (logits.float() / temperature - torch.log(-torch.log(uniform))).argmax(-1)


class InferenceCopy:
    """A model's weights in ``dtype`` for inference (the model itself when it already is): made once, refreshed from
    the model (which may still be training, as in the online loop) by :meth:`refresh`, in the model's mode."""

    def __init__(self, model: nn.Module, dtype: torch.dtype, channels_last: bool = False):
        self.source = model
        same = next(model.parameters()).dtype == dtype and not channels_last
        self.model = model if same else copy.deepcopy(model).requires_grad_(False).to(dtype)
        if channels_last and self.model is not model:
            self.model = self.model.to(memory_format=torch.channels_last)

    @torch.no_grad()
    def refresh(self) -> nn.Module:
        if self.model is not self.source:
            for mine, theirs in zip(self.model.state_dict().values(), self.source.state_dict().values(), strict=True):
                mine.copy_(theirs)
            self.model.train(self.source.training)
        return self.model


class ImaginationEnv:
    """Imagined environments, a batch at a time, on the world model's device."""

    def __init__(
        self,
        world_model: WorldModel,
        tokenizer=None,
        config: ImaginationConfig | None = None,
        generator: torch.Generator | None = None,
    ):
        self.world_model = world_model
        self.tokenizer = tokenizer
        self.config = config or ImaginationConfig()
        self.generator = generator
        cfg = world_model.config
        self.K, self.context_steps = cfg.tokens_per_frame, cfg.context_steps
        # Observation tokens a step: the frame's K and, with proprioception, one per state component.
        self.per_step = cfg.tokens_per_observation
        keep = self.config.reprime_steps or self.context_steps - 1
        if not 1 <= keep < self.context_steps:
            raise ValueError(f"reprime_steps must be in [1, {self.context_steps - 1}], got {keep}.")
        self.keep = keep
        self.cache = None
        dtype = torch.float32 if self.config.differentiable else inference_dtype(self.config.precision, self.device)
        if self.config.differentiable and not world_model.config.continuous:
            raise ConfigError(
                "A differentiable imagination takes gradients through continuous actions; this world model's actions "
                "are discrete ids: train the actor with REINFORCE (actor_gradient: reinforce)."
            )
        self._world_model = InferenceCopy(world_model, dtype)
        self._tokenizer = InferenceCopy(tokenizer, dtype, channels_last=True) if tokenizer is not None else None
        self.model = self._world_model.model  # what imagines: the world model, or its copy in ``dtype``

    @property
    def device(self) -> torch.device:
        return next(self.world_model.parameters()).device

    @torch.no_grad()
    def reset(
        self, observations: torch.Tensor, actions: torch.Tensor | None = None, states: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Prime with ``C`` real steps: tokens ``(B, C, K)`` and the ``C - 1`` actions between them ``(B, C-1)``
        (continuous: ``(B, C - 1, action_dim)``); a world model of proprioception also takes their states
        ``(B, C, S)``.

        Returns the tokens of the current (last real) frame ``(B, K)``.
        """
        B, C, K = observations.shape
        if K != self.K:
            raise ValueError(f"Observations have {K} tokens per frame; the world model expects {self.K}.")
        if not 1 <= C < self.context_steps:
            raise ValueError(
                f"Prime with 1 to {self.context_steps - 1} real steps (the context holds "
                f"{self.context_steps}); got {C}."
            )
        actions = actions if actions is not None else self._no_actions(B)
        if tuple(actions.shape) != (B, C - 1, *self._action_shape):
            raise ValueError(
                f"Expected {C - 1} actions per environment between {C} frames, each of shape {self._action_shape}; "
                f"got {tuple(actions.shape)}."
            )
        self._world_model.refresh()
        if self._tokenizer is not None:
            self._tokenizer.refresh()
        states = None if states is None else states.to(self.device)
        # (B, S, O) history kept for re-priming: the frame tokens, and the state's after them
        self.observations = self.world_model.observation_ids(observations.to(self.device).long(), states)
        self.states = None if states is None else states.float()  # (B, S, state_dim) exact values, if modelled
        self.actions = self._as_actions(actions)  # (B, S - 1), or (B, S - 1, action_dim) for continuous actions
        if self.cache is None or self.cache.buffer.shape[2] != B:
            self.cache = self.model.transformer.new_cache(B, self.device, self._dtype(), self.config.differentiable)
        self._prime()
        self.done = torch.zeros(B, dtype=torch.bool, device=self.device)
        return self.observations[:, -1, :K]

    def _dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def _action_shape(self) -> tuple[int, ...]:
        config = self.world_model.config
        return (config.action_dim,) if config.continuous else ()

    def _as_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """Actions on the device: ids (int64), or float32 vectors for a world model of continuous actions."""
        actions = actions.to(self.device)
        return actions.float() if self.world_model.config.continuous else actions.long()

    def _no_actions(self, batch: int) -> torch.Tensor:
        return torch.zeros(batch, 0, *self._action_shape, device=self.device)

    def _vectors(self, actions: torch.Tensor) -> torch.Tensor | None:
        """What ``forward`` takes beside the ids: the action vectors of a continuous world model, else None."""
        return actions if self.world_model.config.continuous else None

    def _prime(self) -> None:
        """Fill the cache with the history before what ``step`` feeds: up to the last frame's second-to-last token
        (autoregressive: the last one is fed with the next action), or up to the last frame (parallel: the last
        frame is fed whole with the next action)."""
        self.cache.reset()
        if self.model.config.parallel:
            ids = self.model.interleave(self.observations[:, :-1], self.actions)
            values = self._values(self.states[:, :-1]) if self.states is not None else None
        else:
            pad = self.actions.new_zeros(self.actions.shape[0], 1, *self.actions.shape[2:])
            padded = torch.cat([self.actions, pad], dim=1)
            ids = self.model.interleave(self.observations, padded)[:, :-2]
            values = self._values(self.states)[:, :-2] if self.states is not None else None
        if ids.shape[1] > 0:
            self.model(ids, self.cache, self._vectors(self.actions), values)

    def _values(self, states: torch.Tensor) -> torch.Tensor:
        """State values of whole steps ``(B, T, S)`` aligned with their interleaved ids, as ``forward`` reads them."""
        return self.model.state_codec.position_values(states.float())  # fp32 even in bf16: the within-bin place

    @_with_graph_if_differentiable
    def step(self, actions: torch.Tensor) -> ImaginedStep:
        """Imagine one step for every environment: ``actions (B,)`` (``(B, action_dim)`` continuous) -> the next frame's
        tokens, reward, end."""
        cfg, K, per_step = self.config, self.K, self.per_step
        parallel = self.model.config.parallel
        # Room for what this step feeds and predicts: autoregressive, the action and the new observation's tokens;
        # parallel, the step fed and the step it predicts. A training window of context_steps steps has no target
        # for its last step's observation slots, so those positions never learned to predict one.
        room = (per_step + 1) * (2 if parallel else 1)
        if self.cache.size + room > self.cache.max_tokens:
            self.observations = self.observations[:, -self.keep :]
            self.states = self.states[:, -self.keep :] if self.states is not None else None
            self.actions = self.actions[:, -(self.keep - 1) :] if self.keep > 1 else self.actions[:, :0]
            self._prime()
        actions = self._as_actions(actions)
        if tuple(actions.shape) != (self.observations.shape[0], *self._action_shape):
            raise ValueError(
                f"Expected one action of shape {self._action_shape} per environment ({self.observations.shape[0]}); "
                f"got {tuple(actions.shape)}."
            )
        fed = self.observations[:, -1] if parallel else self.observations[:, -1, -1:]  # (B, per_step) or (B, 1)
        placeholder = fed.new_zeros(fed.shape[0], 1) if self.world_model.config.continuous else actions[:, None]
        values = None
        if self.states is not None:  # the last step's state slots (and its action's), or its last slot and action
            values = self._values(self.states[:, -1:])[:, -(fed.shape[1] + 1) :]
        out = self.model(torch.cat([fed, placeholder], dim=1), self.cache, self._vectors(actions[:, None]), values)
        reward_logits, end_logits = out.reward_logits[:, -1], out.termination_logits[:, -1]
        ensemble = hasattr(out, "observation_information")
        if ensemble:  # the members' disagreement about this step's frame tokens, reward and end
            token_mi = [
                out.observation_information[:, : min(per_step, K)] if parallel else out.observation_information[:, -1:]
            ]
            reward_mi, end_mi = out.reward_information[:, -1], out.termination_information[:, -1]
        sign, logits = self.model.config.reward == "sign", reward_logits.float()
        signs = torch.tensor([-1.0, 0.0, 1.0], device=logits.device)
        mean = logits.softmax(-1) @ signs if sign else self.model.expected_reward(logits).float()  # the expectation
        if sign and not cfg.differentiable:  # a sign drawn, or the likelier one
            reward = _draw(reward_logits, 1.0, cfg.sample_rewards, self.generator).float() - 1.0
        else:
            reward = mean
        terminated = _draw(end_logits, 1.0, cfg.sample_terminations, self.generator).bool()
        if parallel:
            frame, state = self._observe(out.observation_logits[:, :per_step], 0)  # (B, per_step), (B, S) or None
        else:
            frame, state = self._observe(out.observation_logits[:, -1:], 0)
            for slot in range(1, per_step):
                value = state[:, -1:] if state is not None else None  # the value of the state slot just drawn
                out = self.model(frame[:, -1:], self.cache, None, value)
                if ensemble and slot < K:
                    token_mi.append(out.observation_information[:, -1:])
                token, value = self._observe(out.observation_logits[:, -1:], slot)
                frame = torch.cat([frame, token], dim=1)
                state = value if state is None else torch.cat([state, value], dim=1)
        self.observations = torch.cat([self.observations, frame[:, None]], dim=1)[:, -self.context_steps :]
        self.actions = torch.cat([self.actions, actions[:, None]], dim=1)[:, -(self.context_steps - 1) :]
        if self.states is not None:
            self.states = torch.cat([self.states, state[:, None]], dim=1)[:, -self.context_steps :]
        self.done = self.done | terminated
        disagreement = Disagreement(torch.cat(token_mi, 1).mean(1), reward_mi, end_mi) if ensemble else None
        end = end_logits.float().softmax(-1)[:, 1]
        return ImaginedStep(frame[:, :K], reward, terminated, self.done.clone(), state, disagreement, end, mean)

    def _observe(self, logits: torch.Tensor, first_slot: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Observation ``logits (B, n, vocab)`` of ``n`` slots from ``first_slot`` -> their ids ``(B, n)``, and the
        values of the state slots among them ``(B, n_state)`` (None where there are none). A frame slot draws a code
        (at the imagination's temperature); a state slot is the last step's value plus the expected change (two-hot,
        :mod:`sequence_model.state`, at any temperature), and its id the bin that value falls in."""
        K = self.K
        ids = _draw(self.model.restrict(logits, first_slot), self.config.temperature, True, self.generator)
        state_from = max(K - first_slot, 0)  # the first state slot among these
        if state_from >= logits.shape[1]:
            return ids, None
        components = torch.arange(first_slot + state_from - K, first_slot + logits.shape[1] - K, device=ids.device)
        previous = self.states[:, -1, components]  # the last step's values of these components
        values = self.model.state_codec.predict(logits[:, state_from:], previous, components)
        ids = torch.cat([ids[:, :state_from], self.model.state_codec.encode(values, components)], dim=1)
        return ids, values.float()

    @torch.no_grad()
    def restart(
        self,
        rows: torch.Tensor,
        observations: torch.Tensor,
        actions: torch.Tensor | None = None,
        states: torch.Tensor | None = None,
    ) -> None:
        """Start the environments ``rows`` (bool ``(B,)``) again from real steps ``observations (n, C, K)`` and the
        ``C - 1`` actions between them, while the others go on. The cache holds one position for the whole
        batch, so every environment is re-primed, as the context's own sliding window does: the others with
        their last ``L`` steps, the restarted ones with the last ``L`` of the given, ``L`` being ``C`` or the
        steps held, whichever is fewer."""
        rows = rows.to(self.device).bool()
        n, C, K = observations.shape
        if rows.shape != (self.observations.shape[0],) or int(rows.sum()) != n or K != self.K:
            raise ValueError(
                f"restart takes a (B,) mask of {self.observations.shape[0]} and that many start windows of {self.K} "
                f"tokens per frame as there are rows set; got mask {tuple(rows.shape)} ({int(rows.sum())} set) and "
                f"windows {tuple(observations.shape)}."
            )
        actions = actions if actions is not None else self._no_actions(n)
        steps = min(C, self.observations.shape[1])
        history = self.observations[:, -steps:].clone()
        between = self.actions[:, self.actions.shape[1] - (steps - 1) :].clone()
        given = self.world_model.observation_ids(
            observations.to(self.device).long(), None if states is None else states.to(self.device)
        )
        history[rows] = given[:, -steps:]
        between[rows] = self._as_actions(actions[:, actions.shape[1] - (steps - 1) :])
        if self.states is not None:
            exact = self.states[:, -steps:].clone()
            exact[rows] = states.to(self.device).float()[:, -steps:]
            self.states = exact
        self.observations, self.actions = history, between
        self._prime()
        self.done = self.done & ~rows

    def current_state(self) -> torch.Tensor | None:
        """The proprioceptive state of the current step ``(B, S)`` as the world model reads it (the real one after a
        reset, the expected values after an imagined step), or None for a world model of frames only."""
        return None if self.states is None else self.states[:, -1].clone()

    @torch.no_grad()
    def frames(self, tokens: torch.Tensor | None = None) -> torch.Tensor:
        """Decode the current frames (or ``tokens``) to ``uint8 (B, 3, H, W)`` through the tokenizer (in the precision
        of the imagination)."""
        if self._tokenizer is None:
            raise ValueError("This imagination env has no tokenizer: pass one to decode frames.")
        return self._tokenizer.model.decode(self.observations[:, -1, : self.K] if tokens is None else tokens)
