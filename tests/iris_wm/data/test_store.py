"""Episode store: round trips, validation, atomicity, and clear errors for damaged or foreign stores."""

import json
import os

import numpy as np
import pytest

from helpers.counting import counting_episode, decode
from iris_wm.data.store import FORMAT_VERSION, EpisodeStore, ObsSpec, StoreError, TokenStore

SPEC = ObsSpec("frame", "uint8", (3, 8, 8))
SETTINGS = {"env": {"game": "Counting"}}


def new_store(tmp_path, name="store"):
    return EpisodeStore.create(tmp_path / name, SPEC, 4, SETTINGS)


def test_round_trip_across_appends_and_reopen(tmp_path):
    store = new_store(tmp_path)
    lengths = [5, 1, 12, 7]
    store.append([counting_episode(i, n) for i, n in enumerate(lengths[:2])])
    store.append([counting_episode(i + 2, n) for i, n in enumerate(lengths[2:])])
    for reopened in (store, EpisodeStore.open(tmp_path / "store")):
        assert reopened.num_steps == sum(lengths) and reopened.num_episodes == 4
        assert list(reopened.episode_lengths) == lengths
        for position, n in enumerate(lengths):
            episode = reopened.episode(position)
            expected = counting_episode(position, n)
            np.testing.assert_array_equal(episode.observations, expected.observations)
            np.testing.assert_array_equal(episode.actions, expected.actions)
            np.testing.assert_array_equal(episode.rewards, expected.rewards)
            np.testing.assert_array_equal(episode.terminated, expected.terminated)


def test_gather_of_arbitrary_rows_spans_shards(tmp_path):
    store = new_store(tmp_path)
    for i in range(5):
        store.append([counting_episode(i, 3 + i)])
    rows = np.array([[0, 24], [3, 10]])
    markers, steps = decode(store.observations(rows))
    np.testing.assert_array_equal(markers, store.columns.episode[rows])
    np.testing.assert_array_equal(steps, store.columns.step[rows])
    with pytest.raises(IndexError):
        store.observations(np.array([store.num_steps]))


def test_datasets_view_holds_the_same_rows(tmp_path):
    store = new_store(tmp_path)
    store.append([counting_episode(0, 4), counting_episode(1, 2)])
    dataset = store.to_dataset()
    assert len(dataset) == 6 and dataset.column_names[:2] == ["episode", "step"]
    assert dataset[5]["episode"] == 1 and dataset[5]["step"] == 1 and dataset[5]["terminated"]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda e: setattr(e, "observations", e.observations.astype(np.float32)), "must be uint8"),
        (lambda e: setattr(e, "observations", e.observations[:, :, :4]), "must be uint8 of shape"),
        (lambda e: setattr(e, "actions", e.actions + 4), r"Actions must lie in \[0, 4\)"),
        (lambda e: e.terminated.__setitem__(0, True), "Only the last step"),
        (lambda e: e.terminated.__setitem__(-1, False), "must be terminated or truncated"),
        (lambda e: setattr(e, "rewards", e.rewards[:-1]), "has 4 steps"),
        (lambda e: e.rewards.__setitem__(1, np.nan), "finite"),
    ],
)
def test_bad_episodes_are_refused_and_nothing_is_written(tmp_path, mutate, message):
    store = new_store(tmp_path)
    episode = counting_episode(0, 5)
    mutate(episode)
    with pytest.raises(ValueError, match=message):
        store.append([counting_episode(1, 3), episode])
    assert EpisodeStore.open(tmp_path / "store").num_steps == 0


def test_crash_before_the_manifest_is_replaced_leaves_the_store_as_it_was(tmp_path, monkeypatch):
    store = new_store(tmp_path)
    store.append([counting_episode(0, 4)])
    real_replace = os.replace

    def crash_on_manifest(src, dst):
        if str(dst).endswith("manifest.json"):
            raise KeyboardInterrupt("simulated crash")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_manifest)
    with pytest.raises(KeyboardInterrupt):
        store.append([counting_episode(1, 6)])
    monkeypatch.setattr(os, "replace", real_replace)
    reopened = EpisodeStore.open(tmp_path / "store")
    assert reopened.num_steps == 4 and reopened.num_episodes == 1  # the orphaned shard is not read
    reopened.append([counting_episode(1, 6)])  # and the next append overwrites it
    assert EpisodeStore.open(tmp_path / "store").num_steps == 10


