"""The showcase picture: a held-out window with a reward or an end, real over imagined, marks from both."""

import numpy as np
from PIL import Image

from iris_wm.agent.bundle import Agent
from iris_wm.data.store import EpisodeStore, TokenStore
from iris_wm.evaluate.showcase import MARK, pick_window, showcase
from iris_wm.hub.checkpoints import load_model


def test_the_window_holds_an_end_and_the_picture_shows_real_and_imagined_with_their_marks(pipeline, tmp_path):
    tokens, frames = TokenStore.open(pipeline / "tokens"), EpisodeStore.open(pipeline / "episodes")
    agent = Agent(
        load_model(pipeline / "tok" / "checkpoints" / "last.ckpt", "tokenizer"),
        load_model(pipeline / "wm" / "checkpoints" / "last.ckpt", "world_model"),
    )
    first = pick_window(tokens, 2, 3, 0.1, 0)
    ends = tokens.columns.terminated[first + 1 : first + 4]
    assert ends[-1] and not ends[:-1].any()  # the window reaches a lost life, the last row of its episode
    result = showcase(agent, tokens, frames, tmp_path / "show.png", burn_in=2, horizon=3)
    assert result["first_row"] == first and len(result["predicted"]["reward"]) == 3
    assert result["real"]["end"] == [False, False, True]
    picture = np.asarray(Image.open(tmp_path / "show.png"))
    size = frames.spec.shape[-1]
    assert picture.shape == (2 * (2 * size + 5 * MARK), 2 * 3 * size, 3)
    real = picture[::2, ::2][:size]
    shown = frames.observations(np.arange(first + 2, first + 4)).transpose(0, 2, 3, 1)  # the episode's last frames
    assert np.array_equal(real[:, : 2 * size], np.concatenate(list(shown), 1))
    assert not real[:, 2 * size :].any()  # no real frame after the end
    assert (picture[::2, ::2][size + MARK : size + 2 * MARK, 2 * size + 1] == 255).all()  # the real end's mark
    assert pick_window(tokens, 2, 10_000, 0.1, 0) is None
