"""Store schema v2: box actions, a state column and fps round-trip bitwise; version 1 stores open as discrete; every
bad input is refused with the fix and writes nothing."""

import json

import numpy as np
import pytest
import torch

from iris_wm.data.episode import Episode
from iris_wm.data.spaces import ActionSpace, StateSpec
from iris_wm.data.store import MANIFEST, EpisodeStore, StoreError
from iris_wm.data.tokens import write_token_store
from iris_wm.data.windows import WindowDataset
from iris_wm.hub.datasets import export_store, load_store

SPACE = ActionSpace.box([-1.0, -1.0], [1.0, 0.5])
STATE = StateSpec.named(["joint0.pos", "joint1.pos", "joint0.vel"])
SPEC = EpisodeStore.frame_spec(8)


def episode(length: int, seed: int, actions=None, states="random") -> Episode:
    rng = np.random.default_rng(seed)
    ends = np.zeros(length, bool)
    ends[-1] = True
    return Episode(
        rng.integers(0, 256, (length, 3, 8, 8), dtype=np.uint8),
        rng.uniform([-1, -1], [1, 0.5], (length, 2)).astype(np.float32) if actions is None else actions,
        rng.normal(size=length).astype(np.float32),
        ends,
        np.zeros(length, bool),
        rng.normal(size=(length, 3)).astype(np.float32) if isinstance(states, str) else states,
    )


def box_store(root) -> tuple[EpisodeStore, list[Episode]]:
    store = EpisodeStore.create(root, SPEC, SPACE, {"env": "point-mass"}, state=STATE, fps=20)
    episodes = [episode(5, 0), episode(3, 1)]
    store.append(episodes)
    return store, episodes


def test_box_actions_states_and_fps_round_trip_bitwise(tmp_path):
    _, written = box_store(tmp_path / "store")
    store = EpisodeStore.open(tmp_path / "store")
    manifest = json.loads((tmp_path / "store" / MANIFEST).read_text())
    assert manifest["format_version"] == 2 and "num_actions" not in manifest
    assert manifest["action_space"] == {"type": "box", "shape": [2], "low": [-1.0, -1.0], "high": [1.0, 0.5]}
    assert manifest["state"] == {"size": 3, "names": ["joint0.pos", "joint1.pos", "joint0.vel"]}
    assert store.action_space == SPACE and store.state == STATE and store.fps == 20
    for position, original in enumerate(written):
        back = store.episode(position)
        for name in ("observations", "actions", "rewards", "states"):
            got, want = getattr(back, name), getattr(original, name)
            assert got.dtype == want.dtype and np.array_equal(got.view(np.uint8), want.view(np.uint8)), name
    assert store.columns.action.shape == (8, 2) and store.columns.state.shape == (8, 3)


def test_windows_serve_box_actions_and_states_with_zero_padding(tmp_path):
    store, written = box_store(tmp_path / "store")
    windows = WindowDataset(store, np.array([1]), 4, pad="right")
    batch = windows.__getitems__([0])
    assert batch.actions.dtype == torch.float32 and batch.actions.shape == (1, 4, 2)
    assert batch.states.shape == (1, 4, 3)
    assert batch.mask.tolist() == [[True, True, True, False]]
    torch.testing.assert_close(batch.actions[0, :3], torch.from_numpy(written[1].actions), rtol=0, atol=0)
    torch.testing.assert_close(batch.states[0, :3], torch.from_numpy(written[1].states), rtol=0, atol=0)
    assert (batch.actions[0, 3] == 0).all() and (batch.states[0, 3] == 0).all()


def test_a_version_1_store_opens_as_discrete(tmp_path):
    root = tmp_path / "v1"
    store = EpisodeStore.create(root, SPEC, 4, {"env": "atari"})
    actions = np.array([0, 3, 2], np.int64)
    store.append([episode(3, 0, actions=actions, states=None)])
    manifest = json.loads((root / MANIFEST).read_text())
    for key in ("action_space", "state", "fps"):  # what version 1 wrote: num_actions only
        del manifest[key]
    manifest["format_version"] = 1
    (root / MANIFEST).write_text(json.dumps(manifest))
    old = EpisodeStore.open(root)
    assert old.action_space == ActionSpace.discrete(4) and old.num_actions == 4 and old.state is None
    assert old.columns.action.tolist() == [0, 3, 2] and old.columns.state is None
    old.append([episode(2, 1, actions=np.array([1, 1]), states=None)])  # and it still takes discrete episodes
    assert EpisodeStore.open(root).num_steps == 5


