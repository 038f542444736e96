"""A token store from a known stochastic process, so world models of different sizes learn it differently."""

import numpy as np
import torch

from iris_wm.data.store import Episode, TokenStore
from iris_wm.data.windows import WindowDataset


def synthetic_token_store(
    root,
    episodes: int = 40,
    length: int = 60,
    tokens_per_frame: int = 4,
    vocab_size: int = 32,
    num_actions: int = 3,
    noise: float = 0.3,
    seed: int = 0,
    offset: int = 0,
    settings: dict | None = None,
) -> TokenStore:
    """Tokens from a fixed random successor table ``succ``: token k of a frame is ``succ[token k-1]``, and token 0
    is ``succ[(token 0 of the previous frame + action) mod V]``; each is replaced by a uniform draw with
    probability ``noise``. Learnable structure (bigrams, and the action's effect across frames) plus an
    irreducible entropy floor. ``offset`` is added to every token (a store of codes another one never uses)."""
    rng = np.random.default_rng(seed)
    succ = rng.permutation(vocab_size)
    store = TokenStore.create(
        root,
        TokenStore.token_spec(tokens_per_frame),
        num_actions,
        {
            "vocab_size": vocab_size + offset,
            "tokens_per_frame": tokens_per_frame,
            "env": "synthetic",
            **(settings or {}),
        },
    )
    batch = []
    for _ in range(episodes):
        tokens = np.empty((length, tokens_per_frame), np.int64)
        actions = rng.integers(0, num_actions, length)
        previous = rng.integers(0, vocab_size)
        for t in range(length):
            for k in range(tokens_per_frame):
                source = (previous + actions[t - 1]) % vocab_size if k == 0 and t > 0 else tokens[t, k - 1]
                if k == 0 and t == 0:
                    source = previous
                tokens[t, k] = rng.integers(0, vocab_size) if rng.random() < noise else succ[source]
            previous = tokens[t, 0]
        ends = np.zeros(length, bool)
        ends[-1] = True
        batch.append(
            Episode(
                (tokens + offset).astype(np.int16),
                actions,
                (actions == 0).astype(np.float32),
                ends,
                np.zeros(length, bool),
            )
        )
    store.append(batch)
    return store


def fit_windows(model, store: TokenStore, episodes, steps: int, seed: int = 0, context: int = 4):
    """Train ``model`` ``steps`` AdamW steps (lr 3e-3) on batches of 32 ``context``-step windows of ``episodes``."""
    windows = WindowDataset(store, episodes, context, complete=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        batch = windows.__getitems__(rng.integers(0, len(windows), 32))
        loss = model.loss(batch.observations, batch.actions, batch.rewards, batch.terminated, batch.mask).total
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()
