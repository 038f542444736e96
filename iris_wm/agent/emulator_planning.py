"""The real emulator as a perfect model for the planner: a check of the planner apart from the world model's errors.

At every real step each environment is snapshotted (:func:`~iris_wm.envs.atari.env_snapshot`: the emulator with
its random generator, and the wrappers' counters), and every candidate sequence is played from it in a second
environment of the same configuration, restored before each sequence. A sequence's score is the one
:class:`~iris_wm.agent.planning.ImaginedReturns` gives: the discounted rewards up to the first end, minus
``end_penalty`` discounted at the end, where an end is the episode's or a lost life (what the world model is trained
to predict as an end on Atari), plus ``gamma^H V(s_H)`` where the agent's critic reads the sequence's frames as they
are played. With the agent, its actor proposes the prior's sequences by acting in the emulator. Without the critic
the sequences are played on the ALE itself, ``frame_skip`` frames an action as the wrappers do, with no screen read.
Only Atari environments snapshot.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from iris_wm.agent.actor_critic import ActorCritic, State
from iris_wm.agent.mpc import MPCPolicy
from iris_wm.agent.planning import PlannerConfig, check_policy_prior
from iris_wm.agent.rollout import observe
from iris_wm.envs.atari import EnvConfig, env_snapshot, make_env, restore_env
from iris_wm.runtime.errors import ConfigError


def encode_distinct(tokenizer, frames: np.ndarray, device: torch.device) -> torch.Tensor:
    """Tokens of ``uint8 frames (B, 3, S, S)``, each distinct frame encoded once. The planner's sequences share their
    first actions and often their frames (Breakout ignores FIRE while the ball is in play, and a paddle at the wall
    ignores a push into it), so the encoder, which was 85% of an emulator plan's time with the agent, sees far fewer
    frames; the tokens are those of encoding every frame, since frames are encoded independently."""
    rows = np.ascontiguousarray(frames.reshape(len(frames), -1))
    _, first, inverse = np.unique(rows.view(np.dtype((np.void, rows.shape[1]))), return_index=True, return_inverse=True)
    tokens = tokenizer.encode(torch.from_numpy(frames[first]).to(device))
    return tokens[torch.from_numpy(inverse.reshape(-1)).to(tokens.device)]


class EmulatorReturns:
    """``score`` for a :class:`~iris_wm.agent.planning.Planner` from the emulator itself; :meth:`set_context` takes
    the real environments (snapshotted there), and with an ``actor_critic`` the tokens of their current frames and
    its recurrent state before it reads them."""

    def __init__(
        self,
        config: EnvConfig,
        gamma: float = 0.99,
        end_penalty: float = 0.0,
        actor_critic: ActorCritic | None = None,
        tokenizer=None,
        bootstrap: bool = True,
        policy_prior: float = 0.0,
    ):
        check_policy_prior(policy_prior, actor_critic)
        if config.suite != "atari":
            raise ConfigError(f"The emulator as a model needs snapshots, which only Atari has; not {config.suite}.")
        if actor_critic is not None and tokenizer is None:
            raise ValueError("The agent reads the emulator's frames through the tokenizer: pass it.")
        self.env_config = config
        self.sims = [make_env(config, seed=0)]
        self.frame_skip = config.frame_skip
        self.gamma, self.end_penalty = gamma, end_penalty
        self.actor_critic, self.tokenizer = actor_critic, tokenizer
        self.critic = actor_critic if bootstrap else None
        self.policy_prior = policy_prior
        self.reader = actor_critic if bootstrap or policy_prior > 0 else None
        self.snapshots: list[dict] | None = None
        self.lives: list[int] = []
        self.tokens: torch.Tensor | None = None
        self.recurrent: State | None = None

    def set_context(self, envs: list[gym.Env], tokens: torch.Tensor | None = None, recurrent: State | None = None):
        if self.actor_critic is not None and (tokens is None or recurrent is None):
            raise ValueError("EmulatorReturns with an actor-critic: pass the current frames' tokens and its state.")
        self.snapshots = [env_snapshot(env) for env in envs]
        self.lives = [env.unwrapped.ale.lives() for env in envs]
        self.tokens, self.recurrent = tokens, recurrent

    def _ended(self, sim: gym.Env, e: int, terminated: bool) -> bool:
        return terminated or sim.unwrapped.ale.lives() < self.lives[e]

    def _play_ale(self, e: int, actions: np.ndarray) -> float:
        """One sequence on the bare emulator (no screens): its score without the critic."""
        base = self.sims[0].unwrapped
        restore_env(self.sims[0], self.snapshots[e])
        total = 0.0
        for t, action in enumerate(actions):
            reward = 0.0
            for _ in range(self.frame_skip):
                reward += base.ale.act(base._action_set[int(action)])
                if base.ale.game_over():
                    break
            total += self.gamma**t * reward
            if self._ended(self.sims[0], e, base.ale.game_over()):
                return total - self.gamma**t * self.end_penalty
        return total

    def _play_frames(self, e: int, actions: np.ndarray, frames: np.ndarray) -> tuple[float, bool, int]:
        """One sequence through the wrapped environment, its frames into ``frames (H, 3, S, S)``: the score without
        the bootstrap, whether it is still alive after its last step, and the steps it played."""
        sim = self.sims[0]
        restore_env(sim, self.snapshots[e])
        total = 0.0
        for t, action in enumerate(actions):
            frames[t], reward, terminated, truncated, _ = sim.step(int(action))
            total += self.gamma**t * float(reward)
            if self._ended(sim, e, terminated):
                frames[t + 1 :] = frames[t]
                return total - self.gamma**t * self.end_penalty, False, t + 1
            if truncated:
                frames[t + 1 :] = frames[t]
                return total, False, t + 1
        return total, True, len(actions)

    def __call__(self, actions: torch.Tensor) -> torch.Tensor:
        if self.snapshots is None:
            raise RuntimeError("EmulatorReturns: set_context(envs) with the real environments before scoring.")
        E, N, H = actions.shape[:3]
        plans = actions.cpu().numpy()
        if self.reader is None:
            values = [[self._play_ale(e, plans[e, n]) for n in range(N)] for e in range(E)]
            return torch.tensor(values, dtype=torch.float32, device=actions.device)
        size = self.env_config.size
        frames = np.zeros((E * N, H, 3, size, size), np.uint8)
        played = [self._play_frames(e, plans[e, n], frames[e * N + n]) for e in range(E) for n in range(N)]
        device = self.tokens.device
        later = encode_distinct(self.tokenizer, frames.reshape(E * N * H, *frames.shape[2:]), device)
        later = later.unflatten(0, (E * N, H))
        tokens = torch.cat([self.tokens.repeat_interleave(N, 0)[:, None], later], 1)  # (E N, H + 1, K)
        state = tuple(x.repeat_interleave(N, 0) for x in self.recurrent)
        total = torch.tensor([p[0] for p in played])
        steps = torch.tensor([p[2] for p in played])
        flat = actions.reshape(E * N, H).to(device)
        ac = self.reader
        for t in range(H):
            read = ac(observe(ac, self.tokenizer, tokens[:, t]), state)
            state = read.state
            if self.policy_prior > 0:
                log_pi = ac.policy(read.logits).log_prob(flat[:, t]).float().cpu()
                total = total + (steps > t) * self.gamma**t * self.policy_prior * log_pi
        if self.critic is not None:
            value = self.critic(observe(ac, self.tokenizer, tokens[:, H]), state).value.float().cpu()
            total = total + self.gamma**H * torch.tensor([p[1] for p in played]) * value
        return total.view(E, N).to(actions.device)

    @torch.no_grad()
    def prior(self, count: int, horizon: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``count`` sequences of ``horizon`` actions per environment ``(E, count, H)``: the actor acting in ``count``
        emulators restored from each environment's snapshot (its policy sampled at every step)."""
        ac = self.actor_critic
        if ac is None:
            raise RuntimeError("EmulatorReturns.prior needs the agent's actor-critic.")
        while len(self.sims) < count:
            self.sims.append(make_env(self.env_config, seed=0))
        sequences = torch.zeros(len(self.snapshots), count, horizon, dtype=torch.long)
        for e, snapshot in enumerate(self.snapshots):
            for sim in self.sims[:count]:
                restore_env(sim, snapshot)
            current = self.tokens[e : e + 1].repeat(count, 1)
            state = tuple(x[e : e + 1].repeat(count, 1) for x in self.recurrent)
            for t in range(horizon):
                out = ac(observe(ac, self.tokenizer, current), state)
                state, chosen = out.state, ac.policy(out.logits).sample(generator)
                frames = np.stack([sim.step(int(a))[0] for sim, a in zip(self.sims, chosen.tolist(), strict=False)])
                sequences[e, :, t] = chosen.cpu()
                current = encode_distinct(self.tokenizer, frames, current.device)
        return sequences

    def close(self) -> None:
        for sim in self.sims:
            sim.close()


