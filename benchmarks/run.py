"""Throughput benchmarks (`make bench`): writes a JSON record and a Markdown table.

Measured in one process, one after the other, so ratios within a run are comparable; absolute numbers move
with whatever else the (shared, 2-core) machine is doing. Each figure is the median of ``--repeats`` timed
runs after a warm-up run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from reference_design import GivenTokens, ReferenceImagination, ReferenceWorldModel

from iris_wm.data.store import EpisodeStore
from iris_wm.data.windows import WindowDataset
from iris_wm.envs.imagination import ImaginationConfig, ImaginationEnv
from iris_wm.runtime.hardware import cpu_description, cpu_has_native_bf16
from iris_wm.runtime.provenance import provenance
from sequence_model.world_model import WorldModel, WorldModelConfig
from tokenizer.model import Tokenizer, TokenizerConfig

# The reference IRIS implementation at its default sizes on the issue author's quiet 2-core machine, as
# quoted in issue 3. The side-by-side figures come from benchmarks/reference_design.py, measured in this run.
QUOTED = {
    "imagination_b1": 5.5,
    "imagination_b64": 37.0,
    "wm_train_tokens_per_s": 360.0,
    "wm_train_cached_tokens_per_s": 960.0,
    "tokenizer_encode_decode_b64": 16.0,
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
KEPT = "<!-- Below this line the file is written by hand; make bench keeps it. -->"
# Issue 3's targets: our figure over the reference's, at the same sizes on the same machine.
TARGETS = {
    "imagination_b1": 5.0,
    "imagination_b64": 4.0,
    "imagination_tokens_b64": 20.0,
    "wm_train": 10.0,
    "tokenizer": 4.0,
}

IRIS_WORLD_MODEL = dict(vocab_size=512, tokens_per_frame=16, num_actions=4)
"""The IRIS world model's data-linked sizes: the IRIS tokenizer's 512 codes and 16 tokens, Breakout's 4 actions."""


def demo_tokenizer() -> TokenizerConfig:
    """The demo tokenizer, read from configs/tokenizer/demo.yaml (so the benchmark times what the demo trains)."""
    import yaml

    path = Path(__file__).resolve().parents[1] / "configs" / "tokenizer" / "demo.yaml"
    return TokenizerConfig(**yaml.safe_load(path.read_text())["model"]["config"])


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
    for name in precisions():
        a, b = torch.randn(2048, 2048, dtype=DTYPES[name]), torch.randn(2048, 2048, dtype=DTYPES[name])
        out[name] = 2 * 2048**3 / timed(lambda: a @ b, repeats) / 1e9  # noqa: B023
    return out


def tokenizer_throughput(name: str, config: TokenizerConfig, batch: int, repeats: int) -> list[dict]:
    model = Tokenizer(config).eval()
    frames = torch.randint(0, 256, (batch, 3, config.resolution, config.resolution), dtype=torch.uint8)
    tokens = model.encode(frames)
    rows = []
    for precision in precisions():
        autocast = _autocast(precision)

        def run(fn, autocast=autocast):
            with torch.inference_mode(), autocast:
                fn()

        for op, fn in (
            ("encode", lambda: model.encode(frames)),
            ("decode", lambda: model.decode(tokens)),
            ("encode+decode", lambda: model.decode(model.encode(frames))),
        ):
            seconds = timed(lambda fn=fn: run(fn), repeats)
            rows.append(
                {"model": name, "op": op, "precision": precision, "batch": batch, "frames_per_s": batch / seconds}
            )
    return rows


def precisions() -> tuple[str, ...]:
    """fp32, and bf16 where the CPU has bf16 hardware: emulated bf16 ran a 2048^3 matmul at 0.17 GFLOP/s on an
    AVX2-only EPYC (docs/LOG.md), which would only time the emulation."""
    return ("fp32", "bf16") if cpu_has_native_bf16() else ("fp32",)


