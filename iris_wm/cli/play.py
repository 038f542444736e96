"""`iris-wm play`: a local web page for playing inside the world model (Starlette over uvicorn, one websocket).

The page (play.html beside this file) sends a step per key press, or asks the agent to act; the server steps the
:class:`~iris_wm.evaluate.playground.Playground` in a worker thread and answers with the imagined frame (and the
real one) as PNG data URLs, the predicted reward and end. It listens on 127.0.0.1 by default: on a GPU server,
forward the port (``ssh -L 8765:localhost:8765 server``) and open the printed URL locally.

Starlette and uvicorn come with the ``play`` extra (``pip install 'iris-wm[play]'``).
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import socket
import sys
from pathlib import Path

import numpy as np

from iris_wm.agent.bundle import Agent
from iris_wm.data.store import TokenStore
from iris_wm.envs.atari import EnvConfig
from iris_wm.evaluate.playground import Frame, Playground, action_keys
from iris_wm.hub.checkpoints import load_agent, load_model
from iris_wm.runtime.errors import ConfigError, IrisError

PAGE = Path(__file__).with_name("play.html")


def _png(frame: np.ndarray | None) -> str | None:
    from PIL import Image

    if frame is None:
        return None
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(frame.transpose(1, 2, 0))).save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def frame_message(playground: Playground, frame: Frame) -> dict:
    names = playground.action_meanings
    return {
        "type": "frame",
        "step": frame.step,
        "imagined": _png(frame.imagined),
        "reward": frame.reward,
        "end": frame.end,
        "real": _png(frame.real),
        "real_reward": frame.real_reward,
        "real_end": frame.real_end,
        "action": frame.action,
        "action_name": None if frame.action is None else names[frame.action],
        "actor": frame.actor,
        "seconds": frame.seconds,
        "recorded_steps": playground.recorded_steps,
    }


def hello_message(playground: Playground, record: str | None) -> dict:
    meanings = playground.action_meanings
    return {
        "type": "hello",
        "actions": [
            {"index": i, "name": name, "keys": keys}
            for i, (name, keys) in enumerate(zip(meanings, action_keys(meanings), strict=True))
        ],
        "agent": playground.has_agent,
        "game": playground.game is not None,
        "store": playground.starts is not None,
        "temperature": playground.temperature,
        "record": record,
    }


def build_app(playground: Playground, record: str | None = None):
    """The Starlette app: ``/`` serves the page, ``/ws`` plays. Steps run one at a time in a worker thread."""
    import anyio
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    lock = anyio.Lock()  # one game, however many tabs are open

    async def page(request):
        return HTMLResponse(PAGE.read_text())

    def handle(message: dict) -> dict:
        kind = message.get("type")
        if kind == "step":
            action = message.get("action")
            return frame_message(playground, playground.step(None if action is None else int(action)))
        if kind == "reset":
            return frame_message(playground, playground.reset(message.get("source")))
        if kind == "temperature":
            playground.set_temperature(float(message.get("value")))
            return {"type": "settings", "temperature": playground.temperature}
        raise ConfigError(f"Unknown message type {kind!r}: the page sends step, reset or temperature.")

    async def play(websocket: WebSocket):
        await websocket.accept()
        await websocket.send_text(json.dumps(hello_message(playground, record)))
        async with lock:
            first = await anyio.to_thread.run_sync(playground.reset)
        await websocket.send_text(json.dumps(frame_message(playground, first)))
        try:
            while True:
                message = json.loads(await websocket.receive_text())
                async with lock:
                    try:
                        answer = await anyio.to_thread.run_sync(handle, message)
                    except (IrisError, ValueError, TypeError) as error:
                        answer = {"type": "error", "error": str(error)}
                await websocket.send_text(json.dumps(answer))
        except WebSocketDisconnect:
            return

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        playground.close()  # the game being played goes into the recording

    return Starlette(routes=[Route("/", page), WebSocketRoute("/ws", play)], lifespan=lifespan)


def load_playground(
    world_model: str | None,
    tokenizer: str | None,
    agent: str | None,
    tokens: str | None,
    game: bool,
    temperature: float,
    burn_in: int,
    seed: int,
    record: str | None,
) -> Playground:
    """The playground over whichever model sources were given (an agent, or a world model and a tokenizer)."""
    if agent is None and (world_model is None or tokenizer is None):
        raise ConfigError("Give --agent (a whole agent), or both --world_model and --tokenizer.")
    if agent is not None:
        bundle = load_agent(agent)
        parts = [bundle.tokenizer, bundle.world_model, bundle.actor_critic]
    else:
        parts = [None, None, None]
    if tokenizer is not None:
        parts[0] = load_model(tokenizer, "tokenizer")
    if world_model is not None:
        parts[1] = load_model(world_model, "world_model")
    models = Agent(*parts)
    starts = TokenStore.open(tokens) if tokens else None
    env = None
    if game:
        recorded = (starts.manifest["settings"].get("env") if starts is not None else None) or {}
        env = EnvConfig(**recorded) if recorded else None
        if env is None:
            raise ConfigError(
                "The real game beside the imagined one needs the env settings of the start store (--tokens); "
                "give one, or --game false."
            )
    return Playground(models, starts, env, temperature, burn_in, seed, record)


def serve(argv: list[str]) -> None:
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(prog="iris-wm play", description="Play inside the world model in a web page.")
    parser.add_argument("--config", action="config", help="YAML file with any of the options below.")
    parser.add_argument("--agent", type=str | None, default=None, help="A whole agent: checkpoint, folder or Hub id.")
    parser.add_argument("--world_model", type=str | None, default=None, help="The world model (any source).")
    parser.add_argument("--tokenizer", type=str | None, default=None, help="The tokenizer (any source).")
    parser.add_argument("--tokens", type=str | None, default=None, help="Token store of real start contexts.")
    parser.add_argument("--game", type=bool, default=True, help="Step the real game beside the imagined one.")
    parser.add_argument("--temperature", type=float, default=1.0, help="Sampling temperature of frame tokens.")
    parser.add_argument("--burn_in", type=int, default=1, help="Real frames that start each game.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the sampling and of the starts.")
    parser.add_argument("--record", type=str | None, default=None, help="Write what is played as an episode store.")
    parser.add_argument("--host", type=str, default="127.0.0.1", help="Address to listen on.")
    parser.add_argument("--port", type=int, default=8765, help="Port to listen on.")
    cfg = parser.parse_args(argv)
    try:
        import uvicorn
    except ImportError as error:
        raise ConfigError("iris-wm play needs the play extra: pip install 'iris-wm[play]'.") from error
    with socket.socket() as probe:  # a clear error before the models load, not uvicorn's exit
        try:
            probe.bind((cfg.host, cfg.port))
        except OSError as error:
            raise ConfigError(
                f"Cannot listen on {cfg.host}:{cfg.port} ({error.strerror or error}): choose another --port."
            ) from error
    playground = load_playground(
        cfg.world_model,
        cfg.tokenizer,
        cfg.agent,
        cfg.tokens,
        cfg.game,
        cfg.temperature,
        cfg.burn_in,
        cfg.seed,
        cfg.record,
    )
    print(f"iris-wm play: open http://{cfg.host}:{cfg.port}/ (Ctrl-C stops; the recording is written)", file=sys.stderr)
    uvicorn.run(build_app(playground, cfg.record), host=cfg.host, port=cfg.port, log_level="warning")
