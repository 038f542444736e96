"""Milliseconds per planning decision (issue 18): one real step of model-predictive control, the frame encoded, the
actor's prior sequences drawn in imagination, ``iterations`` rounds of ``N`` sequences of horizon 5 scored in one
batched imagination each with the critic's value at the horizon, for the demo's Breakout world model and the
IRIS-size one (random weights: the cost does not depend on them), at N = 64 / 256 / 512; and an imagined step of
an ensemble of M demo world models against M single steps.

    python benchmarks/planning.py --json docs/planning.json --markdown docs/PLANNING.md   (make bench-planning)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
import yaml

from iris_wm.agent.actor_critic import ActorCritic, ActorCriticConfig
from iris_wm.agent.mpc import MPCPolicy
from iris_wm.agent.planning import PlannerConfig
from iris_wm.data.spaces import ActionSpace
from iris_wm.envs.imagination import ImaginationConfig, ImaginationEnv
from iris_wm.runtime.hardware import cpu_description, inference_dtype
from iris_wm.runtime.provenance import provenance
from sequence_model.ensemble import WorldModelEnsemble
from sequence_model.gpt import GPTConfig
from sequence_model.world_model import WorldModel, WorldModelConfig
from tokenizer.model import Tokenizer, TokenizerConfig

ROOT = Path(__file__).resolve().parents[1]
HORIZON = 5


def _config(path: str) -> dict:
    return yaml.safe_load((ROOT / path).read_text())["model"]["config"]


def models(name: str, device: str = "cpu"):
    """The tokenizer, world model and actor-critic of ``demo`` (configs/*/demo.yaml) or ``iris`` (IRIS's sizes), on
    ``device``."""
    torch.manual_seed(0)
    if name == "demo":
        tokenizer = Tokenizer(TokenizerConfig(**_config("configs/tokenizer/demo.yaml")))
        wm_config = _config("configs/world_model/demo.yaml")
        gpt = GPTConfig(**wm_config.pop("gpt"))
        ac_config = _config("configs/agent/demo.yaml")
    else:
        tokenizer, gpt, wm_config, ac_config = Tokenizer(TokenizerConfig()), GPTConfig(), {}, {"observation": "tokens"}
    K, V = tokenizer.config.tokens_per_frame, tokenizer.config.vocab_size
    world_model = WorldModel(WorldModelConfig(vocab_size=V, tokens_per_frame=K, num_actions=4, gpt=gpt, **wm_config))
    actor_critic = ActorCritic(ActorCriticConfig(num_actions=4, vocab_size=V, tokens_per_frame=K, **ac_config))
    return tokenizer.to(device).eval(), world_model.to(device).eval(), actor_critic.to(device).eval()


def _synchronize(device: str) -> None:
    """Wait for the device's queued work, so that a timer read after it times the work (a no-op on a CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def decision_ms(name: str, samples: int, envs: int, repeats: int, device: str = "cpu") -> dict:
    tokenizer, world_model, actor_critic = models(name, device)
    config = PlannerConfig(samples=samples, elites=min(64, samples), horizon=HORIZON)  # TD-MPC2's other defaults
    policy = MPCPolicy(tokenizer, world_model, config, torch.Generator(device).manual_seed(0), actor_critic)
    policy.bind(ActionSpace.discrete(4))
    frames = torch.randint(0, 256, (envs, 3, 64, 64), dtype=torch.uint8)
    new = torch.zeros(envs, dtype=torch.bool)
    policy.act(frames, ~new)  # warm-up (and the bf16 copies)
    times = []
    for _ in range(repeats):
        _synchronize(device)
        start = time.perf_counter()
        policy.act(frames, new)
        _synchronize(device)
        times.append(time.perf_counter() - start)
    ms = 1000 * statistics.median(times)
    imagined = envs * (config.prior_samples + config.iterations * samples) * HORIZON
    return {
        "model": name,
        "tokens_per_frame": world_model.config.tokens_per_frame,
        "parameters": sum(p.numel() for p in world_model.parameters()),
        "samples": samples,
        "envs": envs,
        "horizon": HORIZON,
        "iterations": config.iterations,
        "prior_samples": config.prior_samples,
        "ms_per_decision": ms,
        "imagined_steps_per_s": imagined / (ms / 1000),
    }


def ensemble_step_ms(members: int, batch: int, repeats: int, device: str = "cpu") -> dict:
    """Milliseconds of one imagined step (batch ``batch``, greedy) of the demo world model alone and of an ensemble of
    ``members`` of them: the issue's bound is ``members * 1.5`` single steps."""
    _, world_model, _ = models("demo", device)
    others = (WorldModel(world_model.config) for _ in range(members - 1))  # weights do not change the cost
    ensemble = WorldModelEnsemble([world_model, *others]).to(device).eval()
    shape = (batch, 1, world_model.config.tokens_per_frame)
    tokens = torch.randint(0, world_model.config.vocab_size, shape, device=device)
    actions = torch.zeros(batch, dtype=torch.long, device=device)
    ms = {}
    for name, model in (("single", world_model), ("ensemble", ensemble)):
        env = ImaginationEnv(model, config=ImaginationConfig(temperature=0.0))
        times = []
        for _ in range(repeats + 1):
            env.reset(tokens)
            _synchronize(device)
            start = time.perf_counter()
            for _ in range(4):
                env.step(actions)
            _synchronize(device)
            times.append((time.perf_counter() - start) / 4)
        ms[name] = 1000 * statistics.median(times[1:])
    return {"members": members, "batch": batch, **{f"{k}_ms": v for k, v in ms.items()},
            "ratio_to_members": ms["ensemble"] / (members * ms["single"])}  # fmt: skip


def markdown(record: dict) -> str:
    lines = [
        "# Planning decision time (issue 18)",
        "",
        f"`{record['command']}`, {record['date']}, {record['machine']}, imagination in {record['dtype']}.",
        "",
        "One decision: the frame encoded, the actor's 24 prior sequences imagined, 6 iterations of N sequences of "
        "horizon 5 scored in one batched imagination each, with the critic read along (TD-MPC2's defaults, elites "
        "min(64, N)).",
        "",
        "| world model | N | environments | ms per decision | imagined steps/s |",
        "|---|---|---|---|---|",
    ]
    for row in record["rows"]:
        size = f"{row['model']} ({row['parameters'] / 1e6:.1f}M, K={row['tokens_per_frame']})"
        lines.append(
            f"| {size} | {row['samples']} | {row['envs']} | {row['ms_per_decision']:.0f} | "
            f"{row['imagined_steps_per_s']:,.0f} |"
        )
    lines += [
        "",
        "An imagined step of an ensemble of M demo world models against M single steps (batch, greedy; the issue's "
        "bound: a ratio of at most 1.5):",
        "",
        "| M | batch | single step (ms) | ensemble step (ms) | ensemble / (M x single) |",
        "|---|---|---|---|---|",
    ]
    for row in record["ensemble"]:
        lines.append(
            f"| {row['members']} | {row['batch']} | {row['single_ms']:.1f} | {row['ensemble_ms']:.1f} | "
            f"{row['ratio_to_members']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, default=ROOT / "docs/planning.json")
    parser.add_argument("--markdown", type=Path, default=ROOT / "docs/PLANNING.md")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--samples", type=int, nargs="+", default=[64, 256, 512])
    parser.add_argument("--envs", type=int, nargs="+", default=[1], help="Environments planned for at once.")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda for a GPU.")
    args = parser.parse_args()
    device = args.device
    grid = [(name, n, e) for name in ("demo", "iris") for e in args.envs for n in args.samples]
    rows = [decision_ms(name, n, e, args.repeats, device) for name, n, e in grid]
    machine = f"{cpu_description()}, {os.cpu_count()} cores"
    if torch.device(device).type == "cuda":
        machine = f"{torch.cuda.get_device_name(device)} (host: {machine})"
    record = {
        "command": "make bench-planning" if device == "cpu" else "python benchmarks/planning.py --device " + device,
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{machine}, torch {torch.__version__}",
        "dtype": str(inference_dtype(ImaginationConfig().precision, torch.device(device))).removeprefix("torch."),
        "provenance": provenance(),
        "rows": rows,
        "ensemble": [ensemble_step_ms(m, b, args.repeats, device) for m in (3, 5) for b in (1, 64)],
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=1))
    args.markdown.write_text(markdown(record))
    print(markdown(record))


if __name__ == "__main__":
    main()
