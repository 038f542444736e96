"""Constant-action baselines of a dm_control task, beside the random policy (issue 19).

On some tasks a policy that always sends the same command beats the random policy by far (cartpole-swingup: a
constant push swings the pole part of the way up), so an agent's margin over random alone says little there. This
plays every constant action of a grid on the demo's evaluation episodes (seeds ``seed + i``, ``steps`` steps of
``action_repeat`` control steps each, as ``make demo-control`` evaluates) straight on dm_control, without frames.

    python benchmarks/constant_actions.py --task cartpole-swingup --json docs/constant_actions.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from iris_wm.envs.dmc import _suite, split_task


def play(task: str, action: np.ndarray, episodes: int, steps: int, action_repeat: int, seed: int) -> np.ndarray:
    suite, (domain, name) = _suite(), split_task(task)
    returns = np.zeros(episodes)
    for i in range(episodes):
        env = suite.load(domain, name, task_kwargs={"random": seed + i})
        env.reset()
        for _ in range(steps * action_repeat):
            step = env.step(action)
            returns[i] += step.reward or 0.0
            if step.last():
                break
    return returns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="cartpole-swingup")
    parser.add_argument("--episodes", type=int, default=32)
    parser.add_argument("--steps", type=int, default=250, help="Steps of an episode (the demo's --eval_max_steps).")
    parser.add_argument("--action_repeat", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument(
        "--levels", type=float, nargs="+", default=[-1.0, -0.75, -0.5, -0.25, 0.0, 0.25, 0.5, 0.75, 1.0]
    )
    parser.add_argument("--json", type=Path, default=Path("docs/constant_actions.json"))
    args = parser.parse_args()
    domain, name = split_task(args.task)
    shape = _suite().load(domain, name).action_spec().shape
    rows = []
    for level in args.levels:
        returns = play(args.task, np.full(shape, level), args.episodes, args.steps, args.action_repeat, args.seed)
        rows.append(
            {"action": level, "mean": float(returns.mean()), "stderr": float(returns.std(ddof=1) / len(returns) ** 0.5)}
        )
        print(f"constant {level:+.2f}: {rows[-1]['mean']:.2f} +- {rows[-1]['stderr']:.2f}", flush=True)
    record = {"command": "python benchmarks/constant_actions.py", **vars(args), "json": str(args.json)}
    record.update(date=time.strftime("%Y-%m-%d"), rows=rows, best=max(rows, key=lambda r: r["mean"]))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