def _autocast(precision: str):
    return torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else nullcontext()


def imagination_throughput(batches: tuple[int, ...], steps: int) -> list[dict]:
    """Imagined env-steps/s at IRIS sizes, primed with one frame as IRIS, with and without decoding frames.

    When the context is full these rollouts re-prime with the last frame, as the reference does, so both do the
    same work; one more row at the largest batch uses the default sliding window (``context_steps - 1`` steps
    re-primed, a full pass over them, at every step once the context is full).
    bf16 here means bf16 weights (inference needs no fp32 master copy): autocast re-casts every weight at
    every op, which made batch-1 decoding slower than fp32 (docs/LOG.md)."""
    rows = []
    for precision in precisions():
        torch.manual_seed(0)
        wm = WorldModel(WorldModelConfig(**IRIS_WORLD_MODEL)).eval().to(DTYPES[precision])
        tok = Tokenizer(TokenizerConfig()).eval().to(DTYPES[precision])
        runs = [(batch, decode, 1) for batch in batches for decode in (False, True)] + [(max(batches), False, None)]
        for batch, decode, reprime in runs:
            env = ImaginationEnv(
                wm,
                tok,
                ImaginationConfig(temperature=1.0, reprime_steps=reprime),
                generator=torch.Generator().manual_seed(0),
            )
            first = torch.randint(0, 512, (batch, 1, 16))
            actions = torch.randint(0, 4, (steps, batch))

            def rollout(env=env, first=first, actions=actions, decode=decode):
                with torch.inference_mode():
                    env.reset(first)
                    for a in actions:
                        env.step(a)
                        if decode:
                            env.frames()

            seconds = timed(rollout, 2 if batch == 1 else 1)
            rows.append(
                {
                    "precision": precision,
                    "batch": batch,
                    "decode_frames": decode,
                    "reprime": "last frame" if reprime == 1 else "sliding window",
                    "env_steps_per_s": batch * steps / seconds,
                }
            )
    return rows


def reference_imagination(batches: tuple[int, ...], steps: int) -> list[dict]:
    """The reference design's imagined env-steps/s (fp32, a decoded frame every step), primed with one frame."""
    rows = []
    for batch in batches:
        torch.manual_seed(0)
        env = ReferenceImagination(ReferenceWorldModel(num_actions=4), Tokenizer(TokenizerConfig()))
        first, actions = torch.randint(0, 512, (batch, 16)), torch.randint(0, 4, (steps, batch))

        def rollout(env=env, first=first, actions=actions):
            env.reset(first)
            for a in actions:
                env.step(a)

        seconds = timed(rollout, 2 if batch == 1 else 1)
        rows.append(
            {
                "precision": "fp32",
                "batch": batch,
                "decode_frames": True,
                "reprime": "last frame",
                "env_steps_per_s": batch * steps / seconds,
            }
        )
    return rows


def reference_training(batch: int, repeats: int, peak: dict[str, float]) -> list[dict]:
    """The reference design's training tokens/s (fp32): frames re-tokenized in every batch, and, as the
    quoted 960 tokens/s, with the tokens given."""
    torch.manual_seed(0)
    wm = ReferenceWorldModel(num_actions=4).train()
    tok = Tokenizer(TokenizerConfig()).eval()
    optimizer = torch.optim.AdamW(wm.parameters(), lr=1e-4)
    frames = torch.randint(0, 256, (batch, 20, 3, 64, 64), dtype=torch.uint8)
    actions, rewards = torch.randint(0, 4, (batch, 20)), torch.zeros(batch, 20)
    ends = torch.zeros(batch, 20, dtype=torch.bool)
    tokens = tok.encode(frames.flatten(0, 1)).view(batch, 20, 16)
    flops = WorldModel(WorldModelConfig(**IRIS_WORLD_MODEL)).flops_per_token(training=True)
    rows = []
    for retokenize, inputs, tokenizer in ((True, frames, tok), (False, tokens, GivenTokens)):

        def train_step(inputs=inputs, tokenizer=tokenizer):
            wm.loss(tokenizer, inputs, actions, rewards, ends).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        tokens_per_s = batch * 20 * 17 / timed(train_step, repeats)
        achieved = tokens_per_s * flops / 1e9
        rows.append(
            {
                "precision": "fp32",
                "batch": batch,
                "retokenize": retokenize,
                "tokens_per_s": tokens_per_s,
                "gflops": achieved,
                "mfu": achieved / peak["fp32"],
            }
        )
    return rows


