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

import imagination
import numpy as np
import torch
from reference_design import GivenTokens, ReferenceWorldModel

from iris_wm.data.store import EpisodeStore
from iris_wm.data.windows import WindowDataset
from iris_wm.envs.imagination import InferenceCopy
from iris_wm.runtime.hardware import cpu_description, cpu_has_native_bf16
from iris_wm.runtime.provenance import provenance
from sequence_model.gpt import GPTConfig
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
# Issues 3 and 16: our figure over the reference's, at the same sizes on the same machine.
TARGETS = {
    "imagination_b1": 5.0,
    "imagination_b64": 4.0,
    "imagination_tokens_b64": 20.0,
    "wm_train": 10.0,
    "tokenizer": 4.0,
    "agent_step": 10.0,
}
IRIS_WORLD_MODEL = imagination.IRIS_WORLD_MODEL
TRAINING_VARIANTS = {
    "IRIS dropout (0.1 everywhere)": GPTConfig(dropout=0.1),
    "no attention dropout": GPTConfig(dropout=0.1, attention_dropout=0.0),
    "no dropout": GPTConfig(dropout=0.0),
}
"""World-model training rows: attention dropout sends CPU attention to its unfused path (docs/LOG.md)."""


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
    """Frames/s of encoding and decoding: fp32, and bf16 the way imagination runs it (a bf16, channels-last copy of
    the weights; decoding in chunks of ``DECODE_CHUNK`` frames on a CPU, as ``Tokenizer.decode`` always does)."""
    base = Tokenizer(config).eval()
    frames = torch.randint(0, 256, (batch, 3, config.resolution, config.resolution), dtype=torch.uint8)
    tokens = base.encode(frames)
    rows = []
    for precision in precisions():
        model = InferenceCopy(base, DTYPES[precision], channels_last=precision == "bf16").model
        for op, fn in (
            ("encode", lambda model=model: model.encode(frames)),
            ("decode", lambda model=model: model.decode(tokens)),
            ("encode+decode", lambda model=model: model.decode(model.encode(frames))),
        ):
            seconds = timed(lambda fn=fn: _inference(fn), repeats)
            rows.append(
                {"model": name, "op": op, "precision": precision, "batch": batch, "frames_per_s": batch / seconds}
            )
    return rows


def _inference(fn):
    with torch.inference_mode():
        return fn()


def precisions() -> tuple[str, ...]:
    """fp32, and bf16 where the CPU has bf16 hardware: emulated bf16 ran a 2048^3 matmul at 0.17 GFLOP/s on an
    AVX2-only EPYC (docs/LOG.md), which would only time the emulation."""
    return ("fp32", "bf16") if cpu_has_native_bf16() else ("fp32",)


