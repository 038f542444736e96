"""Does the world model use the actions? Held-out cross-entropy with the true actions against actions permuted
across windows.

Each held-out window is scored twice: with its own actions, and with the actions of another window (a random
permutation of the windows, so the actions keep their distribution but lose their link to the frames). A world
model that ignores its actions scores both the same. The difference per window is paired, so its interval is a
bootstrap over windows of the mean difference.
"""

from __future__ import annotations

import numpy as np
import torch

from iris_wm.data.store import TokenStore
from iris_wm.data.windows import WindowDataset
from iris_wm.evaluate.rollouts import interval


@torch.no_grad()
def window_cross_entropy(world_model, batch) -> np.ndarray:
    """Observation cross-entropy (nats per token; the state's tokens included for a world model of proprioception)
    of every window of ``batch`` on its own, as the loss computes it."""
    values = []
    for i in range(len(batch)):
        one = slice(i, i + 1)
        states = batch.states[one] if world_model.config.state_dim else None
        losses = world_model.loss(
            batch.observations[one],
            batch.actions[one],
            batch.rewards[one],
            batch.terminated[one],
            batch.mask[one],
            states,
        )
        values.append(float(losses.observation))
    return np.array(values)


@torch.no_grad()
def action_conditioning(
    world_model, tokens: TokenStore, episodes: np.ndarray, windows: int = 256, seed: int = 0, draws: int = 2000
) -> dict:
    """Up to ``windows`` complete held-out windows of ``context_steps`` steps from ``episodes`` (positions in
    ``tokens``), scored with true and with permuted actions: the mean cross-entropies, the relative reduction the
    true actions give, and a 95% paired bootstrap interval of the mean difference (permuted minus true)."""
    rng = np.random.default_rng(seed)
    data = WindowDataset(tokens, np.sort(episodes), world_model.config.context_steps, complete=True)
    if len(data) < 2:
        raise ValueError(
            f"Action conditioning needs at least 2 held-out windows of {world_model.config.context_steps} steps; "
            f"the {len(episodes)} episodes given hold {len(data)}. Collect longer or more episodes."
        )
    chosen = np.sort(rng.choice(len(data), size=min(windows, len(data)), replace=False))
    batch = data.__getitems__(chosen)
    was_training = world_model.training
    world_model.eval()
    true = window_cross_entropy(world_model, batch)
    order = torch.from_numpy(rng.permutation(len(chosen)))
    batch.actions = batch.actions[order]
    permuted = window_cross_entropy(world_model, batch)
    world_model.train(was_training)
    difference = permuted - true
    resampled = difference[rng.integers(0, len(difference), (draws, len(difference)))].mean(1)
    return {
        "windows": len(chosen),
        "ce_true_actions": float(true.mean()),
        "ce_permuted_actions": float(permuted.mean()),
        "reduction": float(1 - true.mean() / permuted.mean()),
        "difference": float(difference.mean()),
        "difference_ci": interval(resampled),
    }
