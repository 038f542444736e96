"""`iris-wm imagine --export`: imagined episodes written as a store, for training other learners on them.

Each synthetic episode starts from ``burn_in`` real steps of a start store (its training episodes by default, so
held-out episodes stay unseen): they build the actor-critic's recurrent state, the last of them that fit the
context prime the world model, and the episode's first row is the last of them. Then up to ``horizon`` imagined
steps follow, actions from the policy (the agent's actor-critic, uniformly random, or the actions recorded in the
start store after the window), the reward and the end from the world model's most likely prediction. An episode
the world model ends is ``terminated`` there; one that reaches the horizon is ``truncated``.

The export is a token store that the world-model and agent stages read like a real one (``--data.root``, or beside
a real store with ``--data.synthetic_root``); with ``frames=True`` it also holds the decoded frames as an episode
store in its ``frames/`` folder. Its manifest's ``synthetic`` block names the world model, the tokenizer (weights
digests), the policy, the temperature and the start store. It is written whole or not at all.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from iris_wm.agent.actor_critic import ActorCritic
from iris_wm.agent.bundle import Agent
from iris_wm.agent.rollout import observe
from iris_wm.data.episode import Episode
from iris_wm.data.sizes import check_sizes
from iris_wm.data.store import EpisodeStore, TokenStore
from iris_wm.data.tokens import check_tokenizer
from iris_wm.data.windows import split_episodes
from iris_wm.envs.imagination import ImaginationConfig, ImaginationEnv
from iris_wm.hub.checkpoints import load_model
from iris_wm.runtime.checks import at_least, within
from iris_wm.runtime.errors import ConfigError
from iris_wm.runtime.faults import maybe_fault
from iris_wm.runtime.files import complete_or_absent, require_new_output
from iris_wm.runtime.provenance import weights_digest

Policy = Literal["agent", "random", "store-actions"]
FRAMES = "frames"


def _starts(
    store: TokenStore, length: int, split: str, val_fraction: float, split_seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """First rows of every window of ``length`` steps inside an episode of the chosen split, and its episode."""
    train, val = split_episodes(store, val_fraction, split_seed)
    positions = {"train": train, "val": val, "all": np.arange(store.num_episodes)}[split]
    firsts, owners = [], []
    for p in positions:
        count = int(store.episode_lengths[p]) - length + 1
        if count > 0:
            firsts.append(store.episode_starts[p] + np.arange(count))
            owners.append(np.full(count, p))
    if not firsts:
        raise ConfigError(
            f"No {split} episode of {store.root} has the {length} steps a start needs (burn_in, plus the horizon "
            "for --policy store-actions). Lower --burn_in or --horizon, or collect longer episodes."
        )
    return np.concatenate(firsts), np.concatenate(owners)


class _Actor:
    """Chooses each step's actions for a batch: the actor-critic (burnt in on the real window), uniform, or recorded."""

    def __init__(self, policy: str, agent: Agent, temperature: float, generator: torch.Generator):
        self.policy, self.agent, self.temperature, self.generator = policy, agent, temperature, generator

    def start(self, tokens: torch.Tensor, recorded: torch.Tensor) -> None:
        """``tokens (B, C, K)`` of the real window and the real actions ``(B, C - 1 + H)`` from its first step."""
        self.recorded, self.burn_in = recorded, tokens.shape[1]
        if self.policy == "agent":
            network: ActorCritic = self.agent.actor_critic
            self.state = network.initial_state(tokens.shape[0], tokens.device)
            for t in range(tokens.shape[1] - 1):
                self.state = network(observe(network, self.agent.tokenizer, tokens[:, t]), self.state).state

    def act(self, t: int, current: torch.Tensor) -> torch.Tensor:
        if self.policy == "store-actions":
            return self.recorded[:, self.burn_in - 1 + t]
        if self.policy == "random":
            actions = self.agent.world_model.config.num_actions
            return torch.randint(0, actions, (current.shape[0],), generator=self.generator)
        network = self.agent.actor_critic
        out = network(observe(network, self.agent.tokenizer, current), self.state)
        self.state = out.state
        logits = out.logits.float()
        if self.temperature == 0:
            return logits.argmax(-1)
        return torch.multinomial((logits / self.temperature).softmax(-1), 1, generator=self.generator).squeeze(-1)


