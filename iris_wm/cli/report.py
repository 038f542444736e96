"""The demo's report: ``report.md`` with every figure of the run, the pictures, and ``curves.png``."""

from __future__ import annotations

from pathlib import Path

from iris_wm.evaluate.rollouts import table_cells
from iris_wm.evaluate.scores import margin_over_random


def write_report(out: Path, summary: dict) -> Path:
    m = summary["metrics"]
    grids = sorted((out / "tokenizer").rglob("reconstructions/*.png"))
    lines = [
        "# iris-wm demo report",
        "",
        f"{summary.get('game', 'Breakout')}: random-policy data, the demo tokenizer, world model and actor-critic "
        f"(configs/*/demo.yaml), seed {summary.get('seed', 0)}. Reproduce with `make demo`.",
    ]
    lines += _tokenizer_lines(m, summary)
    lines += _world_model_lines(m)
    lines += _event_lines(m)
    lines += ["", "## Time per stage (s)", "", "| stage | seconds |", "| --- | --- |"]
    lines += [f"| {stage} | {seconds:.0f} |" for stage, seconds in summary["timings_s"].items()]
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
    for key, how in (
        ("imagination", "sampled as the agent imagines"),
        ("imagination_argmax", "the point prediction: the most likely token everywhere"),
    ):
        lines += _imagination_lines(summary.get(key), how, out)
    lines += _showcase_lines(summary.get("showcase"))
    lines += _evaluation_lines(summary.get("evaluation") or {})
    lines += _seed_lines(out)
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


def _tokenizer_lines(m: dict, summary: dict) -> list[str]:
    r = {k.removeprefix("reconstruction/"): v for k, v in m.items() if k.startswith("reconstruction/")}
    if not r:
        return []
    lines = [
        "",
        f"## Tokenizer: {int(r['pairs'])} held-out frames, each with the frame before it",
        "",
        "Dynamic pixels: those that moved by more than 10 levels since the previous frame "
        f"({100 * r['dynamic_fraction']:.2f}% of the values). PSNR in dB, L1 in levels of 255.",
        "",
        "| figure | tokenizer | mean training frame | previous frame |",
        "| --- | --- | --- | --- |",
    ]
    for figure, key, digits in (
        ("whole-frame PSNR", "psnr", 2),
        ("whole-frame L1", "l1", 3),
        ("dynamic-pixel PSNR", "dynamic_psnr", 2),
        ("dynamic-pixel L1", "dynamic_l1", 1),
    ):
        cells = " | ".join(f"{r[f'{name}/{key}']:.{digits}f}" for name in ("tokenizer", "mean_frame", "previous_frame"))
        lines.append(f"| {figure} | {cells} |")
    lines += [
        "",
        f"Token stability: between consecutive frames {100 * r['tokens/changed']:.1f}% of the tokens change, against "
        f"{100 * r['cells/pixels_changed']:.1f}% of the grid cells whose pixels change; of the cells whose pixels stay "
        f"still, {100 * r['tokens/changed_where_pixels_static']:.1f}% change their token anyway. Codebook usage "
        f"{m.get('val/codebook_usage', float('nan')):.3f}, code perplexity "
        f"{m.get('val/perplexity', float('nan')):.1f}; {summary['training_frames']} training frames.",
    ]
    return lines


