"""Throughput benchmarks (`make bench`): writes a JSON record and a Markdown table.

Measured in one process, one after the other, so ratios within a run are comparable; absolute numbers move
with whatever else the (shared, 2-core) machine is doing. Each figure is the median of ``--repeats`` timed
runs after a warm-up run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from iris_wm.data.store import EpisodeStore
from iris_wm.data.windows import WindowDataset
from iris_wm.provenance import provenance
from tokenizer.model import Tokenizer, TokenizerConfig

DEMO_TOKENIZER = dict(channels=16, channel_mult=(1, 2, 2, 4, 4), num_res_blocks=1, attn_resolutions=(8,),
                      z_channels=64, embed_dim=64)  # fmt: skip  (configs/tokenizer/demo.yaml)


def cpu_description() -> str:
    """CPU model and the matrix extensions that decide bf16 speed (AMX, AVX-512 BF16)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    extensions = [f for f in ("amx_bf16", "avx512_bf16", "avx512f", "avx2") if f in flags]
    return f"{model} ({', '.join(extensions) or 'no AVX-512/AMX'})"


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Median seconds of ``fn`` over ``repeats`` runs after one warm-up run."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_peak(repeats: int) -> dict[str, float]:
    """GFLOP/s of a 2048^3 matmul in fp32 and bf16: the ceiling the model figures are compared with."""
    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(2048, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
        out[name] = 2 * 2048**3 / timed(lambda: a @ b, repeats) / 1e9  # noqa: B023
    return out


def tokenizer_throughput(name: str, config: TokenizerConfig, batch: int, repeats: int) -> list[dict]:
    model = Tokenizer(config).eval()
    frames = torch.randint(0, 256, (batch, 3, config.resolution, config.resolution), dtype=torch.uint8)
    tokens = model.encode(frames)
    rows = []
    for precision in ("fp32", "bf16"):
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else nullcontext()

        def run(fn, autocast=autocast):
            with torch.inference_mode(), autocast:
                fn()

        for op, fn in (("encode", lambda: model.encode(frames)), ("decode", lambda: model.decode(tokens)),
                       ("encode+decode", lambda: model.decode(model.encode(frames)))):  # fmt: skip
            seconds = timed(lambda fn=fn: run(fn), repeats)
            rows.append({"model": name, "op": op, "precision": precision, "batch": batch,
                         "frames_per_s": batch / seconds})  # fmt: skip
    return rows


def store_sampling(steps: int, repeats: int) -> list[dict]:
    """Frames/s of random batches of windows from a memory-mapped store of ``steps`` random frames."""
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        store = EpisodeStore.create(Path(folder) / "s", EpisodeStore.frame_spec(64), 4, {})
        from iris_wm.data.store import Episode

        length, written = 500, 0
        while written < steps:
            batch = []
            for _ in range(20):
                frames = rng.integers(0, 256, (length, 3, 64, 64), dtype=np.uint8)
                ends = np.zeros(length, bool)
                ends[-1] = True
                batch.append(Episode(frames, rng.integers(0, 4, length), np.zeros(length, np.float32), ends,
                                     np.zeros(length, bool)))  # fmt: skip
            store.append(batch)
            written += 20 * length
        store = EpisodeStore.open(store.root, verify="size")
        for batch_size, horizon in ((64, 1), (64, 20)):
            dataset = WindowDataset(store, np.arange(store.num_episodes), horizon)
            draws = [rng.integers(0, len(dataset), batch_size) for _ in range(repeats + 1)]
            it = iter(draws)
            seconds = timed(lambda: dataset.__getitems__(next(it)), repeats)  # noqa: B023
            rows.append({"store_steps": store.num_steps, "batch": batch_size, "T": horizon,
                         "frames_per_s": batch_size * horizon / seconds, "ms_per_batch": seconds * 1e3})  # fmt: skip
    return rows


def markdown(record: dict) -> str:
    peak = record["matmul_gflops"]
    lines = [
        "# Benchmarks",
        "",
        f"Machine: {record['machine']}. Command: `{record['command']}`. Date: {record['date']}.",
        f"Torch threads: {record['threads']}. Figures are medians of {record['repeats']} runs after a warm-up.",
        "",
        f"Matmul peak in the same run (2048^3): fp32 {peak['fp32']:.0f} GFLOP/s, bf16 {peak['bf16']:.0f} GFLOP/s.",
        "",
        "## Tokenizer (inference, frames/s)",
        "",
        "| model | params | op | precision | batch | frames/s |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in record["tokenizer"]:
        params = record["tokenizer_params"][row["model"]]
        lines.append(f"| {row['model']} | {params / 1e6:.2f}M | {row['op']} | {row['precision']} | {row['batch']} "
                     f"| {row['frames_per_s']:.1f} |")  # fmt: skip
    lines += ["", "## Episode store: random windows (memory-mapped Arrow shards)", "",
              "| store steps | batch | T | frames/s | ms/batch |", "| --- | --- | --- | --- | --- |"]  # fmt: skip
    for row in record["store"]:
        lines.append(f"| {row['store_steps']} | {row['batch']} | {row['T']} | {row['frames_per_s']:.0f} "
                     f"| {row['ms_per_batch']:.2f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", type=Path, default=Path("docs/benchmarks.json"))
    parser.add_argument("--markdown", type=Path, default=Path("docs/BENCHMARKS.md"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--store_steps", type=int, default=50_000)
    args = parser.parse_args()
    torch.manual_seed(0)
    configs = {"iris (4.0M)": TokenizerConfig(), "demo": TokenizerConfig(**DEMO_TOKENIZER)}
    record = {
        "command": "make bench",
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{cpu_description()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "provenance": provenance(),
        "matmul_gflops": matmul_peak(args.repeats),
        "tokenizer_params": {k: sum(p.numel() for p in Tokenizer(c).parameters()) for k, c in configs.items()},
        "tokenizer": [row for name, cfg in configs.items() for row in
                      tokenizer_throughput(name, cfg, args.batch, args.repeats)],  # fmt: skip
        "store": store_sampling(args.store_steps, args.repeats * 4),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=1))
    args.markdown.write_text(markdown(record))
    print(markdown(record))


if __name__ == "__main__":
    main()
