"""Playing inside the world model: one imagined game that a person (or the agent) steps an action at a time, the
real emulator stepped beside it with the same actions, and a recording of what was played. `iris-wm play` serves it
as a web page; this module knows nothing of the page.

A game starts from real frames: the emulator's first ``burn_in`` frames (no-ops after its reset; the real game then
goes on beside the imagined one from the same moment) or a window of a store's episodes. Each step the world model
imagines the next frame, its reward and whether the episode ended; the frame is decoded by the tokenizer.

With ``record`` the played steps are appended to a new episode store as they end: at a predicted end
(``terminated``), at a reset and when the playground closes (``truncated``). Its rows are the imagined frames shown,
the actions taken, the predicted rewards and ends, and its manifest's ``synthetic`` block names the models.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from iris_wm.agent.bundle import Agent
from iris_wm.agent.rollout import observe
from iris_wm.data.episode import Episode, EpisodeBuffer
from iris_wm.data.sizes import check_sizes
from iris_wm.data.store import EpisodeStore, TokenStore
from iris_wm.data.tokens import check_tokenizer
from iris_wm.data.windows import start_windows
from iris_wm.envs.atari import EnvConfig, make_env
from iris_wm.envs.imagination import ImaginationConfig, ImaginationEnv
from iris_wm.runtime.checks import at_least
from iris_wm.runtime.errors import ConfigError
from iris_wm.runtime.files import require_new_output
from iris_wm.runtime.provenance import weights_digest

KEYS = ["ArrowRight", "ArrowLeft", "ArrowUp", "ArrowDown", " "]
"""The keys of the basic actions (RIGHT, LEFT, UP, DOWN, FIRE); every action also has a digit or letter key."""
BASIC = {"RIGHT": "ArrowRight", "LEFT": "ArrowLeft", "UP": "ArrowUp", "DOWN": "ArrowDown", "FIRE": " "}
SPARE_KEYS = "0123456789qwertyuiopasdfghjkl"


def action_keys(meanings: list[str]) -> list[list[str]]:
    """The keyboard keys of each action: its digit or letter, and an arrow or space for the basic ones."""
    if len(meanings) > len(SPARE_KEYS):
        raise ConfigError(f"{len(meanings)} actions are more than the play page has keys for ({len(SPARE_KEYS)}).")
    return [[SPARE_KEYS[i], *([BASIC[name]] if name in BASIC else [])] for i, name in enumerate(meanings)]


@dataclass
class Frame:
    """What one step (or a reset) shows."""

    step: int
    imagined: np.ndarray  # uint8 (3, H, W)
    reward: float  # predicted for the last action (0 at a reset)
    end: bool  # the world model predicts that the episode ended after the last action
    real: np.ndarray | None = None  # the emulator's frame after the same action (None: no real game)
    real_reward: float | None = None
    real_end: bool | None = None
    action: int | None = None
    actor: str | None = None  # "human" or "agent"
    seconds: float = 0.0  # time the step took


class Playground:
    """One imagined game at a time over ``agent``'s world model (and the actor-critic, if it has one)."""

    def __init__(
        self,
        agent: Agent,
        starts: TokenStore | None = None,
        env_config: EnvConfig | None = None,
        temperature: float = 1.0,
        burn_in: int = 1,
        seed: int = 0,
        record: str | None = None,
    ):
        if agent.world_model is None:
            raise ConfigError("Playing needs a world model: give --world_model (or an agent that has one).")
        if starts is None and env_config is None:
            raise ConfigError("Give a start store (--tokens) or a game to start from, or both.")
        at_least(0, "play", temperature=temperature)
        at_least(1, "play", burn_in=burn_in)
        context = agent.world_model.config.context_steps
        if burn_in >= context:
            raise ConfigError(f"--burn_in must be below the world model's context of {context} steps; got {burn_in}.")
        if starts is not None:
            check_tokenizer(starts, agent.tokenizer)
            check_sizes(world_model=agent.world_model, token_store=starts)
        self.agent, self.starts, self.env_config, self.burn_in = agent, starts, env_config, burn_in
        self.generator = torch.Generator().manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        self.imagination = ImaginationEnv(
            agent.world_model, agent.tokenizer, ImaginationConfig(temperature=temperature), self.generator
        )
        self.game = make_env(env_config) if env_config is not None else None
        if self.game is not None:
            check_sizes(world_model=agent.world_model, game={"num_actions": int(self.game.action_space.n)})
            resolution = agent.tokenizer.config.resolution
            if env_config.size != resolution:
                raise ConfigError(
                    f"The game's frames are {env_config.size} pixels, the tokenizer's {resolution}: play with the "
                    "env settings the tokenizer was trained on (the start store's)."
                )
        self.episode_seed = seed
        self.windows = None
        self.recorder = _Recorder(record, self) if record else None
        self.step_count = 0

    # ------------------------------------------------------------------ what the page shows
    @property
    def action_meanings(self) -> list[str]:
        if self.game is not None:
            return list(self.game.unwrapped.get_action_meanings())
        return [f"ACTION {i}" for i in range(self.agent.world_model.config.num_actions)]

    @property
    def has_agent(self) -> bool:
        return self.agent.actor_critic is not None

    @property
    def temperature(self) -> float:
        return self.imagination.config.temperature

    def set_temperature(self, value: float) -> None:
        at_least(0, "play", temperature=value)
        self.imagination.config.temperature = float(value)

    # ------------------------------------------------------------------ playing
    @torch.inference_mode()  # about 10% faster than no_grad at batch 1, where overheads dominate
    def reset(self, source: str | None = None) -> Frame:
        """Start a new game from the emulator (``"game"``) or from a store window (``"store"``; the default when
        there is no game). A game played so far is recorded as truncated."""
        source = source or ("game" if self.game is not None else "store")
        if source not in ("game", "store") or (source == "game" and self.game is None):
            raise ConfigError(
                f"Cannot start from {source!r}: start from " + ("'game' or " * bool(self.game)) + "'store'."
            )
        if source == "store" and self.starts is None:
            raise ConfigError("There is no start store to start from: give --tokens, or start from the game.")
        if self.recorder is not None:
            self.recorder.end(terminated=False)
        real = None
        if source == "game":
            frame, _ = self.game.reset(seed=self.episode_seed)
            self.episode_seed += 1
            frames = [frame]
            for _ in range(self.burn_in - 1):
                frame, *_ = self.game.step(0)
                frames.append(frame)
            tokens = self.agent.tokenizer.encode(torch.from_numpy(np.stack(frames)))[None]
            actions = torch.zeros(1, self.burn_in - 1, dtype=torch.long)
            real = frames[-1]
        else:
            if self.windows is None:
                self.windows = start_windows(self.starts, self.burn_in)
            pick = int(self.rng.integers(0, len(self.windows[0])))
            tokens, actions = self.windows[0][pick : pick + 1].long(), self.windows[1][pick : pick + 1]
        current = self.imagination.reset(tokens, actions)
        self.source, self.step_count = source, 0
        if self.has_agent:
            network = self.agent.actor_critic
            self.state = network.initial_state(1)
            for t in range(tokens.shape[1] - 1):
                self.state = network(observe(network, self.agent.tokenizer, tokens[:, t]), self.state).state
        self.current = current
        self.frame = self.agent.tokenizer.decode(current)[0].numpy()
        return Frame(0, self.frame, 0.0, False, real)

    @torch.inference_mode()
    def step(self, action: int | None = None) -> Frame:
        """One imagined step with ``action`` (None: the agent chooses). The real game, if any, takes the same."""
        began = time.perf_counter()
        actor = "human" if action is not None else "agent"
        if action is None:
            if not self.has_agent:
                raise ConfigError("No actor-critic to act: give --agent, or press the action keys.")
            network = self.agent.actor_critic
            out = network(observe(network, self.agent.tokenizer, self.current), self.state)
            self.state = out.state
            action = int(torch.multinomial(out.logits.float().softmax(-1), 1, generator=self.generator))
        elif self.has_agent:  # the agent follows the game while a person plays, so it can take over
            network = self.agent.actor_critic
            self.state = network(observe(network, self.agent.tokenizer, self.current), self.state).state
        actions = self.agent.world_model.config.num_actions
        if not 0 <= action < actions:
            raise ConfigError(f"Action {action} is not one of the world model's {actions} actions (0..{actions - 1}).")
        shown = self.frame
        imagined = self.imagination.step(torch.tensor([action]))
        self.current = imagined.tokens
        self.frame = self.agent.tokenizer.decode(imagined.tokens)[0].numpy()
        reward, end = float(imagined.reward[0]), bool(imagined.terminated[0])
        if self.recorder is not None:
            self.recorder.add(shown, action, reward, end)
        real = real_reward = real_end = None
        if self.game is not None and self.source == "game":
            real, real_reward, terminated, truncated, _ = self.game.step(action)
            real_end = bool(terminated or truncated)
            if real_end:  # a lost life: an unseeded reset goes on with the same game (a new one after game over)
                self.game.reset()
        self.step_count += 1
        return Frame(
            self.step_count,
            self.frame,
            reward,
            end,
            real,
            None if real_reward is None else float(real_reward),
            real_end,
            action,
            actor,
            time.perf_counter() - began,
        )

    def close(self) -> None:
        """Write the game played so far (if recording) and close the emulator."""
        if self.recorder is not None:
            self.recorder.end(terminated=False)
        if self.game is not None:
            self.game.close()

    @property
    def recorded_steps(self) -> int:
        return 0 if self.recorder is None else self.recorder.store.num_steps + len(self.recorder.buffer)


