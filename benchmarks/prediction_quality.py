"""Parallel against autoregressive next-frame prediction on the demo data, at equal parameters and equal training
tokens (issue 16: quality must not pay for speed).

Needs a finished ``make demo`` (its episodes, tokenizer and token store). For each prediction mode, under
``<out>/<mode>/``:

1. ``world-model fit`` with the demo config (same seed, steps and batch: the same training tokens, and the same
   parameters, since the modes differ only in the attention mask and which position predicts what);
2. ``world-model validate``: held-out observation cross-entropy over the tokens of frames 1.. (the comparable
   figure; autoregressive also predicts frame 0's own tokens), reward and termination losses;
3. ``iris-wm imagine``: token accuracy, frame and dynamic-pixel PSNR per horizon over up to 256 held-out windows
   with 95% bootstrap intervals, against copying the last frame (horizon 20, then 50 where episodes are long
   enough);
4. ``agent fit`` with the demo config in that world model's imagination, then ``evaluate`` on the same seeded real
   games as the random policy.

Writes ``<json>`` and a Markdown table beside it (``.md``). Stages already done are skipped on a rerun.

    make compare-prediction   # after make demo; writes docs/prediction_quality.json and .md
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

from iris_wm.envs.atari import EnvConfig
from iris_wm.evaluate.imagine import imagine
from iris_wm.evaluate.play import evaluate
from iris_wm.evaluate.rollouts import table_cells
from iris_wm.runtime.hardware import cpu_description
from iris_wm.train.stages import run_agent_cli, run_world_model_cli, stage_args

MODES = ("autoregressive", "parallel")
VALIDATED = ("observation_ce", "next_frame_ce", "reward_loss", "termination_loss", "reward_accuracy", "termination_f1")


def train_and_measure(demo: Path, out: Path, mode: str, games: int, seed: int) -> dict:
    tokens, tok = demo / "tokens", demo / "tokenizer/checkpoints/last.ckpt"
    wm = out / "world_model/checkpoints/last.ckpt"
    result: dict = {"mode": mode, "timings_s": {}}
    began = time.perf_counter()
    prediction = ("--model.config.prediction", mode)
    if not wm.exists():
        run_world_model_cli(stage_args("fit", "world_model", "demo", tokens, out / "world_model", *prediction))
        result["timings_s"]["world model fit"] = time.perf_counter() - began
    cli = run_world_model_cli(
        stage_args("validate", "world_model", "demo", tokens, out / "world_model", "--ckpt_path", str(wm),
                   "--data.max_val_windows", "null", *prediction)
    )  # fmt: skip
    metrics = {k.removeprefix("val/"): float(v) for k, v in cli.trainer.callback_metrics.items()}
    result["validation"] = {k: metrics[k] for k in VALIDATED if k in metrics}
    result["imagination"] = {}
    for horizon in (20, 50):
        try:
            rows = imagine(str(wm), str(tok), str(demo / "episodes"), str(tokens), str(out / f"imagine-h{horizon}"),
                           burn_in=4, horizon=horizon, num_windows=256, seed=seed)  # fmt: skip
        except ValueError as err:  # no held-out episode long enough for this horizon
            result["imagination"][f"h{horizon}"] = {"error": str(err)}
            continue
        result["imagination"][f"h{horizon}"] = rows
    agent = out / "agent/checkpoints/last.ckpt"
    began = time.perf_counter()
    if not agent.exists():
        run_agent_cli(
            stage_args("fit", "agent", "demo", tokens, out / "agent", "--seed_everything", str(seed),
                       "--model.world_model", str(wm), "--model.tokenizer", str(tok))
        )  # fmt: skip
        result["timings_s"]["agent fit"] = time.perf_counter() - began
    result["evaluation"] = evaluate(
        str(out / "evaluate.json"), str(agent), EnvConfig.evaluation(max_episode_steps=2_000), episodes=games,
        num_envs=8, seed=1000 + seed,
    )  # fmt: skip
    return result


def markdown(record: dict) -> str:
    lines = [
        "# Parallel vs autoregressive next-frame prediction (demo data)",
        "",
        f"Machine: {record['machine']}. Command: `{record['command']}`. Date: {record['date']}.",
        "",
        "## Held-out losses (all validation windows)",
        "",
        "| mode | next-frame CE (nats/token) | observation CE | reward loss | termination loss | termination F1 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for mode in MODES:
        v = record[mode]["validation"]
        lines.append(
            f"| {mode} | {v['next_frame_ce']:.4f} | {v['observation_ce']:.4f} | {v['reward_loss']:.4f} "
            f"| {v['termination_loss']:.4f} | {v.get('termination_f1', float('nan')):.3f} |"
        )
    ar, par = (record[m]["validation"]["next_frame_ce"] for m in MODES)
    lines += ["", f"Parallel over autoregressive, next-frame CE: {100 * (par / ar - 1):+.2f}% (target: within 3%).", ""]
    for horizon in ("h20", "h50"):
        lines += [f"## Imagined vs real, burn-in 4, up to 256 held-out windows ({horizon})", ""]
        lines += [
            "| mode | horizon | windows | token accuracy | copy-last tokens | frame PSNR | copy-last frame "
            "| dynamic-pixel PSNR | copy-last, dynamic | tokenizer PSNR of the real tokens |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for mode in MODES:
            rows = record[mode]["imagination"].get(horizon, {})
            if "error" in rows:
                lines.append(f"| {mode} | {horizon} | none: {rows['error']} |")
                continue
            for row in rows["per_horizon"]:
                if row["horizon"] in (1, 5, 10, 20, 50):
                    cells = table_cells(row)
                    lines.append(f"| {mode} | {row['horizon']} | {row['windows']} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## The demo agent trained in each imagination, real games", ""]
    lines += ["| mode | games | mean return | standard error |", "| --- | --- | --- | --- |"]
    for mode in MODES:
        e = record[mode]["evaluation"]
        lines.append(f"| {mode} | {e['episodes']} | {e['mean']:.2f} | {e['stderr']:.2f} |")
    a, p = (record[m]["evaluation"] for m in MODES)
    combined = math.hypot(a["stderr"], p["stderr"])
    lines.append(
        f"\nParallel minus autoregressive: {p['mean'] - a['mean']:+.2f}, combined standard error {combined:.2f}."
    )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--demo", type=Path, default=Path("runs/demo"))
    parser.add_argument("--out", type=Path, default=Path("runs/compare"))
    parser.add_argument("--json", type=Path, default=Path("docs/prediction_quality.json"))
    parser.add_argument("--games", type=int, default=16, help="Real games per agent.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    record = {
        "command": "make compare-prediction",
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{cpu_description()}, {os.cpu_count()} cores",
    }
    for mode in MODES:
        record[mode] = train_and_measure(args.demo, args.out / mode, mode, args.games, args.seed)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=1))
    text = markdown(record)
    args.json.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
