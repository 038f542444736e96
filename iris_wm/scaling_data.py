"""The token store a CPU scaling sweep trains on: random-policy Breakout episodes, encoded once.

Each stage is skipped when its output exists, so `make scaling` resumes like `make demo`:
1. ``iris-wm collect``: random-policy Breakout steps into ``<root>/episodes`` (in ``workers`` processes).
2. ``iris-wm tokenizer fit`` with ``configs/tokenizer/scaling.yaml`` (256 codes, 16 tokens per frame).
3. ``iris-wm tokenizer predict``: the token store ``<root>/tokens``.
"""

from __future__ import annotations

import time
from pathlib import Path

from iris_wm.cli import main as iris_wm
from iris_wm.demo import run_stage


def _tokenizer_stage(verb: str, root: Path, *extra: str) -> None:
    run_stage("tokenizer", verb, root, "episodes", *extra, config="scaling.yaml")


def prepare_tokens(root: str | Path, steps: int, seed: int = 1, workers: int = 1, log=print) -> Path:
    """Collect (in ``workers`` processes), train the tokenizer, encode; returns the token store's folder
    ``<root>/tokens``."""
    root = Path(root)
    tokens = root / "tokens"
    if (tokens / "manifest.json").exists():
        return tokens
    start = time.perf_counter()
    iris_wm(
        [
            "collect",
            "--out",
            str(root / "episodes"),
            "--steps",
            str(steps),
            "--seed",
            str(seed),
            "--workers",
            str(workers),
        ]
    )
    log(f"collect: {time.perf_counter() - start:.0f} s")
    checkpoint = root / "tokenizer" / "checkpoints" / "last.ckpt"
    if not checkpoint.exists():
        start = time.perf_counter()
        _tokenizer_stage("fit", root, "--seed_everything", str(seed))
        log(f"tokenizer fit: {time.perf_counter() - start:.0f} s")
    start = time.perf_counter()
    _tokenizer_stage("predict", root, "--ckpt_path", str(checkpoint), "--token_writer.output", str(tokens))
    log(f"tokenizer predict ({checkpoint}): {time.perf_counter() - start:.0f} s")
    return tokens
