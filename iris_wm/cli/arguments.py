"""What the demo commands share (`make demo`, `make demo-control`): their options, and the record of the settings a
demo folder was made with, which a resumed run must match."""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from iris_wm.runtime.errors import ConfigError
from iris_wm.runtime.files import write_json_atomic
from iris_wm.train.stages import CONFIGS


def demo_parser(prog: str, description: str, out: str, steps: int, eval_max_steps: int) -> argparse.ArgumentParser:
    """``--out``, ``--steps``, ``--seed``, ``--eval_episodes`` and ``--eval_max_steps`` with a demo's defaults."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path(out), help="Folder for everything the demo writes.")
    parser.add_argument("--steps", type=int, default=steps, help="Random-policy environment steps to collect.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of collection and training.")
    parser.add_argument("--eval_episodes", type=int, default=32, help="Real episodes for the agent and for random.")
    parser.add_argument(
        "--eval_max_steps", type=int, default=eval_max_steps, help="Cap on the steps of an evaluation episode."
    )
    return parser


def settings(config: str, stages, **arguments) -> dict:
    """What decides a demo's figures: its ``arguments`` and the content of ``configs/<stage>/<config>.yaml`` of every
    stage."""
    configs = {
        stage: hashlib.sha256((CONFIGS / stage / f"{config}.yaml").read_bytes()).hexdigest()[:16] for stage in stages
    }
    return {**arguments, "configs": configs}


def claim(out: Path, wanted: dict) -> None:
    """Record the demo's settings in ``out/settings.json``, or refuse a folder whose settings differ: a resumed demo
    would otherwise mix stages trained under different seeds or configs."""
    path = out / "settings.json"
    if path.exists():
        found = json.loads(path.read_text())
        changed = sorted(k for k in wanted.keys() | found.keys() if wanted.get(k) != found.get(k))
        if changed:
            differences = "; ".join(f"{k}: {found.get(k)} there, {wanted.get(k)} now" for k in changed)
            raise ConfigError(
                f"{out} holds a demo run with other settings ({differences}): resuming would mix the two. Pass another "
                f"--out (make demo SEED=n uses runs/demo-seed<n>), or delete {out} to start again."
            )
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, wanted)


class StageTimings(dict):
    """Seconds per stage of a demo, starting from those of ``summary`` (a previous run's ``summary.json``): stages a
    resumed demo skips keep the timings of the run that did them."""

    def __init__(self, summary: Path):
        super().__init__(json.loads(summary.read_text())["timings_s"] if summary.exists() else {})

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self[name] = time.perf_counter() - start