def _unchanged(root, before: str) -> None:
    assert (root / MANIFEST).read_text() == before
    assert sorted(p.name for p in (root / "shards").iterdir()) == ["shard-000000.arrow"]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: episode(3, 5, actions=np.array([[0.1, 0.2], [np.nan, 0.0], [0.0, 0.0]], np.float32)), "finite"),
        (lambda: episode(3, 5, actions=np.array([[0.1, 0.2], [0.0, 0.9], [0.0, 0.0]], np.float32)), "outside its"),
        (lambda: episode(3, 5, actions=np.array([0, 1, 2])), "box actions"),
        (lambda: episode(3, 5, states=np.zeros((3, 2), np.float32)), r"shape \(3, 3\)"),
        (lambda: episode(3, 5, states=None), "the episode has none"),
        (lambda: episode(3, 5, states=np.full((3, 3), np.inf, np.float32)), "not finite"),
    ],
)
def test_bad_episodes_are_refused_with_the_fix_and_nothing_is_written(tmp_path, make, message):
    store, _ = box_store(tmp_path / "store")
    before = (tmp_path / "store" / MANIFEST).read_text()
    with pytest.raises(ValueError, match=message):
        store.append([episode(2, 9), make()])  # a good episode first: the append is all or nothing
    _unchanged(tmp_path / "store", before)


def test_a_discrete_store_refuses_states_and_continuous_actions(tmp_path):
    store = EpisodeStore.create(tmp_path / "store", SPEC, 4, {})
    store.append([episode(2, 0, actions=np.array([0, 1]), states=None)])
    before = (tmp_path / "store" / MANIFEST).read_text()
    with pytest.raises(ValueError, match="discrete actions"):
        store.append([episode(2, 1, states=None)])
    with pytest.raises(ValueError, match="no state column"):
        store.append([episode(2, 1, actions=np.array([0, 1]))])
    _unchanged(tmp_path / "store", before)


def test_mixed_action_spaces_and_misused_counts_are_refused(tmp_path):
    box_store(tmp_path / "store")
    with pytest.raises(StoreError, match=r"actions discrete \{4\} vs stored box"):
        EpisodeStore.open_or_create(tmp_path / "store", SPEC, 4, {"env": "point-mass"}, state=STATE, fps=20)
    with pytest.raises(StoreError, match="fps 50"):
        EpisodeStore.open_or_create(tmp_path / "store", SPEC, SPACE, {"env": "point-mass"}, state=STATE, fps=50)
    with pytest.raises(StoreError, match="continuous actions"):
        _ = EpisodeStore.open(tmp_path / "store").num_actions
    with pytest.raises(ValueError, match="low <= high"):
        ActionSpace.box([0.0], [-1.0])
    with pytest.raises(ValueError, match="fps must be a positive"):
        EpisodeStore.create(tmp_path / "other", SPEC, SPACE, {}, fps=0)
    with pytest.raises(ValueError, match="needs 3 names"):
        StateSpec(3, ("a", "b"))


def test_a_token_store_and_an_exported_dataset_keep_actions_states_and_fps(tmp_path):
    source, written = box_store(tmp_path / "episodes")
    tokens = np.arange(source.num_steps * 4, dtype=np.int16).reshape(-1, 4) % 7
    config = type("Config", (), {"tokens_per_frame": 4, "vocab_size": 7})()
    token_store = write_token_store(tmp_path / "tokens", source, tokens, config, checkpoint=None)
    assert token_store.action_space == SPACE and token_store.state == STATE and token_store.fps == 20
    assert np.array_equal(token_store.columns.action, source.columns.action)
    assert np.array_equal(token_store.columns.state, source.columns.state)
    export_store(tmp_path / "episodes", tmp_path / "export")
    back = load_store(tmp_path / "export", tmp_path / "loaded")
    assert back.action_space == SPACE and back.state == STATE and back.fps == 20
    for name in ("action", "state", "reward"):
        assert np.array_equal(getattr(back.columns, name), getattr(source.columns, name)), name
    assert np.array_equal(back.observations(np.arange(8)), source.observations(np.arange(8)))


def test_a_store_of_proprioception_alone_has_no_observation_column(tmp_path):
    from iris_wm.data.store import TokenStore

    settings = {"tokens_per_frame": 0, "vocab_size": 0}
    store = TokenStore.create(
        tmp_path / "s", TokenStore.token_spec(0), ActionSpace.box([-1], [1]), settings, StateSpec(2)
    )
    ends = np.zeros(4, bool)
    ends[-1] = True
    states = np.arange(8, dtype=np.float32).reshape(4, 2)
    store.append(
        [
            Episode(
                np.zeros((4, 0), np.int16),
                np.zeros((4, 1), np.float32),
                np.ones(4, np.float32),
                ends,
                np.zeros(4, bool),
                states,
            )
        ]
    )
    again = TokenStore.open(tmp_path / "s")
    assert again.observations(np.arange(4)).shape == (4, 0) and np.array_equal(again.columns.state, states)
    assert "tokens" not in again._tables[0].schema.names  # Arrow has no zero-width lists: no column at all
    with pytest.raises(ValueError, match="needs a state column"):
        TokenStore.create(tmp_path / "t", TokenStore.token_spec(0), ActionSpace.box([-1], [1]), settings)
