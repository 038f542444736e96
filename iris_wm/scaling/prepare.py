"""The token store a CPU scaling sweep trains on: random-policy Breakout episodes, encoded once.

Each stage is skipped when its output exists, so `make scaling` resumes like `make demo`:
1. collection: random-policy Breakout steps into ``<root>/episodes`` (in ``workers`` processes);
2. the tokenizer's fit stage with ``configs/tokenizer/scaling.yaml`` (256 codes, 16 tokens per frame);
3. its predict stage: the token store ``<root>/tokens``.
"""

from __future__ import annotations

import time
from pathlib import Path

from iris_wm.data.collect import collect, collect_parallel
from iris_wm.envs.atari import EnvConfig
from iris_wm.train.stages import run_tokenizer_cli, stage_args


def _tokenizer_stage(verb: str, root: Path, *extra: str) -> None:
    run_tokenizer_cli(stage_args(verb, "tokenizer", "scaling", root / "episodes", root / "tokenizer", *extra))


def prepare_tokens(root: str | Path, steps: int, seed: int = 1, workers: int = 1, log=print) -> Path:
    """Collect (in ``workers`` processes), train the tokenizer, encode; returns the token store's folder
    ``<root>/tokens``."""
    root = Path(root)
    tokens = root / "tokens"
    if (tokens / "manifest.json").exists():
        return tokens
    start = time.perf_counter()
    if workers > 1:
        collect_parallel(root / "episodes", steps, EnvConfig(), seed=seed, workers=workers)
    else:
        collect(root / "episodes", steps, EnvConfig(), seed=seed)
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
