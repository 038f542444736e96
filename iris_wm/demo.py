"""`make demo`: the pipeline end to end on a CPU-sized Breakout setup, through the public CLI.

Stages (each skipped when its output already exists, so an interrupted demo resumes):
1. ``iris-wm collect``: random-policy Breakout steps into an episode store.
2. ``iris-wm tokenizer fit``: the demo tokenizer (configs/tokenizer/demo.yaml).
3. ``iris-wm tokenizer validate``: held-out PSNR, L1 and codebook usage on every validation frame.
4. ``iris-wm tokenizer predict``: the token store the world model will train on.
Then ``<out>/report.md`` gathers the figures and the reconstruction grid.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from iris_wm.cli import main as iris_wm

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _tokenizer(verb: str, out: Path, *extra: str):
    from iris_wm.training import run_tokenizer_cli

    args = [
        verb,
        "--config", str(CONFIGS / "tokenizer" / "demo.yaml"),
        "--data.root", str(out / "episodes"),
        "--trainer.default_root_dir", str(out / "tokenizer"),
        "--trainer.logger.init_args.save_dir", str(out / "tokenizer"),
        "--trainer.callbacks.init_args.dirpath", str(out / "tokenizer" / "checkpoints"),
        *extra,
    ]  # fmt: skip
    return run_tokenizer_cli(args)


def mean_frame_psnr(datamodule, chunk: int = 4096) -> float:
    """PSNR on the validation frames of the per-pixel mean training frame: the score of a tokenizer that
    knows nothing about the frame it encodes. A useful tokenizer scores above it."""
    import numpy as np
    import torch

    from tokenizer.module import psnr

    train, val = datamodule.train_set, datamodule.val_set
    total = np.zeros((3, *datamodule.store.spec.shape[1:]), np.float64)
    for start in range(0, len(train), chunk):
        total += datamodule.store.observations(train.anchors[start:start + chunk]).sum(0, dtype=np.float64)
    mean = torch.from_numpy((total / len(train)).round().astype(np.uint8))
    scores = [psnr(mean.expand(len(rows), -1, -1, -1), torch.from_numpy(datamodule.store.observations(rows)))
              for rows in np.array_split(val.anchors, max(1, len(val) // chunk))]
    return float(torch.cat(scores).mean())


def run(out: Path, steps: int, seed: int) -> dict:
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
    summary = {"metrics": metrics, "timings_s": timings, "checkpoint": str(checkpoint), "tokens": str(tokens),
               "validation_frames": len(cli.datamodule.val_set), "training_frames": len(cli.datamodule.train_set)}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    write_report(out, summary)
    return summary


def write_report(out: Path, summary: dict) -> Path:
    m = summary["metrics"]
    grids = sorted((out / "tokenizer").rglob("reconstructions/*.png"))
    lines = [
        "# iris-wm demo report",
        "",
        "Breakout, random policy, demo tokenizer (configs/tokenizer/demo.yaml). Reproduce with `make demo`.",
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
    lines += [f"| time: {stage} (s) | {seconds:.0f} |" for stage, seconds in summary["timings_s"].items()]
    if grids:
        lines += ["", "Originals (top) and reconstructions (bottom) at the last validation:", "",
                  f"![reconstructions]({grids[-1].relative_to(out)})"]  # fmt: skip
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="iris-wm-demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="Folder for everything the demo writes.")
    parser.add_argument("--steps", type=int, default=10_000, help="Environment steps to collect.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of collection and training.")
    args = parser.parse_args(argv)
    summary = run(args.out, args.steps, args.seed)
    print((args.out / "report.md").read_text())
    print(json.dumps(summary["timings_s"]))


if __name__ == "__main__":
    main()
