"""The options the demo commands share (`make demo`, `make demo-control`)."""

from __future__ import annotations

import argparse
from pathlib import Path


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
