"""Episodes whose frames encode (episode, step), so every gather can be checked exactly."""

import numpy as np

from iris_wm.data.store import Episode


def counting_episode(marker: int, length: int, size: int = 8, num_actions: int = 4, terminated: bool = True):
    frames = np.zeros((length, 3, size, size), np.uint8)
    steps = np.arange(length)
    frames[:, 0] = marker % 256
    frames[:, 1] = (steps % 256)[:, None, None]
    frames[:, 2] = (steps // 256)[:, None, None]
    ends = np.zeros(length, bool)
    ends[-1] = True
    return Episode(
        observations=frames,
        actions=(steps + marker) % num_actions,
        rewards=(steps * 0.5 + marker).astype(np.float32),
        terminated=ends if terminated else np.zeros(length, bool),
        truncated=np.zeros(length, bool) if terminated else ends,
    )


def decode(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(marker, step) of frames shaped (..., 3, H, W)."""
    return frames[..., 0, 0, 0].astype(int), frames[..., 1, 0, 0].astype(int) + 256 * frames[..., 2, 0, 0].astype(int)
