"""`make demo-seeds`: the demo's agent stage over several seeds, on the tokenizer and world model of a finished demo,
each agent evaluated against the random policy on the same seeded real games.

One seed says little about an agent trained for a few hundred steps in imagination: this gives the spread. Per
seed, ``<out>/seeds/<seed>/`` holds the agent and both evaluations; ``<out>/seeds.json`` the margins over random
with their combined standard errors, and their mean and standard deviation. A seed already done is skipped.

    python -m iris_wm.cli.seeds --out runs/demo --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from iris_wm.cli.report import write_report
from iris_wm.envs.atari import EnvConfig
from iris_wm.evaluate.play import evaluate
from iris_wm.evaluate.scores import margin_over_random
from iris_wm.runtime.errors import ConfigError
from iris_wm.runtime.files import write_json_atomic
from iris_wm.train.stages import run_agent_cli, stage_args

CONFIG = "demo"


def seed_row(out: Path, seed: int, games: int, max_steps: int) -> dict:
    folder = out / "seeds" / str(seed)
    world_model, tokenizer = out / "world_model/checkpoints/last.ckpt", out / "tokenizer/checkpoints/last.ckpt"
    agent = folder / "agent/checkpoints/last.ckpt"
    if not agent.exists():
        run_agent_cli(
            stage_args("fit", "agent", CONFIG, out / "tokens", folder / "agent", "--seed_everything", str(seed),
                       "--model.world_model", str(world_model), "--model.tokenizer", str(tokenizer))
        )  # fmt: skip
    env = EnvConfig.evaluation(max_episode_steps=max_steps)
    results = {
        name: evaluate(str(folder / f"{name}.json"), source, env, episodes=games, num_envs=8, seed=1000 + seed)
        for name, source in (("agent", str(agent)), ("random", None))
    }
    agent_result, random_result = results["agent"], results["random"]
    margin, combined = margin_over_random(agent_result, random_result)
    return {
        "seed": seed,
        "games": games,
        "agent": agent_result["mean"],
        "agent_stderr": agent_result["stderr"],
        "random": random_result["mean"],
        "random_stderr": random_result["stderr"],
        "margin": margin,
        "combined_stderr": combined,
        "margin_in_stderrs": margin / combined
        if combined > 0
        else (math.copysign(math.inf, margin) if margin else 0.0),
    }


def run_seeds(out: Path, seeds: list[int], games: int = 32, max_steps: int = 2_000) -> dict:
    needed = [out / "world_model/checkpoints/last.ckpt", out / "tokenizer/checkpoints/last.ckpt", out / "tokens"]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        raise ConfigError(f"{out} is not a finished demo ({', '.join(missing)} missing): run `make demo` first.")
    rows = [seed_row(out, seed, games, max_steps) for seed in seeds]
    margins = np.array([r["margin"] for r in rows])
    summary = {
        "seeds": rows,
        "mean_margin": float(margins.mean()),
        "std_margin": float(margins.std(ddof=1)) if len(rows) > 1 else float("nan"),
        "seeds_beating_random_by_one_stderr": int(sum(r["margin"] > r["combined_stderr"] for r in rows)),
    }
    write_json_atomic(out / "seeds.json", summary)
    if (out / "summary.json").exists():  # the demo's report gains the seeds' table
        write_report(out, json.loads((out / "summary.json").read_text()))
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="iris-wm-demo-seeds", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="The finished demo's folder.")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="Seeds of the agent stage.")
    parser.add_argument("--games", type=int, default=32, help="Real games per policy and seed.")
    parser.add_argument("--eval_max_steps", type=int, default=2_000, help="Cap on the steps of an evaluation game.")
    args = parser.parse_args(argv)
    summary = run_seeds(args.out, args.seeds, args.games, args.eval_max_steps)
    for row in summary["seeds"]:
        print(
            f"seed {row['seed']}: agent {row['agent']:.2f} +- {row['agent_stderr']:.2f}, random {row['random']:.2f} "
            f"+- {row['random_stderr']:.2f}: margin {row['margin']:+.2f} ({row['margin_in_stderrs']:.1f} combined SE)"
        )
    print(
        f"margin over random: mean {summary['mean_margin']:+.2f}, standard deviation {summary['std_margin']:.2f}; "
        f"{summary['seeds_beating_random_by_one_stderr']} of {len(summary['seeds'])} seeds ahead by a combined SE"
    )


if __name__ == "__main__":
    main()
