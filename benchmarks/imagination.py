"""Imagination and the agent's training step at IRIS sizes, ours and the reference design's (issues 3 and 16).

Our rows cover both prediction modes (autoregressive: ``K`` passes a step; parallel: one), fp32 and, where the
CPU has bf16 hardware, bf16 weights (``ImaginationConfig.precision``), with the policy reading tokens or decoded
frames. Every rollout is primed with one frame and re-primes with the last frame when the context is full, as the
reference does, so both do the same work. GFLOP/s counts the world model's forward FLOPs of the ``K + 1`` tokens an
imagined step feeds (``WorldModel.flops_per_token``, attention at full context), against the matmul peak of the
precision used.
"""

from __future__ import annotations

import torch
from agent_step import ours as agent_step
from agent_step import reference as reference_agent_step
from reference_design import ReferenceImagination, ReferenceWorldModel

from iris_wm.envs.imagination import ImaginationConfig, ImaginationEnv
from sequence_model.world_model import WorldModel, WorldModelConfig
from tokenizer.model import Tokenizer, TokenizerConfig

IRIS_WORLD_MODEL = dict(vocab_size=512, tokens_per_frame=16, num_actions=4)
"""The IRIS world model's data-linked sizes: the IRIS tokenizer's 512 codes and 16 tokens, Breakout's 4 actions."""
MODES = ("autoregressive", "parallel")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def imagination_rows(batches: tuple[int, ...], steps: int, precisions, peak: dict, timed) -> list[dict]:
    """Our imagined env-steps/s for every prediction mode, precision, batch and what the policy reads."""
    rows = []
    for mode in MODES:
        torch.manual_seed(0)
        wm = WorldModel(WorldModelConfig(**IRIS_WORLD_MODEL, prediction=mode)).eval()
        tok = Tokenizer(TokenizerConfig()).eval()
        flops = (wm.config.tokens_per_frame + 1) * wm.flops_per_token(training=False)
        for precision in precisions:
            for batch in batches:
                for decode in (False, True) if batch <= 64 else (False,):  # decoding 1,024 frames a step: minutes
                    config = ImaginationConfig(temperature=1.0, reprime_steps=1, precision=precision)
                    env = ImaginationEnv(wm, tok, config, generator=torch.Generator().manual_seed(0))
                    seconds = timed(_rollout(env, batch, steps, decode), 2 if batch == 1 else 1)
                    rate = batch * steps / seconds
                    rows.append(
                        {
                            "prediction": mode,
                            "precision": precision,
                            "batch": batch,
                            "decode_frames": decode,
                            "env_steps_per_s": rate,
                            "gflops": rate * flops / 1e9,
                            "fraction_of_peak": rate * flops / 1e9 / peak[precision],
                        }
                    )
    return rows


def _rollout(env, batch: int, steps: int, decode: bool):
    first = torch.randint(0, 512, (batch, 1, 16))
    actions = torch.randint(0, 4, (steps, batch))

    def rollout():
        with torch.inference_mode():
            env.reset(first)
            for a in actions:
                env.step(a)
                if decode:
                    env.frames()

    return rollout


def reference_rows(batches: tuple[int, ...], steps: int, timed) -> list[dict]:
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
        rows.append({"batch": batch, "env_steps_per_s": batch * steps / seconds})
    return rows


def agent_rows(batches: tuple[int, ...], precisions, timed) -> tuple[list[dict], list[dict]]:
    """Imagined steps/s of a full actor-critic training step: ours (each policy input, prediction mode, and the
    fastest precision) and the reference design's."""
    precision = "bf16" if "bf16" in precisions else "fp32"
    ours = [
        {**agent_step(batch, observation, mode, precision, timed, 1), "precision": precision}
        for batch in batches
        for observation in ("tokens", "frames")
        for mode in MODES
    ]
    return ours, [reference_agent_step(batch, timed, 1) for batch in batches]


def markdown(record: dict) -> list[str]:
    lines = [
        "",
        f"## Imagination at IRIS sizes (world model 8.4M, tokenizer 4.0M; primed with one frame, "
        f"{record['imagination_steps']} imagined steps, re-primed with the last frame when the context is full)",
        "",
        "bf16 rows imagine with bf16 copies of the weights (`ImaginationConfig.precision`). GFLOP/s: the world "
        "model's forward FLOPs of the 17 tokens fed per imagined step; the fraction is of the matmul peak of that "
        "precision, measured in the same run. The reference design always decodes the frame (fp32).",
        "",
        "| implementation | prediction | precision | batch | policy reads | env-steps/s | GFLOP/s | of peak |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in record["imagination"]:
        reads = "decoded frames" if row["decode_frames"] else "tokens"
        lines.append(
            f"| iris-wm | {row['prediction']} | {row['precision']} | {row['batch']} | {reads} "
            f"| {row['env_steps_per_s']:.1f} | {row['gflops']:.1f} | {row['fraction_of_peak']:.1%} |"
        )
    for row in record["reference_imagination"]:
        lines.append(
            f"| reference design | autoregressive | fp32 | {row['batch']} | decoded frames "
            f"| {row['env_steps_per_s']:.1f} | | |"
        )
    lines += [
        "",
        "## The actor-critic's training step in imagination (IRIS sizes: burn-in 20, horizon 20)",
        "",
        "Imagined steps/s of one whole step: burn-in, priming, 20 imagined steps with the policy acting, "
        "lambda-returns, backward and the optimiser step (benchmarks/agent_step.py). The reference design decodes a "
        "frame every step, takes K + 1 passes and reads rewards and ends back to the host.",
        "",
        "| implementation | policy reads | prediction | precision | batch | imagined steps/s |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in record["agent_step"]:
        lines.append(
            f"| iris-wm | {row['observation']} | {row['prediction']} | {row['precision']} | {row['batch']} "
            f"| {row['steps_per_s']:.1f} |"
        )
    for row in record["reference_agent_step"]:
        lines.append(
            f"| reference design | frames | autoregressive | fp32 | {row['batch']} | {row['steps_per_s']:.1f} |"
        )
    return lines
