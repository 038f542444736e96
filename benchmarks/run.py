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
from iris_wm.imagination import ImaginationConfig, ImaginationEnv
from iris_wm.provenance import provenance
from sequence_model.world_model import WorldModel, WorldModelConfig
from tokenizer.model import Tokenizer, TokenizerConfig

# Reference IRIS implementation at its default sizes on a quiet 2-core machine, as quoted in issue 3
# (not re-measured here: these machines differ, so the ratios below are indicative only).
REFERENCE = {"imagination_b1": 5.5, "imagination_b64": 37.0, "wm_train_tokens_per_s": 360.0,
             "tokenizer_encode_decode_b64": 16.0}  # fmt: skip

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


def _autocast(precision: str):
    return torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else nullcontext()


def imagination_throughput(batches: tuple[int, ...], steps: int) -> list[dict]:
    """Imagined env-steps/s at IRIS sizes, primed with one frame as IRIS, with and without decoding frames.

    bf16 here means bf16 weights (inference needs no fp32 master copy): autocast re-casts every weight at
    every op, which made batch-1 decoding slower than fp32 (docs/LOG.md)."""
    rows = []
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        torch.manual_seed(0)
        wm = WorldModel(WorldModelConfig(num_actions=4)).eval().to(dtype)
        tok = Tokenizer(TokenizerConfig()).eval().to(dtype)
        for batch in batches:
            for decode in (False, True):
                env = ImaginationEnv(wm, tok, ImaginationConfig(temperature=1.0),
                                     generator=torch.Generator().manual_seed(0))  # fmt: skip
                first = torch.randint(0, 512, (batch, 1, 16))
                actions = torch.randint(0, 4, (steps, batch))

                def rollout(env=env, first=first, actions=actions, decode=decode):
                    with torch.inference_mode():
                        env.reset(first)
                        for a in actions:
                            env.step(a)
                            if decode:
                                env.frames()

                seconds = timed(rollout, 2)
                rows.append({"precision": precision, "batch": batch, "decode_frames": decode,
                             "env_steps_per_s": batch * steps / seconds})  # fmt: skip
    return rows


def world_model_training(batch: int, repeats: int, peak: dict[str, float]) -> list[dict]:
    """Training tokens/s of the IRIS-size world model on cached tokens, and its model FLOP utilisation."""
    rows = []
    obs, act = torch.randint(0, 512, (batch, 20, 16)), torch.randint(0, 4, (batch, 20))
    rewards, ends = torch.zeros(batch, 20), torch.zeros(batch, 20, dtype=torch.bool)
    mask = torch.ones(batch, 20, dtype=torch.bool)
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        wm = WorldModel(WorldModelConfig(num_actions=4)).train()
        optimizer = torch.optim.AdamW(wm.parameters(), lr=1e-4)

        def train_step(wm=wm, optimizer=optimizer, precision=precision):
            with _autocast(precision):
                loss = wm.loss(obs, act, rewards, ends, mask)
            loss.total.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        seconds = timed(train_step, repeats)
        tokens_per_s = batch * 20 * 17 / seconds
        achieved = tokens_per_s * wm.flops_per_token(training=True) / 1e9
        rows.append({"precision": precision, "batch": batch, "tokens_per_s": tokens_per_s,
                     "gflops": achieved, "mfu": achieved / peak[precision]})  # fmt: skip
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
    lines += ["", "## Imagination at IRIS sizes (world model 8.4M, tokenizer 4.0M; primed with one frame)", "",
              "bf16 rows use bf16 weights (no autocast).", "",
              "Reference IRIS on a quiet 2-core machine, quoted in issue 3 (another machine, so ratios are "
              f"indicative): {REFERENCE['imagination_b1']} env-steps/s at batch 1 and "
              f"{REFERENCE['imagination_b64']} at batch 64, both decoding frames.", "",
              "| precision | batch | policy reads | env-steps/s | vs reference |", "| --- | --- | --- | --- | --- |"]
    for row in record.get("imagination", []):
        ref = {1: REFERENCE["imagination_b1"], 64: REFERENCE["imagination_b64"]}.get(row["batch"])
        ratio = f"{row['env_steps_per_s'] / ref:.1f}x" if ref else ""
        reads = "decoded frames" if row["decode_frames"] else "tokens"
        lines.append(f"| {row['precision']} | {row['batch']} | {reads} | {row['env_steps_per_s']:.1f} | {ratio} |")
    lines += ["", "## World-model training at IRIS size (batch of 20-step windows, tokens from the cache)", "",
              f"Reference: {REFERENCE['wm_train_tokens_per_s']:.0f} tokens/s (quoted in issue 3). MFU: model FLOPs "
              "(WorldModel.flops_per_token, forward + backward) over the matmul peak of the same precision.", "",
              "| precision | batch | tokens/s | GFLOP/s | MFU | vs reference |",
              "| --- | --- | --- | --- | --- | --- |"]
    for row in record.get("world_model_training", []):
        lines.append(f"| {row['precision']} | {row['batch']} | {row['tokens_per_s']:.0f} | {row['gflops']:.1f} "
                     f"| {row['mfu']:.1%} | {row['tokens_per_s'] / REFERENCE['wm_train_tokens_per_s']:.1f}x |")
    return "\n".join(lines) + "\n"


def _only_imagination(path: Path, steps: int) -> None:
    """Re-measure the imagination rows of an existing record (used while tuning that path)."""
    record = json.loads(path.read_text())
    record["imagination"] = imagination_throughput((1, 16, 64), steps)
    path.write_text(json.dumps(record, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", type=Path, default=Path("docs/benchmarks.json"))
    parser.add_argument("--markdown", type=Path, default=Path("docs/BENCHMARKS.md"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--store_steps", type=int, default=50_000)
    parser.add_argument("--imagination_steps", type=int, default=5, help="Imagined steps per timed rollout.")
    parser.add_argument("--only_imagination", action="store_true", help="Re-measure imagination rows only.")
    args = parser.parse_args()
    if args.only_imagination:
        _only_imagination(args.json, args.imagination_steps)
        args.markdown.write_text(markdown(json.loads(args.json.read_text())))
        return
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
    record["imagination"] = imagination_throughput((1, 16, 64), args.imagination_steps)
    record["world_model_training"] = world_model_training(args.batch, args.repeats, record["matmul_gflops"])
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=1))
    args.markdown.write_text(markdown(record))
    print(markdown(record))


if __name__ == "__main__":
    main()
