"""Frames per second of `iris-wm play` with the demo models: the playground's step alone, and the whole round trip
in headless Chromium (key press -> websocket -> world model, tokenizer, emulator -> PNG -> page), with and without
the real game beside.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/play_rate.py --demo runs/demo --json docs/play_rate.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np

from iris_wm.cli.play import build_app, load_playground
from iris_wm.evaluate.playground import action_keys
from iris_wm.runtime.hardware import cpu_description

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]
FLAGS += ["--disable-background-networking", "--disable-component-update", "--disable-sync"]


def browser_rates(playground, presses: int) -> dict:
    """Frames per second in the page: ``held`` sends ``presses`` key presses at once and times the last frame (a
    held key: the server works through them in turn); ``one_by_one`` presses each key when the previous frame
    has arrived (each press's round trip, with Playwright's own polling in it)."""
    import uvicorn
    from playwright.sync_api import sync_playwright

    server = uvicorn.Server(uvicorn.Config(build_app(playground), host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}/"
    key = action_keys(playground.action_meanings)[0][0]
    rates = {}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=FLAGS, headless=True)
            page = browser.new_page()
            page.goto(url)
            page.wait_for_function("window.irisPlay.frames >= 1")
            began = time.perf_counter()
            for _ in range(presses):
                page.keyboard.press(key)
            page.wait_for_function(f"window.irisPlay.step >= {presses}", polling=5, timeout=600_000)
            rates["held"] = presses / (time.perf_counter() - began)
            first = page.evaluate("window.irisPlay.step")
            began = time.perf_counter()
            for i in range(presses):
                page.keyboard.press(key)
                page.wait_for_function(f"window.irisPlay.step >= {first + i + 1}", polling=5)
            rates["one_by_one"] = presses / (time.perf_counter() - began)
            browser.close()
    finally:
        server.should_exit = True
        thread.join(30)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--demo", type=Path, default=Path("runs/demo"))
    parser.add_argument("--json", type=Path, default=Path("docs/play_rate.json"))
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    sources = dict(
        world_model=str(args.demo / "world_model/checkpoints/last.ckpt"),
        tokenizer=str(args.demo / "tokenizer/checkpoints/last.ckpt"),
        agent=None,
        tokens=str(args.demo / "tokens"),
        temperature=1.0,
        burn_in=1,
        seed=0,
        record=None,
    )
    result = {"machine": f"{cpu_description()}, {os.cpu_count()} cores", "steps": args.steps}
    for game in (True, False):
        playground = load_playground(game=game, **sources)
        playground.reset()
        seconds = [playground.step(0).seconds for _ in range(args.steps)]
        name = "with the real game" if game else "imagined only"
        result[name] = {
            "playground_steps_per_s": float(1 / np.mean(seconds)),
            "browser_frames_per_s": browser_rates(playground, args.steps),
        }
        print(name, result[name])
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
