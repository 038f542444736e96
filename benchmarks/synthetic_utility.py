"""Synthetic data from the demo models: how faithful the export is, and what it is worth to the agent.

Needs a finished ``make demo`` (its tokenizer, world model, agent and token store). Writes a JSON file and prints a
Markdown table. Steps:

1. Fidelity: ``iris-wm imagine --export`` with the demo agent's policy (temperature 0.5, as evaluation plays it) and
   decoded frames; the share of the exported tokens that decoding and re-encoding gives back, and the agent's
   reward per step in those synthetic episodes against its real rate in the training protocol's game (life loss
   ends an episode, as the world model learnt), with a 95% bootstrap interval over real episodes.
2. Utility: the demo agent stage trained again with synthetic fractions 0.5 and 0.8 of its windows (same seed and
   steps as the demo's, whose own agent is the fraction 0), each evaluated on the same seeded real games.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/synthetic_utility.py --json docs/synthetic_utility.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from iris_wm.envs.atari import EnvConfig
from iris_wm.evaluate.play import evaluate
from iris_wm.evaluate.synthetic import export_episodes
from iris_wm.hub.checkpoints import load_agent
from iris_wm.runtime.hardware import cpu_description
from iris_wm.train.stages import run_agent_cli, stage_args


def bootstrap_rate(returns: np.ndarray, lengths: np.ndarray, seed: int = 0, draws: int = 10_000) -> list[float]:
    """95% interval of total reward / total steps, resampling episodes."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(returns), (draws, len(returns)))
    rates = returns[picks].sum(1) / lengths[picks].sum(1)
    return [float(np.quantile(rates, 0.025)), float(np.quantile(rates, 0.975))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--demo", type=Path, default=Path("runs/demo"))
    parser.add_argument("--json", type=Path, default=Path("docs/synthetic_utility.json"))
    parser.add_argument("--episodes", type=int, default=1024, help="Synthetic episodes to export.")
    parser.add_argument("--games", type=int, default=16, help="Real games per evaluation.")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.5, 0.8])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    demo = args.demo
    wm, tok = demo / "world_model/checkpoints/last.ckpt", demo / "tokenizer/checkpoints/last.ckpt"
    agent = demo / "agent/checkpoints/last.ckpt"
    result: dict = {"machine": f"{cpu_description()}, {os.cpu_count()} cores", "demo": str(demo)}
    timings: dict[str, float] = {}

    synthetic = demo / "synthetic"
    began = time.perf_counter()
    if not synthetic.exists():
        summary = export_episodes(
            str(wm), str(tok), str(demo / "tokens"), str(synthetic), "agent", str(agent), num_episodes=args.episodes,
            horizon=20, burn_in=8, prime_steps=1, policy_temperature=0.5, frames=True, seed=args.seed,
        )  # fmt: skip
        (demo / "synthetic-summary.json").write_text(json.dumps(summary, indent=1))
    summary = json.loads((demo / "synthetic-summary.json").read_text())
    timings["export"] = time.perf_counter() - began
    settings = json.loads((demo / "tokens/manifest.json").read_text())["settings"]["env"]
    real = evaluate(
        str(demo / "synthetic-eval/agent-training-protocol.json"), str(agent),
        EnvConfig(**{**settings, "max_episode_steps": 2_000}), episodes=args.games, num_envs=8, seed=2000,
    )  # fmt: skip
    returns, lengths = np.array(real["returns"]), np.array(real["lengths"])
    result["fidelity"] = {
        "synthetic": summary,
        "reencoded_token_agreement": summary["reencoded_token_agreement"],
        "synthetic_reward_per_step": summary["reward_per_step"],
        "real_reward_per_step": float(returns.sum() / lengths.sum()),
        "real_reward_per_step_95": bootstrap_rate(returns, lengths),
        "real_games": args.games,
    }

    curve = []
    for fraction in [0.0, *args.fractions]:
        if fraction == 0.0:
            checkpoint = agent
        else:
            out = demo / f"agent-synthetic-{fraction:g}"
            checkpoint = out / "checkpoints/last.ckpt"
            if not checkpoint.exists():
                began = time.perf_counter()
                extra = ["--seed_everything", str(args.seed), "--model.world_model", str(wm), "--model.tokenizer"]
                extra += [str(tok), "--data.synthetic_root", str(synthetic), "--data.synthetic_fraction", str(fraction)]
                run_agent_cli(stage_args("fit", "agent", "demo", demo / "tokens", out, *extra))
                timings[f"agent fit {fraction:g}"] = time.perf_counter() - began
        load_agent(checkpoint)  # refuses a damaged one before playing
        scores = evaluate(
            str(demo / f"synthetic-eval/fraction-{fraction:g}.json"), str(checkpoint),
            EnvConfig.evaluation(max_episode_steps=2_000), episodes=args.games, num_envs=8, seed=1000,
        )  # fmt: skip
        curve.append({"fraction": fraction, "mean": scores["mean"], "stderr": scores["stderr"], "games": args.games})
    random = evaluate(
        str(demo / "synthetic-eval/random.json"), None, EnvConfig.evaluation(max_episode_steps=2_000),
        episodes=args.games, num_envs=8, seed=1000,
    )  # fmt: skip
    result["utility"] = {"curve": curve, "random": {"mean": random["mean"], "stderr": random["stderr"]}}
    result["timings_s"] = timings
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    f = result["fidelity"]
    print(f"re-encoded token agreement {100 * f['reencoded_token_agreement']:.1f}%")
    low, high = f["real_reward_per_step_95"]
    print(
        f"reward per step: synthetic {f['synthetic_reward_per_step']:.4f}, real {f['real_reward_per_step']:.4f} "
        f"[{low:.4f}, {high:.4f}]"
    )
    print("| synthetic fraction | return (mean +- s.e.) |\n| --- | --- |")
    for row in curve:
        print(f"| {row['fraction']:g} | {row['mean']:.2f} +- {row['stderr']:.2f} |")
    print(f"| random | {random['mean']:.2f} +- {random['stderr']:.2f} |")


if __name__ == "__main__":
    main()