class EmulatorMPCPolicy(MPCPolicy):
    """Model-predictive control with the emulator as the model, with the agent's actor prior and critic where an
    ``actor_critic`` (and its tokenizer) is given. :func:`~iris_wm.evaluate.play.play` hands it the environments
    it plays (:meth:`bind_envs`); same ``act`` as the other policies."""

    def __init__(
        self,
        config: EnvConfig,
        planner: PlannerConfig,
        generator: torch.Generator | None = None,
        actor_critic: ActorCritic | None = None,
        tokenizer=None,
        temperature: float = 0.5,
    ):
        self.env_config = config
        self.envs: list[gym.Env] | None = None
        super().__init__(tokenizer, None, planner, generator, actor_critic, temperature)

    def _scorer(self) -> EmulatorReturns:
        cfg = self.config
        return EmulatorReturns(
            self.env_config, cfg.gamma, cfg.end_penalty, self.actor_critic, self.tokenizer, cfg.critic, cfg.policy_prior
        )

    def bind(self, space) -> EmulatorMPCPolicy:
        if not space.is_discrete:
            raise ConfigError("The emulator as a model is Atari's: its actions are discrete.")
        return super().bind(space)

    def bind_envs(self, envs: list[gym.Env]) -> None:
        self.envs = envs

    @property
    def device(self) -> torch.device:
        return next(self.actor_critic.parameters()).device if self.actor_critic is not None else torch.device("cpu")

    def _set_context(self, tokens: torch.Tensor, proprio: torch.Tensor | None, state) -> None:
        if self.envs is None:
            raise RuntimeError("EmulatorMPCPolicy: bind_envs(envs) before acting (evaluate's play does it).")
        envs = self.envs if self.rows is None else [self.envs[int(e)] for e in self.rows]
        self.scorer.set_context(envs, tokens if self.actor_critic is not None else None, state)
