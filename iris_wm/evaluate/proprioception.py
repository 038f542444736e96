"""Open-loop prediction of the proprioceptive state against constant-velocity extrapolation.

Each held-out window starts from ``burn_in`` real steps (frames, states and the actions between them) and then
follows the real actions for ``horizon`` imagined steps; the imagined state at each horizon is compared with the
real one. The baseline extrapolates every state component at its last observed rate of change,
``s_{t0} + h (s_{t0} - s_{t0 - 1})``, which is what a controller without a model assumes. Figures are root mean
square errors over windows and components, with 95% bootstrap intervals over episodes (a cluster bootstrap).
"""

from __future__ import annotations

import numpy as np
import torch

from iris_wm.data.store import TokenStore
from iris_wm.evaluate.rollouts import episode_resamples, interval, pick_windows


@torch.no_grad()
def state_rollouts(
    world_model,
    tokens: TokenStore,
    burn_in: int = 4,
    horizon: int = 20,
    windows: int = 256,
    temperature: float = 0.0,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    seed: int = 0,
    horizons: tuple[int, ...] = (1, 10, 20),
    draws: int = 1000,
) -> dict:
    """Imagine held-out windows of a world model of proprioception and score its states per horizon (argmax
    imagination by default: the point prediction)."""
    from iris_wm.envs.imagination import ImaginationConfig, ImaginationEnv

    if not world_model.config.state_dim:
        raise ValueError("This world model models no state (state_dim is None): there is nothing to score.")
    if burn_in < 2:
        raise ValueError(f"burn_in must be at least 2 (the baseline needs a rate of change); got {burn_in}.")
    rng = np.random.default_rng(seed)
    firsts, episodes = pick_windows(tokens, burn_in + horizon, windows, val_fraction, split_seed, rng)
    rows = firsts[:, None] + np.arange(burn_in + horizon)
    frames = torch.from_numpy(tokens.observations(rows)).long()
    states = torch.from_numpy(tokens.columns.state[rows])
    actions = torch.from_numpy(tokens.columns.action[rows])
    env = ImaginationEnv(
        world_model,
        config=ImaginationConfig(temperature=temperature, precision="fp32"),
        generator=torch.Generator().manual_seed(seed),
    )
    env.reset(frames[:, :burn_in], actions[:, : burn_in - 1], states[:, :burn_in])
    imagined = torch.stack([env.step(actions[:, burn_in - 1 + h]).state for h in range(horizon)], 1)
    real = states[:, burn_in:]
    last, before = states[:, burn_in - 1], states[:, burn_in - 2]
    steps = torch.arange(1, horizon + 1, dtype=torch.float32)[None, :, None]
    extrapolated = last[:, None] + steps * (last - before)[:, None]
    model_se = (imagined - real).pow(2).mean(-1).double().numpy()  # (N, H) mean over components
    baseline_se = (extrapolated - real).pow(2).mean(-1).double().numpy()
    counts, clusters = episode_resamples(episodes, draws, rng)
    n = counts.shape[1]
    weights = counts[:, clusters]
    rows_out = []
    for h in horizons:
        if h > horizon:
            continue
        row = {"horizon": h}
        for name, se in (("rmse", model_se[:, h - 1]), ("constant_velocity_rmse", baseline_se[:, h - 1])):
            boot = np.sqrt(weights @ se / weights.sum(1))
            row[name] = float(np.sqrt(se.mean()))
            row[f"{name}_ci"] = interval(boot)
        row["reduction"] = 1 - row["rmse"] / row["constant_velocity_rmse"]
        rows_out.append(row)
    return {
        "windows": len(firsts),
        "episodes": int(n),
        "burn_in": burn_in,
        "horizon": horizon,
        "temperature": temperature,
        "per_horizon": rows_out,
    }