def _autocast(precision: str):
    return torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else nullcontext()


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
    """Training tokens/s of the IRIS-size world model on cached tokens (both prediction modes, the dropout variants),
    and its model FLOP utilisation."""
    rows = []
    obs, act = torch.randint(0, 512, (batch, 20, 16)), torch.randint(0, 4, (batch, 20))
    rewards, ends = torch.zeros(batch, 20), torch.zeros(batch, 20, dtype=torch.bool)
    mask = torch.ones(batch, 20, dtype=torch.bool)
    for precision in precisions():
        for mode in imagination.MODES:
            for variant, gpt in TRAINING_VARIANTS.items():
                torch.manual_seed(0)
                wm = WorldModel(WorldModelConfig(**IRIS_WORLD_MODEL, prediction=mode, gpt=gpt)).train()
                optimizer = torch.optim.AdamW(wm.parameters(), lr=1e-4)

                def train_step(wm=wm, optimizer=optimizer, precision=precision):
                    with _autocast(precision):
                        loss = wm.loss(obs, act, rewards, ends, mask)
                    loss.total.backward()
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)

                tokens_per_s = batch * 20 * 17 / timed(train_step, repeats)
                achieved = tokens_per_s * wm.flops_per_token(training=True) / 1e9
                rows.append(
                    {
                        "precision": precision,
                        "prediction": mode,
                        "variant": variant,
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
    lines += imagination.markdown(record) + training_markdown(record) + side_by_side(record)
    return "\n".join(lines) + "\n"


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
        "| implementation | prediction | dropout | precision | batch | tokens from | tokens/s | GFLOP/s | MFU |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    rows = [("iris-wm", row, "cache") for row in record.get("world_model_training", [])]
    rows += [
        ("reference design", row, "frames, encoded again" if row["retokenize"] else "given")
        for row in record.get("reference_training", [])
    ]
    for name, row, source in rows:
        mfu = f"{row['gflops'] / peak[row['precision']]:.1%}" if row["precision"] in peak else ""
        mode, variant = row.get("prediction", "autoregressive"), row.get("variant", "IRIS dropout (0.1 everywhere)")
        lines.append(
            f"| {name} | {mode} | {variant} | {row['precision']} | {row['batch']} | {source} "
            f"| {row['tokens_per_s']:.0f} | {row['gflops']:.1f} | {mfu} |"
        )
    return lines


def ratios(record: dict) -> list[dict]:
    """The targets of issues 3 and 16, each as our best figure over the reference design's, both measured in this
    run."""
    ours = {}
    for r in record["imagination"]:
        key = (r["batch"], r["decode_frames"])
        ours[key] = max(ours.get(key, (0.0, "")), (r["env_steps_per_s"], f"{r['prediction']}, {r['precision']}"))
    ref = {r["batch"]: r["env_steps_per_s"] for r in record["reference_imagination"]}
    ref_train = {r["retokenize"]: r["tokens_per_s"] for r in record["reference_training"]}
    train = max((r["tokens_per_s"], f"{r['prediction']}, {r['variant']}, {r['precision']}")
                for r in record["world_model_training"])  # fmt: skip
    tok = {
        r["precision"]: r["frames_per_s"]
        for r in record["tokenizer"]
        if r["model"].startswith("iris") and r["op"] == "encode+decode"
    }
    rows = [
        ("imagination, batch 1, decoded frames", "imagination_b1", ours[(1, True)], ref[1]),
        ("imagination, batch 64, decoded frames", "imagination_b64", ours[(64, True)], ref[64]),
        ("imagination, batch 64, policy reads tokens", "imagination_tokens_b64", ours[(64, False)], ref[64]),
        ("world-model training, tokens/s", "wm_train", train, ref_train[True]),
        (
            "tokenizer encode+decode, batch 64 (the same network in both)",
            "tokenizer",
            max((v, p) for p, v in tok.items()),
            tok["fp32"],
        ),
    ]
    reference_agent = {r["batch"]: r["steps_per_s"] for r in record["reference_agent_step"]}
    for batch, theirs in reference_agent.items():
        best = max((r["steps_per_s"], f"{r['observation']}, {r['prediction']}, {r['precision']}")
                   for r in record["agent_step"] if r["batch"] == batch)  # fmt: skip
        rows.append((f"actor-critic training step, batch {batch}", "agent_step", best, theirs))
    return [
        {
            "what": what,
            "ours": value,
            "precision": how,
            "reference": reference,
            "ratio": value / reference,
            "target": TARGETS[key],
        }
        for what, key, (value, how), reference in rows
    ]


def side_by_side(record: dict) -> list[str]:
    lines = [
        "",
        "## Side by side with the reference design (the targets of issues 3 and 16)",
        "",
        "Both measured in this run on this machine; the reference design is benchmarks/reference_design.py "
        "(fp32, as the reference runs). Quoted in issue 3 for the reference on its author's machine: "
        f"{QUOTED['imagination_b1']} / {QUOTED['imagination_b64']} env-steps/s at batch 1 / 64, "
        f"{QUOTED['wm_train_tokens_per_s']:.0f} training tokens/s ({QUOTED['wm_train_cached_tokens_per_s']:.0f} "
        f"without re-tokenization), {QUOTED['tokenizer_encode_decode_b64']:.0f} tokenizer frames/s.",
        "",
        "| figure | iris-wm (how) | reference design | ratio | target |",
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
    args = parser.parse_args()
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
        "imagination_steps": args.imagination_steps,
    }
    peak = record["matmul_gflops"]
    record["imagination"] = imagination.imagination_rows(
        (1, 64, 1024), args.imagination_steps, precisions(), peak, timed
    )
    record["reference_imagination"] = imagination.reference_rows((1, 64), args.imagination_steps, timed)
    record["agent_step"], record["reference_agent_step"] = imagination.agent_rows((16, 64), precisions(), timed)
    record["world_model_training"] = world_model_training(args.batch, args.repeats, peak)
    record["reference_training"] = reference_training(args.batch, max(1, args.repeats // 2), peak)
    record["ratios"] = ratios(record)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=1))
    write_markdown(args.markdown, markdown(record))
    print(markdown(record))


if __name__ == "__main__":
    main()