def world_model_training(batch: int, repeats: int, peak: dict[str, float]) -> list[dict]:
    """Training tokens/s of the IRIS-size world model on cached tokens, and its model FLOP utilisation."""
    rows = []
    obs, act = torch.randint(0, 512, (batch, 20, 16)), torch.randint(0, 4, (batch, 20))
    rewards, ends = torch.zeros(batch, 20), torch.zeros(batch, 20, dtype=torch.bool)
    mask = torch.ones(batch, 20, dtype=torch.bool)
    for precision in precisions():
        torch.manual_seed(0)
        wm = WorldModel(WorldModelConfig(**IRIS_WORLD_MODEL)).train()
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
        rows.append(
            {
                "precision": precision,
                "batch": batch,
                "tokens_per_s": tokens_per_s,
                "gflops": achieved,
                "mfu": achieved / peak[precision],
            }
        )
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
                batch.append(
                    Episode(
                        frames, rng.integers(0, 4, length), np.zeros(length, np.float32), ends, np.zeros(length, bool)
                    )
                )
            store.append(batch)
            written += 20 * length
        store = EpisodeStore.open(store.root, verify="size")
        for batch_size, horizon in ((64, 1), (64, 20)):
            dataset = WindowDataset(store, np.arange(store.num_episodes), horizon)
            draws = [rng.integers(0, len(dataset), batch_size) for _ in range(repeats + 1)]
            it = iter(draws)
            seconds = timed(lambda: dataset.__getitems__(next(it)), repeats)  # noqa: B023
            rows.append(
                {
                    "store_steps": store.num_steps,
                    "batch": batch_size,
                    "T": horizon,
                    "frames_per_s": batch_size * horizon / seconds,
                    "ms_per_batch": seconds * 1e3,
                }
            )
    return rows