class _Recorder:
    """The played steps, appended to a new episode store an episode at a time."""

    def __init__(self, folder: str, playground: Playground):
        require_new_output(folder, "recording store")
        agent = playground.agent
        block = {
            "world_model_digest": weights_digest(agent.world_model),
            "tokenizer_digest": weights_digest(agent.tokenizer),
            "actor_critic_digest": weights_digest(agent.actor_critic) if agent.actor_critic is not None else None,
            "policy": "play (a person's keys, or the agent where it was given control)",
            "temperature": playground.temperature,
            "start_store": str(Path(playground.starts.root).resolve()) if playground.starts is not None else None,
            "burn_in": playground.burn_in,
        }
        settings = {
            "env": playground.env_config.to_dict() if playground.env_config is not None else None,
            "action_meanings": playground.action_meanings,
            "synthetic": block,
        }
        size = agent.tokenizer.config.resolution
        self.store = EpisodeStore.create(
            folder, EpisodeStore.frame_spec(size), agent.world_model.config.num_actions, settings
        )
        self.buffer = EpisodeBuffer()

    def add(self, frame: np.ndarray, action: int, reward: float, end: bool) -> None:
        self.buffer.add(frame, action, reward, end, False)
        if end:
            self._flush()

    def end(self, terminated: bool) -> None:
        """Close the episode being played (truncated unless the world model ended it) and write it."""
        if len(self.buffer) and not terminated:
            self.buffer.truncated[-1] = True
        self._flush()

    def _flush(self) -> None:
        if len(self.buffer):
            episode: Episode = self.buffer.to_episode()
            self.store.append([episode])
        self.buffer = EpisodeBuffer()