@torch.no_grad()
def export_episodes(
    world_model: str,
    tokenizer: str,
    tokens: str,
    export: str,
    policy: Policy = "agent",
    agent: str | None = None,
    num_episodes: int = 256,
    horizon: int = 20,
    burn_in: int = 4,
    prime_steps: int | None = None,
    temperature: float = 1.0,
    policy_temperature: float = 1.0,
    frames: bool = False,
    split: Literal["train", "val", "all"] = "train",
    val_fraction: float = 0.1,
    split_seed: int = 0,
    batch_size: int = 64,
    seed: int = 0,
) -> dict:
    """Imagine ``num_episodes`` episodes from real starts and write them as a synthetic token store.

    Args:
        world_model: the world model: a checkpoint of its stage, a pretrained (or agent) folder, or a Hub id.
        tokenizer: the tokenizer that encoded the start store (the same kinds of source).
        tokens: the token store whose episodes give the real starts.
        export: folder of the synthetic store to write (must not exist).
        policy: who acts: the agent's actor-critic, uniformly random actions, or the actions recorded after the
            start window.
        agent: the actor-critic for --policy agent: an agent checkpoint or folder (or any source holding one).
        num_episodes: synthetic episodes to write.
        horizon: imagined steps per episode at most (fewer when the world model ends it).
        burn_in: real steps each episode starts from: the actor-critic reads them, the world model is primed with
            the last of them that fit its context, and the episode's first row is the last.
        prime_steps: the last real steps that prime the world model (default: as many of ``burn_in`` as fit its
            context). Fewer are faster: a context kept full re-primes the cache at every imagined step (the demo
            agent trains with 1).
        temperature: sampling temperature of observation tokens (0: argmax).
        policy_temperature: sampling temperature of the agent's actions (0: the most likely).
        frames: also write the decoded frames, an episode store in the export's frames/ folder.
        split: episodes of the start store to start from (the held-out ones stay unseen with "train").
        val_fraction: validation share of the start store's split (as its world model was trained).
        split_seed: seed of that split.
        batch_size: episodes imagined at once.
        seed: seed of the starts, the sampling and the random policy.
    """
    at_least(1, "imagine --export", num_episodes=num_episodes, horizon=horizon, burn_in=burn_in, batch_size=batch_size)
    at_least(0, "imagine --export", temperature=temperature, policy_temperature=policy_temperature, seed=seed)
    within(0, 1, "imagine --export", val_fraction=val_fraction)
    if policy not in ("agent", "random", "store-actions"):
        raise ConfigError(f"--policy must be agent, random or store-actions, not {policy!r}.")
    if policy == "agent" and agent is None:
        raise ConfigError("--policy agent needs --agent (an agent checkpoint or folder); or use --policy random.")
    require_new_output(export, "synthetic store")
    models = Agent(
        load_model(tokenizer, "tokenizer"),
        load_model(world_model, "world_model"),
        load_model(agent, "actor_critic") if policy == "agent" else None,
    )
    start_store = TokenStore.open(tokens)
    check_tokenizer(start_store, models.tokenizer)
    check_sizes(world_model=models.world_model, token_store=start_store)
    at_least(1, "imagine --export", prime_steps=prime_steps)
    prime = min(prime_steps or burn_in, burn_in, models.world_model.config.context_steps - 1)  # as the agent stage
    length = burn_in + (horizon - 1 if policy == "store-actions" else 0)
    firsts, owners = _starts(start_store, length, split, val_fraction, split_seed)
    rng = np.random.default_rng(seed)
    chosen = rng.integers(0, len(firsts), num_episodes)
    generator = torch.Generator().manual_seed(seed)
    env = ImaginationEnv(models.world_model, models.tokenizer, ImaginationConfig(temperature=temperature), generator)
    actor = _Actor(policy, models, policy_temperature, generator)

    manifest_digest = hashlib.sha256((start_store.root / "manifest.json").read_bytes()).hexdigest()
    block = {
        "world_model": str(world_model),
        "world_model_digest": weights_digest(models.world_model),
        "tokenizer_digest": weights_digest(models.tokenizer),
        "policy": policy,
        "agent": None if agent is None else str(agent),
        "actor_critic_digest": weights_digest(models.actor_critic) if models.actor_critic is not None else None,
        "temperature": temperature,
        "policy_temperature": policy_temperature if policy == "agent" else None,
        "start_store": str(start_store.root.resolve()),
        "start_store_manifest_sha256": manifest_digest,
        "start_split": {"split": split, "val_fraction": val_fraction, "split_seed": split_seed},
        "burn_in": burn_in,
        "prime_steps": prime,
        "horizon": horizon,
        "seed": seed,
        "start_rows": [int(r) for r in firsts[chosen] + burn_in - 1],
    }
    start_settings = start_store.manifest["settings"]
    settings = {
        "env": start_settings.get("env"),
        "source_store": str(Path(export).resolve() / FRAMES) if frames else None,
        "tokenizer_checkpoint": start_settings.get("tokenizer_checkpoint"),
        "tokenizer_digest": start_settings.get("tokenizer_digest"),
        "tokens_per_frame": models.tokenizer.tokens_per_frame,
        "vocab_size": int(start_settings["vocab_size"]),
        "frame_shape": start_settings.get("frame_shape"),
        "synthetic": block,
    }
    steps = ends = reward_sum = reencoded = 0
    with complete_or_absent(export, "synthetic store") as partial:
        token_store = TokenStore.create(
            partial, TokenStore.token_spec(models.tokenizer.tokens_per_frame), start_store.num_actions, settings
        )
        frame_store = None
        if frames:
            spec = EpisodeStore.frame_spec(models.tokenizer.config.resolution)
            frame_store = EpisodeStore.create(
                Path(partial) / FRAMES, spec, start_store.num_actions, {"synthetic": block}
            )
        for begin in range(0, num_episodes, batch_size):
            picks = firsts[chosen[begin : begin + batch_size]]
            episodes = _imagine_batch(env, actor, start_store, picks, burn_in, prime, horizon)
            token_store.append(episodes)
            steps += sum(len(e) for e in episodes)
            ends += sum(bool(e.terminated[-1]) for e in episodes)
            reward_sum += float(sum(e.rewards.sum() for e in episodes))
            if frame_store is not None:
                decoded = [models.tokenizer.decode(torch.from_numpy(e.observations).long()) for e in episodes]
                reencoded += sum(
                    int((models.tokenizer.encode(d).numpy() == e.observations).sum())
                    for d, e in zip(decoded, episodes, strict=True)
                )
                frame_store.append(
                    [
                        Episode(d.numpy(), e.actions, e.rewards, e.terminated, e.truncated)
                        for d, e in zip(decoded, episodes, strict=True)
                    ]
                )
            maybe_fault(f"export:{begin}")
    summary = {
        "store": str(Path(export)),
        "episodes": num_episodes,
        "steps": steps,
        "ended_by_world_model": ends,
        "reward_per_step": reward_sum / steps,
        "policy": policy,
    }
    if frames:
        summary["reencoded_token_agreement"] = reencoded / (steps * models.tokenizer.tokens_per_frame)
    return summary