def markdown(record: dict) -> str:
    peak = record["matmul_gflops"]
    lines = [
        "# Benchmarks",
        "",
        f"Machine: {record['machine']}. Command: `{record['command']}`. Date: {record['date']}.",
        f"Torch threads: {record['threads']}. Figures are medians of {record['repeats']} runs after a warm-up; "
        f"imagination rollouts: 2 at batch 1 and 1 above, reference-design training: {max(1, record['repeats'] // 2)}.",
        "",
        "Matmul peak in the same run (2048^3): "
        + ", ".join(f"{name} {value:.0f} GFLOP/s" for name, value in peak.items())
        + (
            "."
            if "bf16" in peak
            else "; no bf16 hardware (AVX512-BF16 or AMX), so no bf16 rows: emulated bf16 "
            "would only time the emulation."
        ),
        "",
        "## Tokenizer (inference, frames/s)",
        "",
        "| model | params | op | precision | batch | frames/s |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in record["tokenizer"]:
        params = record["tokenizer_params"][row["model"]]
        lines.append(
            f"| {row['model']} | {params / 1e6:.2f}M | {row['op']} | {row['precision']} | {row['batch']} "
            f"| {row['frames_per_s']:.1f} |"
        )
    lines += [
        "",
        "## Episode store: random windows (memory-mapped Arrow shards)",
        "",
        "| store steps | batch | T | frames/s | ms/batch |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in record["store"]:
        lines.append(
            f"| {row['store_steps']} | {row['batch']} | {row['T']} | {row['frames_per_s']:.0f} "
            f"| {row['ms_per_batch']:.2f} |"
        )
    lines += imagination_markdown(record) + training_markdown(record) + side_by_side(record)
    return "\n".join(lines) + "\n"


def imagination_markdown(record: dict) -> list[str]:
    lines = [
        "",
        f"## Imagination at IRIS sizes (world model 8.4M, tokenizer 4.0M; primed with one frame, "
        f"{record['imagination_steps']} imagined steps)",
        "",
        "bf16 rows use bf16 weights (no autocast). The reference design always decodes the frame.",
        "",
        "| implementation | precision | batch | policy reads | context full: re-prime with | env-steps/s |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, key in (("iris-wm", "imagination"), ("reference design", "reference_imagination")):
        for row in record.get(key, []):
            reads = "decoded frames" if row["decode_frames"] else "tokens"
            lines.append(
                f"| {name} | {row['precision']} | {row['batch']} | {reads} | "
                f"{row.get('reprime', 'last frame')} | {row['env_steps_per_s']:.1f} |"
            )
    return lines


def training_markdown(record: dict) -> list[str]:
    peak = record["matmul_gflops"]
    lines = [
        "",
        "## World-model training at IRIS size (batch of 20-step windows)",
        "",
        "MFU: model FLOPs (WorldModel.flops_per_token, forward + backward) over the matmul peak of the same "
        "precision. The reference design re-tokenizes the frames of every batch; iris-wm reads the token "
        "cache.",
        "",
        "| implementation | precision | batch | tokens from | tokens/s | GFLOP/s | MFU |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    rows = [("iris-wm", row, "cache") for row in record.get("world_model_training", [])]
    rows += [
        ("reference design", row, "frames, encoded again" if row["retokenize"] else "given")
        for row in record.get("reference_training", [])
    ]
    for name, row, source in rows:
        mfu = f"{row['gflops'] / peak[row['precision']]:.1%}" if row["precision"] in peak else ""
        lines.append(
            f"| {name} | {row['precision']} | {row['batch']} | {source} | {row['tokens_per_s']:.0f} "
            f"| {row['gflops']:.1f} | {mfu} |"
        )
    return lines


def ratios(record: dict) -> list[dict]:
    """Issue 3's targets, each as our best figure over the reference design's, both measured in this run."""
    ours = {
        (r["precision"], r["batch"], r["decode_frames"]): r["env_steps_per_s"]
        for r in record["imagination"]
        if r.get("reprime", "last frame") == "last frame"
    }  # the same work as the reference
    ref = {r["batch"]: r["env_steps_per_s"] for r in record["reference_imagination"]}
    train = {r["precision"]: r["tokens_per_s"] for r in record["world_model_training"]}
    ref_train = {r["retokenize"]: r["tokens_per_s"] for r in record["reference_training"]}
    tok = {
        r["precision"]: r["frames_per_s"]
        for r in record["tokenizer"]
        if r["model"].startswith("iris") and r["op"] == "encode+decode"
    }

    def best(batch, decode):
        return max((v, p) for (p, b, d), v in ours.items() if b == batch and d == decode)

    out = []
    for what, key, (value, precision), reference in (
        ("imagination, batch 1, decoded frames", "imagination_b1", best(1, True), ref[1]),
        ("imagination, batch 64, decoded frames", "imagination_b64", best(64, True), ref[64]),
        ("imagination, batch 64, policy reads tokens", "imagination_tokens_b64", best(64, False), ref[64]),
        ("world-model training, tokens/s", "wm_train", max((v, p) for p, v in train.items()), ref_train[True]),
        (
            "tokenizer encode+decode, batch 64 (the same network in both)",
            "tokenizer",
            max((v, p) for p, v in tok.items()),
            tok["fp32"],
        ),
    ):
        out.append(
            {
                "what": what,
                "ours": value,
                "precision": precision,
                "reference": reference,
                "ratio": value / reference,
                "target": TARGETS[key],
            }
        )
    return out


def side_by_side(record: dict) -> list[str]:
    lines = [
        "",
        "## Side by side with the reference design (issue 3's targets)",
        "",
        "Both measured in this run on this machine; the reference design is benchmarks/reference_design.py "
        "(fp32, as the reference runs). Quoted in issue 3 for the reference on its author's machine: "
        f"{QUOTED['imagination_b1']} / {QUOTED['imagination_b64']} env-steps/s at batch 1 / 64, "
        f"{QUOTED['wm_train_tokens_per_s']:.0f} training tokens/s ({QUOTED['wm_train_cached_tokens_per_s']:.0f} "
        f"without re-tokenization), {QUOTED['tokenizer_encode_decode_b64']:.0f} tokenizer frames/s.",
        "",
        "| figure | iris-wm (precision) | reference design | ratio | target |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in record["ratios"]:
        lines.append(
            f"| {row['what']} | {row['ours']:.1f} ({row['precision']}) | {row['reference']:.1f} "
            f"| {row['ratio']:.2f}x | {row['target']:.0f}x |"
        )
    return lines


def write_markdown(path: Path, generated: str) -> None:
    """Write the generated tables, keeping the hand-written part of an existing file (after ``KEPT``)."""
    old = path.read_text() if path.exists() else ""
    kept = old[old.index(KEPT) :] if KEPT in old else KEPT + "\n"
    path.write_text(generated + "\n" + kept)


def measure_imagination(record: dict, steps: int) -> None:
    """Our imagination rows and the reference design's, measured one after the other into ``record``."""
    record["imagination_steps"] = steps
    record["imagination"] = imagination_throughput((1, 16, 64), steps)
    record["reference_imagination"] = reference_imagination((1, 16, 64), steps)


def _only_imagination(path: Path, steps: int) -> None:
    """Re-measure the imagination rows, ours and the reference design's, of an existing record."""
    record = json.loads(path.read_text())
    measure_imagination(record, steps)
    record["ratios"] = ratios(record)
    path.write_text(json.dumps(record, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", type=Path, default=Path("docs/benchmarks.json"))
    parser.add_argument("--markdown", type=Path, default=Path("docs/BENCHMARKS.md"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--store_steps", type=int, default=50_000)
    parser.add_argument(
        "--imagination_steps", type=int, default=20, help="Imagined steps per timed rollout (issue 3: horizon 20)."
    )
    parser.add_argument("--only_imagination", action="store_true", help="Re-measure imagination rows only.")
    args = parser.parse_args()
    if args.only_imagination:
        _only_imagination(args.json, args.imagination_steps)
        write_markdown(args.markdown, markdown(json.loads(args.json.read_text())))
        return
    torch.manual_seed(0)
    configs = {"iris (4.0M)": TokenizerConfig(), "demo": demo_tokenizer()}
    record = {
        "command": "make bench",
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{cpu_description()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "provenance": provenance(),
        "matmul_gflops": matmul_peak(args.repeats),
        "tokenizer_params": {k: sum(p.numel() for p in Tokenizer(c).parameters()) for k, c in configs.items()},
        "tokenizer": [
            row for name, cfg in configs.items() for row in tokenizer_throughput(name, cfg, args.batch, args.repeats)
        ],
        "store": store_sampling(args.store_steps, args.repeats * 4),
    }
    measure_imagination(record, args.imagination_steps)
    record["world_model_training"] = world_model_training(args.batch, args.repeats, record["matmul_gflops"])
    record["reference_training"] = reference_training(args.batch, max(1, args.repeats // 2), record["matmul_gflops"])
    record["ratios"] = ratios(record)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=1))
    write_markdown(args.markdown, markdown(record))
    print(markdown(record))


if __name__ == "__main__":
    main()
