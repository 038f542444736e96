"""One held-out window, real and imagined side by side, with the rewards and episode ends marked: the picture that
shows whether a world model has learnt the game.

The window is chosen among the held-out ones to contain a reward and an end where one exists (Breakout's random
play scores rarely), so the picture shows the model meeting both. It may end with its episode, whose end the
world model should predict. The world model is primed with ``burn_in`` real
steps and follows the real actions; under each column a bar marks the reward (green: positive, red: negative)
and a second bar the episode end (white), for the real step (top strip) and as the model predicted it (bottom).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from iris_wm.data.windows import split_episodes
from iris_wm.envs.imagination import ImaginationConfig

MARK = 4  # pixels of each marker bar


def pick_window(tokens, burn_in: int, horizon: int, val_fraction: float, split_seed: int) -> int | None:
    """First row of the held-out window whose imagined steps (rows ``first + burn_in - 1`` on, ``horizon`` of them,
    all inside one episode) hold a reward and an end, the most rewards first, the earliest among equals; None where
    no validation episode is long enough. An episode's end is its last row, so a window may reach it."""
    length = burn_in + horizon - 1  # rows whose frames or actions are used
    _, val = split_episodes(tokens, val_fraction, split_seed)
    best, best_score = None, -1.0
    columns = tokens.columns
    for position in val:
        start, size = int(tokens.episode_starts[position]), int(tokens.episode_lengths[position])
        for first in range(start, start + size - length + 1):
            rows = slice(first + burn_in - 1, first + length)
            score = float((columns.reward[rows] != 0).any()) + float(columns.terminated[rows].any())
            score += 0.01 * float((columns.reward[rows] != 0).sum())
            if score > best_score:
                best, best_score = first, score
    return best


@torch.no_grad()
def showcase(agent, token_store, frame_store, out: Path, burn_in: int, horizon: int, val_fraction: float = 0.1,
             split_seed: int = 0, seed: int = 0) -> dict | None:  # fmt: skip
    """Write ``out`` (PNG) and return the window's real and predicted rewards and ends, or None without a window."""
    first = pick_window(token_store, burn_in, horizon, val_fraction, split_seed)
    if first is None:
        return None
    rows = np.arange(first, first + burn_in + horizon - 1)
    tokens = torch.from_numpy(token_store.observations(rows[:burn_in])).long()[None]
    actions = torch.from_numpy(token_store.columns.action[rows])[None]
    env = agent.imagination(ImaginationConfig(temperature=1.0), torch.Generator().manual_seed(seed))
    env.reset(tokens, actions[:, : burn_in - 1])
    imagined, rewards, ends = [], [], []
    for h in range(horizon):
        step = env.step(actions[:, burn_in - 1 + h])
        imagined.append(env.frames(step.tokens)[0])
        rewards.append(float(step.reward[0]))
        ends.append(bool(step.terminated[0]))
    # The reward and end of a step are those that followed its action: shown under the frame it led to. After the
    # episode's last step there is no real frame: that column stays black on the real side.
    steps = rows[burn_in - 1 :]
    real = {
        "reward": token_store.columns.reward[steps].astype(float).tolist(),
        "end": token_store.columns.terminated[steps].astype(bool).tolist(),
    }
    predicted = {"reward": rewards, "end": ends}
    frames = np.zeros((horizon, *frame_store.spec.shape), np.uint8)
    episode_end = int(np.searchsorted(token_store.episode_starts, first, side="right"))
    last = int(token_store.episode_starts[episode_end - 1] + token_store.episode_lengths[episode_end - 1])
    shown = np.arange(first + burn_in, first + burn_in + horizon)
    inside = shown < last
    frames[inside] = frame_store.observations(shown[inside])
    _save(out, frames, torch.stack(imagined).numpy(), real, predicted)
    return {"first_row": int(first), "burn_in": burn_in, "horizon": horizon, "real": real, "predicted": predicted}


def _bars(marks: dict, width: int) -> np.ndarray:
    """``(2 * MARK, H * width, 3)``: the reward bar over the end bar, one cell per step."""
    horizon = len(marks["reward"])
    bars = np.zeros((2 * MARK, horizon * width, 3), np.uint8)
    for t, (reward, end) in enumerate(zip(marks["reward"], marks["end"], strict=True)):
        cell = slice(t * width + 1, (t + 1) * width - 1)
        if reward > 0:
            bars[:MARK, cell] = (40, 200, 40)
        elif reward < 0:
            bars[:MARK, cell] = (220, 40, 40)
        if end:
            bars[MARK:, cell] = (255, 255, 255)
    return bars


def _save(path: Path, real: np.ndarray, imagined: np.ndarray, real_marks: dict, predicted_marks: dict) -> None:
    from PIL import Image

    width = real.shape[-1]
    strip = lambda frames: np.concatenate(list(frames.transpose(0, 2, 3, 1)), axis=1)  # noqa: E731
    gap = np.full((MARK, real.shape[0] * width, 3), 64, np.uint8)
    picture = np.concatenate(
        [strip(real), _bars(real_marks, width), gap, strip(imagined), _bars(predicted_marks, width)], axis=0
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture).resize((picture.shape[1] * 2, picture.shape[0] * 2), Image.NEAREST).save(path)
