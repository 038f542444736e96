"""Reconstruction figures on dynamic pixels: exact pooled values, both baselines, token stability."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from iris_wm.evaluate.reconstruction import reconstruction_figures


def moving_dot_store(lengths=(5, 4)):
    """Episodes of 8x8 frames on a grey screen with one white pixel that moves right one pixel a step."""
    frames = []
    for length in lengths:
        for t in range(length):
            frame = np.full((3, 8, 8), 50, np.uint8)
            frame[:, 2, t] = 250
            frames.append(frame)
    frames = np.stack(frames)
    starts = np.r_[0, np.cumsum(lengths)[:-1]]
    return SimpleNamespace(
        episode_starts=starts, episode_lengths=np.array(lengths), observations=lambda rows: frames[rows]
    )


class Perfect:
    """A tokenizer that gives the frame back exactly; its 2x2 grid of tokens is the dot's column in each cell."""

    config = SimpleNamespace(grid=2)

    def encode(self, frames):
        column = frames[:, 0, 2].float().argmax(-1)  # (B,) where the dot is
        tokens = torch.zeros(len(frames), 4, dtype=torch.long)
        tokens[:, 0] = torch.where(column < 4, column + 1, 0)  # the dot's cell is the top-left or top-right one
        tokens[:, 1] = torch.where(column >= 4, column + 1, 0)
        return tokens

    def decode(self, tokens):
        frames = torch.full((len(tokens), 3, 8, 8), 50, dtype=torch.uint8)
        column = tokens[:, 0] + tokens[:, 1] - 1
        frames[torch.arange(len(tokens)), :, 2, column] = 250
        return frames


def test_a_perfect_tokenizer_against_both_baselines():
    store = moving_dot_store()
    mean = np.full((3, 8, 8), 50.0)
    figures = reconstruction_figures(Perfect(), store, np.array([0, 1]), mean)
    assert figures["pairs"] == 4 + 3
    assert figures["tokenizer/psnr"] == pytest.approx(100.0) and figures["tokenizer/dynamic_psnr"] == pytest.approx(
        100.0
    )
    # Each pair has two dynamic pixels (where the dot left, where it arrived), 3 channels each, of 192 values.
    assert figures["dynamic_fraction"] == pytest.approx(2 * 3 / 192)
    # The previous frame is 200 off on both dynamic pixels; the mean frame on one of them (where the dot is).
    assert figures["previous_frame/dynamic_l1"] == pytest.approx(200.0)
    assert figures["mean_frame/dynamic_l1"] == pytest.approx(100.0)
    expected = 10 * np.log10(255.0**2 / (2 * 3 * 200.0**2 / 192))
    assert figures["previous_frame/psnr"] == pytest.approx(expected)
    # Only the top cells see the dot move, and only their tokens change: no flicker where pixels are still.
    assert figures["tokens/changed_where_pixels_static"] == 0.0
    assert figures["cells/pixels_changed"] == pytest.approx(figures["tokens/changed"])


def test_no_pair_is_explained():
    with pytest.raises(ValueError, match="two frames"):
        reconstruction_figures(Perfect(), moving_dot_store((1,)), np.array([0]), np.zeros((3, 8, 8)))