def _imagine_batch(
    env: ImaginationEnv, actor: _Actor, store: TokenStore, firsts: np.ndarray, burn_in: int, prime: int, horizon: int
) -> list[Episode]:
    """Imagine one batch of episodes from the real windows starting at rows ``firsts``."""
    rows = firsts[:, None] + np.arange(burn_in)
    window = torch.from_numpy(store.observations(rows)).long()
    # The recorded actions from the window's first step: those between its frames, and (store-actions) those after.
    taken = burn_in - 1 + (horizon if actor.policy == "store-actions" else 0)
    recorded = torch.from_numpy(store.columns.action[firsts[:, None] + np.arange(taken)].astype(np.int64))
    current = env.reset(window[:, burn_in - prime :], recorded[:, burn_in - prime : burn_in - 1])
    actor.start(window, recorded)
    observed, actions, rewards, ended = [], [], [], []
    for t in range(horizon):
        action = actor.act(t, current)
        step = env.step(action)
        observed.append(current)
        actions.append(action)
        rewards.append(step.reward.float())
        ended.append(step.terminated)
        current = step.tokens
    observed, actions = torch.stack(observed, 1).numpy(), torch.stack(actions, 1).numpy()
    rewards, ended = torch.stack(rewards, 1).numpy(), torch.stack(ended, 1).numpy()
    episodes = []
    for b in range(len(firsts)):
        hits = np.flatnonzero(ended[b])
        n = int(hits[0]) + 1 if len(hits) else horizon
        terminated = np.zeros(n, bool)
        truncated = np.zeros(n, bool)
        (terminated if len(hits) else truncated)[-1] = True
        tokens = observed[b, :n].astype(np.int16)
        episodes.append(Episode(tokens, actions[b, :n], rewards[b, :n].astype(np.float32), terminated, truncated))
    return episodes