def _world_model_lines(m: dict) -> list[str]:
    wm = {k.removeprefix("world_model/val/"): v for k, v in m.items() if k.startswith("world_model/val/")}
    if not wm:
        return []
    nan = float("nan")
    lines = [
        "",
        "## World model: every position of every held-out window (the validation loop)",
        "",
        f"Observation cross-entropy {wm.get('observation_ce', nan):.4f} nats per token "
        f"({wm.get('bits_per_frame', nan):.2f} bits per frame); over the tokens of frames 1.. only "
        f"{wm.get('next_frame_ce', nan):.4f}.",
        "",
        "| class | precision | recall | F1 | majority-class F1 | steps |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for head, names in (("reward", ("positive", "negative", "zero")), ("termination", ("ends", "continues"))):
        for name in names:
            if wm.get(f"{head}/support/{name}", 0) == 0 and name == "negative":
                continue
            figures = [wm.get(f"{head}/{kind}/{name}", nan) for kind in ("precision", "recall", "f1", "majority_f1")]
            cells = " | ".join(f"{v:.3f}" for v in figures)
            lines.append(f"| {head}: {name} | {cells} | {wm.get(f'{head}/support/{name}', 0):.0f} |")
    return lines


def _event_lines(m: dict) -> list[str]:
    """Each held-out step's reward and end, predicted once with its full context (iris_wm.evaluate.events)."""
    m = {k.removeprefix("events/"): v for k, v in m.items() if k.startswith("events/")}
    if "steps" not in m:
        return []
    lines = [
        "",
        f"## World model: rewards and ends on {m['steps']:.0f} held-out steps of {m['episodes']:.0f} "
        "episodes, each predicted once with its full context",
        "",
        "As imagination uses the model: each step read with up to the model's context of steps before it. Argmax "
        "decides the most likely class; the threshold decides the class when its probability reaches a threshold "
        "chosen on the other half of the episodes (cross-fitted: no step is decided by a threshold chosen on it). "
        "F1 with a 95% bootstrap interval over episodes; the majority-class baseline's F1 is 0 for these rare classes.",
        "",
        "| class | steps | decision | precision | recall | F1 [95%] | thresholds of the two halves |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for head, label in (("reward/positive", "positive reward"), ("reward/negative", "negative reward"), ("end", "end")):
        if f"{head}/support" not in m:
            continue
        for rule in ("argmax", "threshold"):
            low, high = m[f"{head}/{rule}/f1_ci"]
            halves = " / ".join(f"{t:.2f}" for t in m[f"{head}/fold_thresholds"])
            where = "" if rule == "argmax" else f"{halves} (on all steps: {m[f'{head}/threshold']:.2f})"
            lines.append(
                f"| {label} | {m[f'{head}/support']:.0f} | {rule} | {m[f'{head}/{rule}/precision']:.3f} | "
                f"{m[f'{head}/{rule}/recall']:.3f} | {m[f'{head}/{rule}/f1']:.3f} [{low:.3f}, {high:.3f}] | {where} |"
            )
    return lines


def _imagination_lines(imagination: dict | None, how: str, out: Path) -> list[str]:
    if not imagination:
        return []
    lines = [
        "",
        f"## Imagination, {how}: {imagination['windows']} held-out windows of {imagination['episodes']} episodes, "
        f"{imagination['burn_in']} real steps of context, then the real actions (temperature "
        f"{imagination['temperature']})",
        "",
        "Imagined against copying the last real frame of the context (its tokens for the token accuracy), with "
        "95% bootstrap intervals over episodes. Dynamic pixels: those that moved by more than "
        f"{imagination['dynamic_levels']} levels since that frame. The gains are imagined minus copy-last, with "
        "paired intervals (both on the same resampled episodes).",
        "",
        "| horizon | token accuracy | copy-last tokens | frame PSNR (dB) | copy-last frame | dynamic-pixel PSNR "
        "| copy-last, dynamic | tokenizer PSNR of the real tokens |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    rows = [row for row in imagination["per_horizon"] if row["horizon"] in (1, 5, 10, 20, 50)]
    lines += [f"| {row['horizon']} | " + " | ".join(table_cells(row)) + " |" for row in rows]
    if rows and "frame_psnr_gain" in rows[0]:
        lines += ["", "| horizon | token accuracy gain | frame PSNR gain (dB) | dynamic-pixel PSNR gain (dB) |"]
        lines += ["| --- | --- | --- | --- |"]
        for row in rows:
            cells = []
            for name, digits in (("token_accuracy_gain", 3), ("frame_psnr_gain", 2), ("dynamic_psnr_gain", 2)):
                low, high = row[f"{name}_ci"]
                cells.append(f"{row[name]:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]")
            lines.append(f"| {row['horizon']} | " + " | ".join(cells) + " |")
    folder = out / ("imagine" if imagination["temperature"] else "imagine-argmax")
    strips = sorted(folder.glob("*.png"))
    if strips:
        lines += [
            "",
            "Real (top) and imagined (bottom) frames, one column per imagined step:",
            "",
            f"![imagined]({strips[0].relative_to(out)})",
        ]
    return lines


def _showcase_lines(window: dict | None) -> list[str]:
    if not window:
        return []
    real, predicted = window["real"], window["predicted"]
    lines = [
        "",
        f"## One held-out window: real (top) and imagined (bottom), {window['burn_in']} real steps of context, then "
        f"{window['horizon']} steps following the real actions",
        "",
        "Under each frame, the reward that led to it (green: positive, red: negative) and the episode end (white): "
        "as it happened (top) and as the world model predicted it (bottom).",
        "",
        "![showcase](showcase.png)",
        "",
        "| imagined step | real reward | predicted reward | real end | predicted end |",
        "| --- | --- | --- | --- | --- |",
    ]
    for t in range(window["horizon"]):
        marks = (real["reward"][t], predicted["reward"][t], real["end"][t], predicted["end"][t])
        if any(marks):
            lines.append(
                f"| {t + 1} | {marks[0]:g} | {marks[1]:g} | {'yes' if marks[2] else ''} | {'yes' if marks[3] else ''} |"
            )
    return lines


def _seed_lines(out: Path) -> list[str]:
    path = out / "seeds.json"
    if not path.exists():
        return []
    import json

    seeds = json.loads(path.read_text())
    lines = [
        "",
        f"## The agent stage over {len(seeds['seeds'])} seeds (`make demo-seeds`), each against random on the "
        "same games",
        "",
        "| seed | games | agent | random | margin | combined SE | margin / SE |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in seeds["seeds"]:
        lines.append(
            f"| {r['seed']} | {r['games']} | {r['agent']:.2f} +- {r['agent_stderr']:.2f} | {r['random']:.2f} +- "
            f"{r['random_stderr']:.2f} | {r['margin']:+.2f} | {r['combined_stderr']:.2f} "
            f"| {r['margin_in_stderrs']:.1f} |"
        )
    lines += [
        "",
        f"Margin over random: mean {seeds['mean_margin']:+.2f}, standard deviation {seeds['std_margin']:.2f}; "
        f"{seeds['seeds_beating_random_by_one_stderr']} of {len(seeds['seeds'])} seeds ahead by a combined standard "
        "error.",
    ]
    return lines


def _evaluation_lines(evaluation: dict) -> list[str]:
    if not evaluation:
        return []
    agent, random = evaluation["agent"], evaluation["random"]
    difference, combined = margin_over_random(agent, random)
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
