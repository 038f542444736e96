"""`make demo`: the pipeline end to end on a CPU-sized Breakout setup, through the public CLI.

Stages (each skipped when its output already exists, so an interrupted demo resumes):
1. ``iris-wm collect``: random-policy Breakout steps into an episode store.
2. ``iris-wm tokenizer fit``: the demo tokenizer (configs/tokenizer/demo.yaml).
3. ``iris-wm tokenizer validate``: held-out PSNR, L1 and codebook usage on every validation frame.
4. ``iris-wm tokenizer predict``: the token store the world model trains on.
5. ``iris-wm world-model fit`` and ``validate``: the demo world model (configs/world_model/demo.yaml).
6. ``iris-wm imagine``: imagined vs real rollouts of held-out episodes and the error per horizon.
7. ``iris-wm agent fit``: the demo actor-critic, trained in the world model's imagination
   (configs/agent/demo.yaml).
8. ``iris-wm evaluate``: the agent and the random policy on the same seeded episodes of the real game.
9. ``iris-wm push-to-hub`` without a repository: the agent exported as a pretrained folder with its card.
Then ``<out>/report.md`` gathers the figures, the reconstruction grid, the imagined rollouts and the
learning curves (``<out>/curves.png``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from iris_wm.cli import main as iris_wm

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def run_stage(stage: str, verb: str, out: Path, data: str, *extra: str, config: str = "demo.yaml"):
    """Run a LightningCLI stage with ``configs/<stage>/<config>``, every path under ``out``."""
    from iris_wm.training import run_agent_cli, run_tokenizer_cli, run_world_model_cli

    run = {"tokenizer": run_tokenizer_cli, "world_model": run_world_model_cli, "agent": run_agent_cli}[stage]
    args = [
        verb,
        "--config",
        str(CONFIGS / stage / config),
        "--data.root",
        str(out / data),
        "--trainer.default_root_dir",
        str(out / stage),
        "--trainer.logger.init_args.save_dir",
        str(out / stage),
        "--trainer.callbacks.init_args.dirpath",
        str(out / stage / "checkpoints"),
        *extra,
    ]
    return run(args)


def _tokenizer(verb: str, out: Path, *extra: str):
    return run_stage("tokenizer", verb, out, "episodes", *extra)


def mean_frame_psnr(datamodule, chunk: int = 4096) -> float:
    """PSNR on the validation frames of the per-pixel mean training frame: the score of a tokenizer that
    knows nothing about the frame it encodes. A useful tokenizer scores above it."""
    import numpy as np
    import torch

    from tokenizer.module import psnr

    train, val = datamodule.train_set, datamodule.val_set
    total = np.zeros((3, *datamodule.store.spec.shape[1:]), np.float64)
    for start in range(0, len(train), chunk):
        total += datamodule.store.observations(train.anchors[start : start + chunk]).sum(0, dtype=np.float64)
    mean = torch.from_numpy((total / len(train)).round().astype(np.uint8))
    scores = [
        psnr(mean.expand(len(rows), -1, -1, -1), torch.from_numpy(datamodule.store.observations(rows)))
        for rows in np.array_split(val.anchors, max(1, len(val) // chunk))
    ]
    return float(torch.cat(scores).mean())


def run(out: Path, steps: int, seed: int, eval_episodes: int = 16, eval_max_steps: int = 2_000) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    previous = out / "summary.json"
    # Stages skipped on a resumed demo keep the timings of the run that did them.
    timings: dict[str, float] = json.loads(previous.read_text())["timings_s"] if previous.exists() else {}

    start = time.perf_counter()
    iris_wm(["collect", "--out", str(out / "episodes"), "--steps", str(steps), "--seed", str(seed)])
    timings["collect"] = time.perf_counter() - start

    checkpoint = out / "tokenizer" / "checkpoints" / "last.ckpt"
    if not checkpoint.exists():
        start = time.perf_counter()
        _tokenizer("fit", out, "--seed_everything", str(seed))
        timings["tokenizer fit"] = time.perf_counter() - start

    start = time.perf_counter()
    cli = _tokenizer("validate", out, "--ckpt_path", str(checkpoint), "--data.max_val_windows", "null")
    metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items()}
    timings["tokenizer validate"] = time.perf_counter() - start

    tokens = out / "tokens"
    if not (tokens / "manifest.json").exists():
        start = time.perf_counter()
        _tokenizer("predict", out, "--ckpt_path", str(checkpoint), "--token_writer.output", str(tokens))
        timings["tokenizer predict"] = time.perf_counter() - start

    metrics["baseline/mean_frame_psnr"] = mean_frame_psnr(cli.datamodule)

    wm_checkpoint = out / "world_model" / "checkpoints" / "last.ckpt"
    if not wm_checkpoint.exists():
        start = time.perf_counter()
        run_stage("world_model", "fit", out, "tokens", "--seed_everything", str(seed))
        timings["world model fit"] = time.perf_counter() - start
    start = time.perf_counter()
    wm_cli = run_stage(
        "world_model", "validate", out, "tokens", "--ckpt_path", str(wm_checkpoint), "--data.max_val_windows", "null"
    )
    metrics.update({f"world_model/{k}": float(v) for k, v in wm_cli.trainer.callback_metrics.items()})
    val_rows = wm_cli.datamodule.val_set.anchors
    metrics["baseline/zero_reward_accuracy"] = float((wm_cli.datamodule.store.columns.reward[val_rows] == 0).mean())
    timings["world model validate"] = time.perf_counter() - start

    from iris_wm.imagine import imagine

    start = time.perf_counter()
    imagination = imagine(
        str(wm_checkpoint),
        str(checkpoint),
        str(out / "episodes"),
        str(tokens),
        str(out / "imagine"),
        burn_in=4,
        horizon=20,
        num_episodes=8,
        seed=seed,
    )
    timings["imagine"] = time.perf_counter() - start

    agent_checkpoint = out / "agent" / "checkpoints" / "last.ckpt"
    if not agent_checkpoint.exists():
        start = time.perf_counter()
        run_stage(
            "agent",
            "fit",
            out,
            "tokens",
            "--seed_everything",
            str(seed),
            "--model.world_model",
            str(wm_checkpoint),
            "--model.tokenizer",
            str(checkpoint),
        )
        timings["agent fit"] = time.perf_counter() - start
    evaluation = {}
    for name, policy in (("agent", ["--agent", str(agent_checkpoint)]), ("random", [])):
        start = time.perf_counter()
        iris_wm(
            [
                "evaluate",
                "--out",
                str(out / "evaluate" / f"{name}.json"),
                *policy,
                "--episodes",
                str(eval_episodes),
                "--num_envs",
                "8",
                "--seed",
                str(1000 + seed),
                "--env.max_episode_steps",
                str(eval_max_steps),
            ]
        )
        evaluation[name] = json.loads((out / "evaluate" / f"{name}.json").read_text())
        timings[f"evaluate {name}"] = time.perf_counter() - start
    start = time.perf_counter()
    card_metrics = {
        "tokenizer: held-out PSNR (dB)": metrics.get("val/psnr"),
        "world model: held-out observation CE (nats/token)": metrics.get("world_model/val/observation_ce"),
        "world model: held-out bits per frame": metrics.get("world_model/val/bits_per_frame"),
    }
    for row in imagination["per_horizon"]:
        if row["horizon"] in (1, 5, 10, 20):
            card_metrics[f"imagination: token accuracy at horizon {row['horizon']}"] = row["token_accuracy"]
    (out / "card_metrics.json").write_text(json.dumps({k: v for k, v in card_metrics.items() if v is not None}))
    round_trip = check_round_trip(
        out, export_pretrained(out, agent_checkpoint), agent_checkpoint, metrics["world_model/val/observation_ce"]
    )
    timings["export and round trip"] = time.perf_counter() - start
    plot_curves(out)
    summary = {
        "metrics": metrics,
        "imagination": imagination,
        "evaluation": evaluation,
        "timings_s": timings,
        "round_trip": round_trip,
        "checkpoint": str(checkpoint),
        "tokens": str(tokens),
        "validation_frames": len(cli.datamodule.val_set),
        "training_frames": len(cli.datamodule.train_set),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    write_report(out, summary)
    return summary


def write_report(out: Path, summary: dict) -> Path:
    m = summary["metrics"]
    nan = float("nan")
    grids = sorted((out / "tokenizer").rglob("reconstructions/*.png"))
    lines = [
        "# iris-wm demo report",
        "",
        "Breakout: random-policy data, the demo tokenizer, world model and actor-critic (configs/*/demo.yaml). "
        "Reproduce with `make demo`.",
        "",
        "| figure | value |",
        "| --- | --- |",
        f"| held-out PSNR (dB), {summary['validation_frames']} validation frames "
        f"| {m.get('val/psnr', float('nan')):.2f} |",
        f"| baseline: PSNR of the mean training frame on the same frames "
        f"| {m.get('baseline/mean_frame_psnr', float('nan')):.2f} |",
        f"| held-out L1 (pixels in [-1, 1]) | {m.get('val/l1', float('nan')):.4f} |",
        f"| codebook usage on validation frames | {m.get('val/codebook_usage', float('nan')):.3f} |",
        f"| code perplexity on validation frames | {m.get('val/perplexity', float('nan')):.1f} |",
        f"| training frames | {summary['training_frames']} |",
    ]
    wm = {k.removeprefix("world_model/val/"): v for k, v in m.items() if k.startswith("world_model/val/")}
    lines += [
        f"| world model: held-out observation CE (nats per token) | {wm.get('observation_ce', nan):.4f} |",
        f"| world model: held-out bits per frame | {wm.get('bits_per_frame', nan):.2f} |",
        f"| world model: held-out reward accuracy (sign classes) | {wm.get('reward_accuracy', nan):.4f} |",
        f"| baseline: accuracy of always predicting zero reward | {m.get('baseline/zero_reward_accuracy', nan):.4f} |",
        f"| world model: held-out termination F1 | {wm.get('termination_f1', nan):.3f} |",
    ]
    lines += [f"| time: {stage} (s) | {seconds:.0f} |" for stage, seconds in summary["timings_s"].items()]
    if (out / "pretrained" / "agent.json").exists():
        lines += [
            "",
            "The agent as a pretrained folder (tokenizer, world model, actor-critic as safetensors, with a "
            "model card): `pretrained/`. Load it with `iris_wm.hub.load_agent`, evaluate it with "
            "`iris-wm evaluate --agent runs/demo/pretrained`, push it with "
            "`iris-wm push-to-hub --checkpoint runs/demo/agent/checkpoints/last.ckpt --repo_id OWNER/NAME`.",
        ]
        trip = summary.get("round_trip")
        if trip:
            same = ", ".join(
                f"{kind} {'identical' if ok else 'DIFFERENT'}" for kind, ok in trip["identical_weights"].items()
            )
            lines += [
                "",
                f"Round trip: weights in the folder vs the checkpoint: {same}. `world-model validate "
                f"--model.from_pretrained pretrained/` gives a held-out CE of "
                f"{trip['observation_ce_pretrained']:.6f} against {trip['observation_ce_checkpoint']:.6f} "
                f"from the checkpoint (|difference| {trip['observation_ce_abs_difference']:.1e}).",
            ]
    imagination = summary.get("imagination")
    if imagination:
        lines += [
            "",
            f"## Imagination: {imagination['episodes']} held-out windows, {imagination['burn_in']} real "
            f"steps of context, then the real actions (temperature {imagination['temperature']})",
            "",
            "| horizon | token accuracy | frame PSNR (dB) | tokenizer PSNR of the real tokens (dB) |",
            "| --- | --- | --- | --- |",
        ]
        for row in imagination["per_horizon"]:
            if row["horizon"] in (1, 5, 10, 20):
                lines.append(
                    f"| {row['horizon']} | {row['token_accuracy']:.3f} | {row['frame_psnr']:.2f} "
                    f"| {row['tokenizer_psnr']:.2f} |"
                )
        strips = sorted((out / "imagine").glob("*.png"))
        if strips:
            lines += [
                "",
                "Real (top) and imagined (bottom) frames, one column per imagined step:",
                "",
                f"![imagined]({strips[0].relative_to(out)})",
            ]
    lines += _evaluation_lines(summary.get("evaluation") or {})
    if (out / "curves.png").exists():
        lines += [
            "",
            "Learning curves (training losses; per agent step, the mean imagined return of a trajectory, the "
            "share of trajectories the world model ends within the horizon, the policy's entropy):",
            "",
            "![learning curves](curves.png)",
        ]
    if grids:
        lines += [
            "",
            "Originals (top) and reconstructions (bottom) at the last validation:",
            "",
            f"![reconstructions]({grids[-1].relative_to(out)})",
        ]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def export_pretrained(out: Path, agent_checkpoint: Path) -> Path:
    """The trained agent as a pretrained folder (safetensors, configs, a model card with the evaluation)."""
    iris_wm(
        [
            "push-to-hub",
            "--checkpoint",
            str(agent_checkpoint),
            "--out",
            str(out / "pretrained"),
            "--results",
            str(out / "evaluate" / "agent.json"),
            str(out / "evaluate" / "random.json"),
            *(["--metrics", str(out / "card_metrics.json")] if (out / "card_metrics.json").exists() else []),
            "--command",
            "make demo",
        ]
    )
    return out / "pretrained"


def check_round_trip(out: Path, folder: Path, agent_checkpoint: Path, observation_ce: float) -> dict:
    """The exported folder holds exactly the trained weights (digests of each component, checkpoint vs folder),
    and `world-model validate --model.from_pretrained` on it gives the checkpoint's held-out figure."""
    from iris_wm.hub import load_model, load_stage_checkpoint
    from iris_wm.provenance import weights_digest

    _, trained = load_stage_checkpoint(agent_checkpoint)
    same = {
        kind: weights_digest(getattr(trained, kind)) == weights_digest(load_model(folder, kind))
        for kind in ("tokenizer", "world_model", "actor_critic")
    }
    cli = run_stage(
        "world_model",
        "validate",
        out,
        "tokens",
        "--model.from_pretrained",
        str(folder),
        "--data.max_val_windows",
        "null",
    )
    again = float(cli.trainer.callback_metrics["val/observation_ce"])
    return {
        "identical_weights": same,
        "observation_ce_checkpoint": observation_ce,
        "observation_ce_pretrained": again,
        "observation_ce_abs_difference": abs(again - observation_ce),
    }


