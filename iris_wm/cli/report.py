"""The demo's report: ``report.md`` with every figure of the run, the pictures, and ``curves.png``."""

from __future__ import annotations

from pathlib import Path

from iris_wm.evaluate.rollouts import table_cells


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
            f"## Imagination: {imagination['windows']} held-out windows of {imagination['episodes']} episodes, "
            f"{imagination['burn_in']} real steps of context, then the real actions (temperature "
            f"{imagination['temperature']})",
            "",
            "Imagined against copying the last real frame of the context (its tokens for the token accuracy), with "
            "95% bootstrap intervals over episodes. Dynamic pixels: those that moved by more than "
            f"{imagination['dynamic_levels']} levels since that frame.",
            "",
            "| horizon | token accuracy | copy-last tokens | frame PSNR (dB) | copy-last frame | dynamic-pixel PSNR "
            "| copy-last, dynamic | tokenizer PSNR of the real tokens |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for row in imagination["per_horizon"]:
            if row["horizon"] in (1, 5, 10, 20, 50):
                lines.append(f"| {row['horizon']} | " + " | ".join(table_cells(row)) + " |")
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