def test_full_disk_gives_a_clear_error_and_an_unchanged_store(tmp_path, monkeypatch):
    store = new_store(tmp_path)
    store.append([counting_episode(0, 4)])
    import iris_wm.runtime.files as module  # the store writes through it

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(module.os, "fsync", full)
    with pytest.raises(StoreError, match="No space left on device.*store is unchanged"):
        store.append([counting_episode(1, 6)])
    monkeypatch.undo()
    assert EpisodeStore.open(tmp_path / "store").num_steps == 4
    assert not [p for p in (tmp_path / "store" / "shards").iterdir() if p.name.startswith(".tmp")]


def _only_shard(tmp_path):
    return next((tmp_path / "store" / "shards").glob("shard-*.arrow"))


def test_truncated_shard_is_named_in_the_error(tmp_path):
    new_store(tmp_path).append([counting_episode(0, 9)])
    shard = _only_shard(tmp_path)
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(StoreError, match=f"{shard.name}.*truncated"):
        EpisodeStore.open(tmp_path / "store")


def test_corrupted_shard_fails_its_checksum(tmp_path):
    new_store(tmp_path).append([counting_episode(0, 9)])
    shard = _only_shard(tmp_path)
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(StoreError, match=f"{shard.name}.*corrupted"):
        EpisodeStore.open(tmp_path / "store")
    EpisodeStore.open(tmp_path / "store", verify="size")  # a size check alone cannot see a flipped byte


def test_other_format_version_and_kind_are_refused(tmp_path):
    new_store(tmp_path).append([counting_episode(0, 3)])
    path = tmp_path / "store" / "manifest.json"
    with pytest.raises(StoreError, match="holds an episode store, but a token store is needed here"):
        TokenStore.open(tmp_path / "store")
    manifest = json.loads(path.read_text())
    manifest["format_version"] = FORMAT_VERSION + 1
    path.write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match=f"format version {FORMAT_VERSION + 1}.*reads versions 1, {FORMAT_VERSION}"):
        EpisodeStore.open(tmp_path / "store")
    path.write_text("{not json")
    with pytest.raises(StoreError, match="manifest is damaged"):
        EpisodeStore.open(tmp_path / "store")
    with pytest.raises(StoreError, match="No store at"):
        EpisodeStore.open(tmp_path / "nowhere")


def test_store_from_another_environment_or_action_count_is_refused(tmp_path):
    new_store(tmp_path)
    with pytest.raises(StoreError, match="6 actions vs 4 stored"):
        EpisodeStore.open_or_create(tmp_path / "store", SPEC, 6, SETTINGS)
    with pytest.raises(StoreError, match="env="):
        EpisodeStore.open_or_create(tmp_path / "store", SPEC, 4, {"env": {"game": "Pong"}})
    with pytest.raises(StoreError, match="already holds a store"):
        new_store(tmp_path)


def test_two_writers_append_without_losing_episodes(tmp_path):
    first = new_store(tmp_path)
    second = EpisodeStore.open(tmp_path / "store")
    first.append([counting_episode(0, 3)])
    second.append([counting_episode(1, 4)])  # picks up the first writer's shard before writing
    first.append([counting_episode(2, 5)])
    reopened = EpisodeStore.open(tmp_path / "store")
    assert list(reopened.episode_lengths) == [3, 4, 5]
    assert list(reopened.episode_ids) == [0, 1, 2]


def test_rollback_forgets_the_last_shards_and_appends_continue(tmp_path):
    store = EpisodeStore.create(tmp_path / "s", EpisodeStore.frame_spec(8), 4, {"env": "counting"})
    store.append([counting_episode(0, 5, size=8)])
    store.append([counting_episode(10, 7, size=8), counting_episode(20, 3, size=8)])
    assert store.rollback(1) == 1
    assert (store.num_steps, store.num_episodes) == (5, 1)
    reopened = EpisodeStore.open(tmp_path / "s")
    assert (reopened.num_steps, reopened.num_episodes) == (5, 1)
    assert len(list((tmp_path / "s" / "shards").glob("*.arrow"))) == 1
    store.append([counting_episode(30, 4, size=8)])
    again = EpisodeStore.open(tmp_path / "s")
    assert again.num_steps == 9 and list(again.episode_ids) == [0, 1]
    assert store.rollback(2) == 0
    with pytest.raises(StoreError, match="Cannot roll"):
        store.rollback(5)
