"""Per-horizon rollout figures: exact pooled values, the copy-last baseline, dynamic pixels, episode bootstrap."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from iris_wm.evaluate.rollouts import DYNAMIC_LEVELS, RolloutErrors, pick_windows, rollout_errors, summarize

K = 4


def decode(tokens: torch.Tensor) -> torch.Tensor:
    """A stand-in tokenizer: a 3x8x8 frame whose top-left 2x2 pixels show the first token (x 10 levels)."""
    frames = torch.zeros(tokens.shape[0], 3, 8, 8, dtype=torch.uint8)
    frames[:, :, :2, :2] = (tokens[:, 0] * 10).clamp(0, 255).to(torch.uint8)[:, None, None, None]
    return frames


class Replay:
    """Imagination that replays the real future of the windows, chunk after chunk as they are reset, or repeats
    the last real frame (``frozen``)."""

    def __init__(self, future: torch.Tensor | None, frozen: bool, ensemble: bool = False):
        self.future, self.frozen, self.done, self.ensemble = future, frozen, 0, ensemble

    def __call__(self, config, generator):  # agent.imagination(...)
        return self

    def reset(self, tokens, actions):
        self.last, self.t = tokens[:, -1], 0
        self.rows = slice(self.done, self.done + len(tokens))
        self.done += len(tokens)

    def step(self, actions):
        self.t += 1
        tokens = self.last if self.frozen else self.future[self.rows, self.t - 1]
        if not self.ensemble:
            return SimpleNamespace(tokens=tokens)
        spread = torch.full((len(tokens),), float(self.t))  # an ensemble unsure in proportion to the horizon
        return SimpleNamespace(
            tokens=tokens, disagreement=SimpleNamespace(tokens=spread, reward=spread / 2, end=0 * spread)
        )


def agent(future, frozen=False, ensemble=False):
    return SimpleNamespace(tokenizer=SimpleNamespace(decode=decode), imagination=Replay(future, frozen, ensemble))


def windows(n=6, length=5):
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 20, (n, length, K), generator=g)
    frames = decode(tokens.flatten(0, 1)).view(n, length, 3, 8, 8)
    return tokens, frames, torch.zeros(n, length, dtype=torch.long)


def test_an_imagination_that_replays_the_truth_scores_perfectly_and_copy_last_is_computed_exactly():
    tokens, frames, actions = windows()
    burn_in = 2
    errors, pictures = rollout_errors(agent(tokens[:, burn_in:]), tokens, frames, actions, burn_in, 1.0, None, chunk=4)
    rows = summarize(errors, np.arange(6) // 2, [1, 2, 3])
    for row in rows:
        assert row["token_accuracy"] == 1.0 and row["frame_psnr"] == pytest.approx(100.0)
        h = row["horizon"]
        truth, last = frames[:, burn_in - 1 + h].float(), frames[:, burn_in - 1].float()
        expected = 10 * np.log10(255.0**2 / ((truth - last) ** 2).mean().item())
        assert row["copy_frame_psnr"] == pytest.approx(expected, rel=1e-6)
        same = (tokens[:, burn_in - 1] == tokens[:, burn_in - 1 + h]).float().mean().item()
        assert row["copy_token_accuracy"] == pytest.approx(same)
        moved = ((truth - last).abs() > DYNAMIC_LEVELS).any(1)  # (N, H, W)
        assert row["dynamic_fraction"] == pytest.approx(moved.float().mean().item())
        assert row["episodes"] == 3 and row["windows"] == 6
    assert pictures.shape == (4, 3, 3, 8, 8)  # the first chunk's imagined frames
    assert errors.disagreement is None  # one world model


def test_an_ensembles_disagreement_is_kept_per_window_and_horizon():
    tokens, frames, actions = windows()
    errors, _ = rollout_errors(agent(tokens[:, 2:], ensemble=True), tokens, frames, actions, 2, 1.0, None, chunk=4)
    assert np.array_equal(errors.disagreement["tokens"], np.tile([1.0, 2.0, 3.0], (6, 1)))
    assert np.array_equal(errors.disagreement["reward"], np.tile([0.5, 1.0, 1.5], (6, 1)))


def test_a_frozen_imagination_equals_the_copy_baseline():
    tokens, frames, actions = windows()
    errors, _ = rollout_errors(agent(None, frozen=True), tokens, frames, actions, 2, 1.0, None)
    for row in summarize(errors, np.arange(6), [1, 3]):
        assert row["token_accuracy"] == row["copy_token_accuracy"]
        assert row["frame_psnr"] == row["copy_frame_psnr"] and row["dynamic_psnr"] == row["copy_dynamic_psnr"]
        for gain in ("token_accuracy_gain", "frame_psnr_gain", "dynamic_psnr_gain"):
            assert row[gain] == 0 and row[f"{gain}_ci"] == [0, 0]  # paired: every resample differs by exactly 0


def test_gains_are_the_differences_with_paired_intervals():
    tokens, frames, actions = windows()
    errors, _ = rollout_errors(agent(tokens[:, 2:]), tokens, frames, actions, 2, 1.0, None)
    for row in summarize(errors, np.arange(6) // 2, [1, 2]):
        assert row["frame_psnr_gain"] == row["frame_psnr"] - row["copy_frame_psnr"]
        low, high = row["token_accuracy_gain_ci"]
        copy_low, copy_high = row["copy_token_accuracy_ci"]
        # Perfect imagination: the gain's interval is 1 minus the copy baseline's, end for end.
        assert low == pytest.approx(1 - copy_high) and high == pytest.approx(1 - copy_low)


def test_bootstrap_intervals_resample_episodes_and_contain_the_pooled_value():
    n, h = 40, 1
    rng = np.random.default_rng(1)
    hits = rng.integers(0, K + 1, (n, h)).astype(float)
    zeros = np.zeros((n, h))
    errors = RolloutErrors(
        hits, hits, zeros, zeros, zeros, zeros, zeros, zeros, values_per_frame=12, tokens_per_frame=K
    )
    one_episode = summarize(errors, np.zeros(n, int), [1])[0]
    assert one_episode["token_accuracy_ci"] == [one_episode["token_accuracy"]] * 2  # one cluster: nothing to resample
    row = summarize(errors, np.arange(n) // 4, [1])[0]
    low, high = row["token_accuracy_ci"]
    assert row["token_accuracy"] == pytest.approx(hits.sum() / (n * K))
    assert low < row["token_accuracy"] < high


def test_windows_are_distinct_held_out_and_inside_their_episode():
    lengths = np.array([3, 10, 7, 12, 5, 9])
    store = SimpleNamespace(
        num_episodes=len(lengths),
        episode_ids=np.arange(len(lengths)),
        episode_lengths=lengths,
        episode_starts=np.r_[0, np.cumsum(lengths)[:-1]],
    )
    firsts, episodes = pick_windows(store, 5, 100, 0.5, 0, np.random.default_rng(0))
    assert len(set(firsts.tolist())) == len(firsts)
    ends = store.episode_starts[episodes] + lengths[episodes]
    assert (firsts >= store.episode_starts[episodes]).all() and (firsts + 5 <= ends).all()
    from iris_wm.data.windows import split_episodes

    _, val = split_episodes(store, 0.5, 0)
    assert set(episodes.tolist()) <= set(val.tolist())
    assert len(firsts) == sum(max(lengths[p] - 5 + 1, 0) for p in val)  # every window that fits, when asked for more
