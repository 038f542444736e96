"""Windows of consecutive steps: exact alignment, padding masks, and a split that is stable under appends."""

import numpy as np
import pytest
import torch

from helpers.counting import counting_episode, decode
from iris_wm.data.store import EpisodeStore, ObsSpec
from iris_wm.data.windows import WindowDataset, split_episodes

SPEC = ObsSpec("frame", "uint8", (3, 8, 8))
LENGTHS = [6, 1, 9, 4, 13]


@pytest.fixture
def store(tmp_path):
    store = EpisodeStore.create(tmp_path / "s", SPEC, 4, {})
    store.append([counting_episode(i, n) for i, n in enumerate(LENGTHS[:3])])
    store.append([counting_episode(i + 3, n, terminated=False) for i, n in enumerate(LENGTHS[3:])])
    return store


@pytest.mark.parametrize("pad", ["right", "left"])
@pytest.mark.parametrize("T", [1, 4, 20])
def test_every_window_matches_its_episode_exactly(store, pad, T):
    dataset = WindowDataset(store, np.arange(len(LENGTHS)), T, pad)
    assert len(dataset) == sum(LENGTHS)
    batch = dataset.__getitems__(list(range(len(dataset))))
    markers, steps = decode(batch.observations.numpy())
    anchor = 0
    for episode, n in enumerate(LENGTHS):
        for step in range(n):
            expected_steps = step + np.arange(T) if pad == "right" else step - T + 1 + np.arange(T)
            valid = (expected_steps >= 0) & (expected_steps < n)
            row = anchor + step
            np.testing.assert_array_equal(batch.mask[row].numpy(), valid)
            np.testing.assert_array_equal(markers[row][valid], episode)
            np.testing.assert_array_equal(steps[row][valid], expected_steps[valid])
            assert (batch.observations[row][~torch.from_numpy(valid)] == 0).all(), "padding is zero-filled"
            reference = counting_episode(episode, n)
            np.testing.assert_array_equal(batch.actions[row].numpy()[valid], reference.actions[expected_steps[valid]])
            np.testing.assert_allclose(batch.rewards[row].numpy()[valid], reference.rewards[expected_steps[valid]])
            assert not batch.terminated[row][~torch.from_numpy(valid)].any()
            assert (batch.rows[row][~torch.from_numpy(valid)] == -1).all()
        anchor += n


def test_episode_end_flags_survive_windowing(store):
    dataset = WindowDataset(store, np.array([0, 4]), 20, "right")
    batch = dataset.__getitems__([0, len(dataset) - 13])
    assert batch.terminated[0].sum() == 1 and batch.terminated[0, 5]
    assert batch.truncated[1].sum() == 1 and batch.truncated[1, 12] and not batch.terminated[1].any()


def test_split_is_disjoint_seeded_and_stable_under_appends(tmp_path):
    store = EpisodeStore.create(tmp_path / "s", SPEC, 4, {})
    store.append([counting_episode(i, 2) for i in range(40)])
    train, val = split_episodes(store, 0.25, seed=7)
    assert set(train).isdisjoint(val) and len(train) + len(val) == 40
    assert 4 <= len(val) <= 18
    assert (split_episodes(store, 0.25, seed=7)[1] == val).all()
    assert not (split_episodes(store, 0.25, seed=8)[1].tolist() == val.tolist())
    store.append([counting_episode(i, 2) for i in range(40, 80)])
    _, val_after = split_episodes(store, 0.25, seed=7)
    assert set(val) == set(val_after[val_after < 40]), "appending must not move stored episodes across the split"


def test_tiny_stores_get_one_validation_episode(tmp_path):
    store = EpisodeStore.create(tmp_path / "s", SPEC, 4, {})
    store.append([counting_episode(0, 3), counting_episode(1, 3)])
    train, val = split_episodes(store, 0.01, seed=0)
    assert len(train) == 1 and len(val) == 1


def test_a_bootstrap_resample_draws_training_episodes_with_replacement(tmp_path):
    from iris_wm.data.datamodule import StoreDataModule

    store = EpisodeStore.create(tmp_path / "s", SPEC, 4, {})
    store.append([counting_episode(i, 2 + i % 5) for i in range(40)])
    plain = StoreDataModule(str(store.root), sequence_length=3, val_fraction=0.2)
    plain.setup()
    drawn = {}
    for seed in (1, 2):
        member = StoreDataModule(str(store.root), sequence_length=3, val_fraction=0.2, bootstrap_seed=seed)
        member.setup()
        episodes = member.train_episodes
        assert len(episodes) == len(plain.train_episodes) and set(episodes) <= set(plain.train_episodes)
        assert len(set(episodes)) < len(episodes), "with replacement: some episodes twice, others left out"
        np.testing.assert_array_equal(member.val_episodes, plain.val_episodes)  # validation is never resampled
        assert len(member.train_set) == store.episode_lengths[episodes].sum()
        drawn[seed] = episodes
    assert not np.array_equal(drawn[1], drawn[2])
    again = StoreDataModule(str(store.root), sequence_length=3, val_fraction=0.2, bootstrap_seed=1)
    again.setup()
    np.testing.assert_array_equal(again.train_episodes, drawn[1])
    with pytest.raises(ValueError, match="bootstrap_seed"):
        StoreDataModule(str(store.root), bootstrap_seed=-1)