def _evaluation_lines(evaluation: dict) -> list[str]:
    if not evaluation:
        return []
    agent, random = evaluation["agent"], evaluation["random"]
    difference = agent["mean"] - random["mean"]
    combined = (agent["stderr"] ** 2 + random["stderr"] ** 2) ** 0.5
    verdict = "beats" if difference > combined else "does not beat"
    lines = [
        "",
        f"## The real game: {agent['episodes']} seeded episodes each ({agent['game']}, no life-loss "
        f"episodes, at most {agent['env']['max_episode_steps']} steps, agent temperature {agent['temperature']})",
        "",
        "| policy | mean return | standard error | human-normalised | mean length (steps) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, row in (("agent (trained in imagination)", agent), ("random", random)):
        hns = row["human_normalized"]
        lines.append(
            f"| {name} | {row['mean']:.2f} | {row['stderr']:.2f} | "
            f"{'n/a' if hns is None else f'{hns:.3f}'} | {sum(row['lengths']) / len(row['lengths']):.0f} |"
        )
    lines += [
        "",
        f"The agent {verdict} the random policy: difference {difference:+.2f}, combined standard error {combined:.2f}.",
    ]
    return lines


def _csv_rows(folder: Path, key: str) -> list[dict]:
    """Rows with ``key`` from the CSV log of the run that trained (validate runs log into later versions)."""
    import csv

    runs = [[r for r in csv.DictReader(f.open()) if r.get(key)] for f in folder.glob("logs/version_*/metrics.csv")]
    return max(runs, key=len, default=[])


def plot_curves(out: Path) -> Path | None:
    """``curves.png``: tokenizer and world-model training loss, and the agent's imagined return, per step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("tokenizer", "train/loss", "tokenizer loss"),
        ("world_model", "train/loss", "world-model loss"),
        ("agent", "train/imagined_return", "agent: imagined return"),
        ("agent", "train/imagined_end_rate", "agent: imagined episode ends"),
        ("agent", "train/entropy", "agent: policy entropy"),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3))
    drawn = False
    for ax, (stage, key, title) in zip(axes, panels, strict=True):
        rows = _csv_rows(out / stage, key)
        if rows:
            ax.plot([int(r["step"]) for r in rows], [float(r[key]) for r in rows])
            drawn = True
        ax.set_title(title)
        ax.set_xlabel("step")
    if not drawn:
        plt.close(fig)
        return None
    fig.tight_layout()
    path = out / "curves.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="iris-wm-demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="Folder for everything the demo writes.")
    parser.add_argument("--steps", type=int, default=10_000, help="Environment steps to collect.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of collection and training.")
    parser.add_argument("--eval_episodes", type=int, default=16, help="Real-game episodes for the agent and random.")
    parser.add_argument("--eval_max_steps", type=int, default=2_000, help="Cap on the steps of an evaluation episode.")
    args = parser.parse_args(argv)
    summary = run(args.out, args.steps, args.seed, args.eval_episodes, args.eval_max_steps)
    print((args.out / "report.md").read_text())
    print(json.dumps(summary["timings_s"]))


if __name__ == "__main__":
    main()
