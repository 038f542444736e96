"""The built-in point mass as test data: a store of frames, continuous actions and states, and a token store made
from it by a fixed stand-in tokenizer (no training)."""

import numpy as np
import torch

from helpers.tokens import fit_windows
from iris_wm.data.episode import Episode
from iris_wm.data.spaces import ActionSpace, StateSpec
from iris_wm.data.store import EpisodeStore, TokenStore
from iris_wm.data.tokens import write_token_store
from iris_wm.data.windows import split_episodes
from iris_wm.envs.point_mass import STATE_NAMES, PointMass
from iris_wm.evaluate.conditioning import action_conditioning
from sequence_model.gpt import GPTConfig
from sequence_model.world_model import WorldModel, WorldModelConfig

SIZE, HALF = 16, 8
VOCAB = 1 + HALF * HALF


def quadrant_tokens(frames: np.ndarray) -> np.ndarray:
    """A fixed stand-in tokenizer: 4 tokens per frame, one per quadrant, each 0 when the mass is not in it or
    1 + the mass's pixel within it (the mass is the only pixel with red)."""
    red = frames[:, 0] > 128  # (N, 16, 16)
    tokens = np.zeros((len(frames), 4), np.int16)
    for q, (r, c) in enumerate(((0, 0), (0, HALF), (HALF, 0), (HALF, HALF))):
        patch = red[:, r : r + HALF, c : c + HALF].reshape(len(frames), -1)
        tokens[:, q] = np.where(patch.any(1), 1 + patch.argmax(1), 0)
    return tokens


def point_mass_store(root, episodes: int, length: int, seed: int) -> EpisodeStore:
    env = PointMass(size=SIZE, max_steps=length, dot=1)
    store = EpisodeStore.create(
        root,
        EpisodeStore.frame_spec(SIZE),
        ActionSpace.box([-1, -1], [1, 1]),
        {"env": "point-mass"},
        state=StateSpec.named(STATE_NAMES),
        fps=PointMass.metadata["render_fps"],
    )
    rng = np.random.default_rng(seed)
    batch = []
    for e in range(episodes):
        frame, info = env.reset(seed=seed * 100_000 + e)
        frames, states, actions, rewards = [], [], [], []
        for _ in range(length):
            action = rng.uniform(-1, 1, 2).astype(np.float32)
            frames.append(frame)
            states.append(info["state"])
            actions.append(action)
            frame, reward, _, truncated, info = env.step(action)
            rewards.append(reward)
        ends = np.zeros(length, bool)
        ends[-1] = True
        batch.append(
            Episode(
                np.stack(frames),
                np.stack(actions),
                np.array(rewards, np.float32),
                np.zeros(length, bool),
                ends,
                np.stack(states),
            )
        )
    store.append(batch)
    return store


def tokens_of(store: EpisodeStore, out) -> TokenStore:
    """The quadrant tokens of a store of point-mass frames, as a token store at ``out``."""
    frames = store.observations(np.arange(store.num_steps))
    config = type("Config", (), {"tokens_per_frame": 4, "vocab_size": VOCAB})()
    return write_token_store(out, store, quadrant_tokens(frames), config, checkpoint=None)


def point_mass_tokens(root, episodes: int, length: int, seed: int = 0) -> TokenStore:
    """``root/episodes`` (random forces) and ``root/tokens``, its quadrant tokens."""
    store = point_mass_store(root / "episodes", episodes=episodes, length=length, seed=seed)
    return tokens_of(store, root / "tokens")


def conditioning_after_training(tokens: TokenStore, steps: int = 400) -> dict:
    """Train a small parallel world model of the point mass's continuous actions on 80% of the episodes (``steps``
    batches of 32 four-step windows), then measure its action conditioning on the other 20%."""
    torch.manual_seed(0)
    model = WorldModel(
        WorldModelConfig(
            vocab_size=VOCAB,
            tokens_per_frame=4,
            action_dim=2,
            context_steps=4,
            prediction="parallel",
            gpt=GPTConfig(num_layers=2, num_heads=2, embed_dim=32),
        )
    )
    train, held_out = split_episodes(tokens, 0.2, 0)
    fit_windows(model, tokens, train, steps)
    return action_conditioning(model, tokens, held_out, windows=256, seed=0)


def state_only_tokens(store: EpisodeStore, out) -> TokenStore:
    """The store's steps without their frames: a token store of 0 tokens a step (proprioception alone), as a
    state-only import writes."""
    tokens = TokenStore.create(
        out,
        TokenStore.token_spec(0),
        store.action_space,
        {"tokens_per_frame": 0, "vocab_size": 0},
        store.state,
        store.fps,
    )
    episodes = [store.episode(i) for i in range(store.num_episodes)]
    for e in episodes:
        e.observations = np.zeros((len(e), 0), np.int16)
    tokens.append(episodes)
    return TokenStore.open(out)
