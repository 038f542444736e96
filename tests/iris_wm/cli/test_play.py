"""`iris-wm play`: the playground it serves, and the page in a real headless browser (Debian's Chromium driven by
Playwright): 50 key presses give 50 new frames, and the recording reopens with its checksums and those actions."""

import shutil
import socket
import threading
import time

import numpy as np
import pytest
import torch

from helpers import tiny
from helpers.cli import refused
from iris_wm.agent.bundle import Agent
from iris_wm.data.store import EpisodeStore, TokenStore
from iris_wm.envs.atari import EnvConfig
from iris_wm.evaluate.playground import Playground, action_keys
from iris_wm.hub import load_model
from sequence_model.world_model import WorldModel
from tokenizer.model import Tokenizer, TokenizerConfig
from tokenizer.quantizer import QuantizerConfig

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _agent(pipeline) -> Agent:
    return Agent(
        load_model(pipeline / "tok-pretrained", "tokenizer"), load_model(pipeline / "wm-pretrained", "world_model")
    )


def _playground(pipeline, record=None, burn_in=2) -> Playground:
    starts = TokenStore.open(pipeline / "tokens")
    env = EnvConfig(**starts.manifest["settings"]["env"])
    return Playground(_agent(pipeline), starts, env, temperature=1.0, burn_in=burn_in, seed=0, record=record)


def test_every_action_has_a_key_and_the_basic_ones_arrows_and_space():
    keys = action_keys(["NOOP", "FIRE", "RIGHT", "LEFT"])
    assert keys == [["0"], ["1", " "], ["2", "ArrowRight"], ["3", "ArrowLeft"]]
    assert len({k for ks in keys for k in ks}) == 7  # no key for two actions


def test_a_game_start_steps_the_real_game_beside_and_the_recording_holds_what_was_shown(pipeline, tmp_path):
    playground = _playground(pipeline, record=str(tmp_path / "rec"))
    first = playground.reset("game")
    assert first.real is not None and first.imagined.shape == first.real.shape == (3, 64, 64)
    shown, actions = [first.imagined], [1, 2, 3, 0, 2]
    for action in actions:
        frame = playground.step(action)
        assert frame.real is not None and frame.action == action and frame.actor == "human"
        shown.append(frame.imagined)
    playground.reset("store")  # a store start: no real game beside it; the first game is recorded as it ends
    frame = playground.step(1)
    assert frame.real is None
    playground.close()
    store = EpisodeStore.open(tmp_path / "rec")
    assert store.manifest["settings"]["synthetic"]["world_model_digest"]
    np.testing.assert_array_equal(store.columns.action, [*actions, 1])
    np.testing.assert_array_equal(store.observations(np.arange(len(actions))), np.stack(shown[:-1]))
    assert store.columns.truncated[-1] and store.num_steps == len(actions) + 1


def test_without_an_actor_critic_the_agent_cannot_take_control(pipeline):
    playground = _playground(pipeline)
    playground.reset()
    with pytest.raises(ValueError, match="No actor-critic"):
        playground.step(None)
    with pytest.raises(ValueError, match="not one of the world model's"):
        playground.step(99)
    with pytest.raises(ValueError, match="context of 4 steps"):
        _playground(pipeline, burn_in=4)


def test_play_refuses_missing_models_and_a_port_in_use(pipeline, capsys, tmp_path):
    refused(capsys, ["play", "--tokens", str(pipeline / "tokens")], "--agent", "--world_model")
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        argv = [
            "play",
            "--world_model",
            str(pipeline / "wm-pretrained"),
            "--tokenizer",
            str(pipeline / "tok-pretrained"),
        ]
        refused(capsys, [*argv, "--port", str(port)], "Cannot listen", "another --port")


class _Server:
    """uvicorn serving the play app in a thread, on a free port."""

    def __init__(self, app):
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "the play server did not start"
            time.sleep(0.05)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/"

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(60)


def _fast_agent() -> Agent:
    """Random 64x64 models with 16 tokens per frame, as the demo's, but tiny: the page's round trip is what counts."""
    torch.manual_seed(0)
    config = TokenizerConfig(
        resolution=64,
        channels=4,
        channel_mult=(1, 1, 1, 1, 1),
        num_res_blocks=1,
        attn_resolutions=(),
        z_channels=4,
        embed_dim=4,
        quantizer=QuantizerConfig(codebook_size=16),
    )
    return Agent(Tokenizer(config).eval(), WorldModel(tiny.world_model_config(16, 16, 4, 4)).eval())


def test_fifty_key_presses_in_a_real_browser_give_fifty_frames_and_a_recording_of_those_actions(tmp_path):
    if CHROMIUM is None:
        pytest.skip("No Chromium on this machine: `make test` installs Debian's chromium where it runs as root.")
    playwright = pytest.importorskip("playwright.sync_api", reason="Playwright is in the dev extra: make venv")
    from iris_wm.cli.play import build_app

    record = tmp_path / "played"
    playground = Playground(_fast_agent(), None, EnvConfig(), record=str(record))
    meanings = playground.action_meanings
    keys = action_keys(meanings)
    rng = np.random.default_rng(0)
    pressed = rng.integers(0, len(meanings), 50)
    with _Server(build_app(playground, str(record))) as url, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        page = browser.new_page()
        page.goto(url)
        page.wait_for_function("window.irisPlay.frames >= 1 && window.irisPlay.hello !== null", timeout=60_000)
        labels = page.locator("#actions button").all_inner_texts()
        assert [label.split(" ")[0] for label in labels] == meanings
        for action in pressed:
            page.keyboard.press(keys[action][-1])  # the arrow or space where there is one
        page.wait_for_function("window.irisPlay.step >= 50 && window.irisPlay.pending === 0", timeout=120_000)
        frames = page.evaluate("window.irisPlay.frames")
        assert page.locator("#imagined").get_attribute("src").startswith("data:image/png;base64,")
        assert page.locator("#real").get_attribute("src").startswith("data:image/png;base64,")
        browser.close()
    assert frames == 51  # the start, then one per key
    store = EpisodeStore.open(record, verify="checksum")
    np.testing.assert_array_equal(store.columns.action, pressed)
    tokens = playground.agent.tokenizer.encode(torch.from_numpy(store.observations(np.arange(1))))
    assert tokens.shape == (1, playground.agent.tokenizer.tokens_per_frame)
