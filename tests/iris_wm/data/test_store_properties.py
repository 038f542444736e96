"""Property tests: any sequence of appends reads back exactly, and windows never cross episodes unmasked."""

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers.counting import counting_episode, decode
from iris_wm.data.store import EpisodeStore, ObsSpec
from iris_wm.data.windows import WindowDataset

SPEC = ObsSpec("frame", "uint8", (3, 4, 4))
appends = st.lists(st.lists(st.integers(1, 30), min_size=1, max_size=4), min_size=1, max_size=5)


@settings(max_examples=25, deadline=None)
@given(appends=appends, data=st.data())
def test_appends_read_back_exactly(appends, data):
    with tempfile.TemporaryDirectory() as folder:
        store = EpisodeStore.create(Path(folder) / "s", SPEC, 4, {})
        written = []
        for lengths in appends:
            episodes = [counting_episode(len(written) + i, n, size=4) for i, n in enumerate(lengths)]
            store.append(episodes)
            written += episodes
        reopened = EpisodeStore.open(Path(folder) / "s")
        assert reopened.num_episodes == len(written)
        for position, episode in enumerate(written):
            got = reopened.episode(position)
            np.testing.assert_array_equal(got.observations, episode.observations)
            np.testing.assert_array_equal(got.actions, episode.actions)
            np.testing.assert_array_equal(got.rewards, episode.rewards)
        T = data.draw(st.integers(1, 12))
        pad = data.draw(st.sampled_from(["right", "left"]))
        dataset = WindowDataset(reopened, np.arange(reopened.num_episodes), T, pad)
        picks = data.draw(st.lists(st.integers(0, len(dataset) - 1), min_size=1, max_size=16))
        batch = dataset.__getitems__(picks)
        markers, steps = decode(batch.observations.numpy())
        mask = batch.mask.numpy()
        for row in range(len(picks)):
            real = markers[row][mask[row]]
            assert (real == real[0]).all(), "a window's real steps all come from one episode"
            assert (np.diff(steps[row][mask[row]]) == 1).all(), "and are consecutive"
            assert mask[row].any()
