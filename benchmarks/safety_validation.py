"""The safety check against reality (issue 18, part 3), after `make demo`.

Real evaluation episodes of the demo agent are played; every ``--every`` steps the emulator is snapshotted with the
last ``burn_in`` frames' tokens and the actions between: a start. From each start the policy acts ``R`` times for
``H`` steps both in the restored emulator and in imagination (:func:`iris_wm.evaluate.safety.imagined_rollouts`,
the same burn-in of the actor-critic from the same real frames, the same temperature). Unsafe is a lost life (or
the game's end) within the horizon, which the world model learned as an end. Figures: the AUROC of the imagined
probability of a start as a score of each real run's outcome, and the imagined policy-level rate against the real
rate's 95% interval (a bootstrap over starts); with an ensemble (``--world_model``), both again over the starts the
unknown gate keeps. Each figure twice from the same imagined rollouts: ``all`` scores a rollout by its chance of an
end along its trajectory (the safety check's default, ``expected_ends``), ``all_sampled`` by its sampled end.

    python benchmarks/safety_validation.py --demo runs/demo --json docs/safety_validation.json
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from iris_wm.agent.rollout import burn_in
from iris_wm.envs.atari import EnvConfig, env_snapshot, make_env, restore_env
from iris_wm.evaluate.safety import SafetyConfig, imagined_rollouts, summarize_starts, unknown_threshold
from iris_wm.evaluate.uncertainty import auroc
from iris_wm.hub.checkpoints import load_agent, load_model
from iris_wm.runtime.provenance import provenance


@torch.no_grad()
def collect_starts(agent, count: int, every: int, burn_in: int, temperature: float, seed: int) -> list[dict]:
    """Snapshots of real evaluation episodes every ``every`` steps, with the last ``burn_in`` frames' tokens."""
    env, policy = make_env(EnvConfig.evaluation()), agent.policy(temperature, 0.0, torch.Generator().manual_seed(seed))
    starts, episode = [], 0
    while len(starts) < count:
        frame, _ = env.reset(seed=seed + episode)
        tokens, actions, new, done, t = [], [], True, False, 0
        while not done and len(starts) < count:
            tokens.append(agent.tokenizer.encode(torch.from_numpy(frame[None]))[0])
            if t >= burn_in - 1 and t % every == 0:
                starts.append(
                    {
                        "snapshot": env_snapshot(env),
                        "tokens": torch.stack(tokens[-burn_in:]),
                        "actions": torch.tensor(actions[-(burn_in - 1) :] if burn_in > 1 else [], dtype=torch.long),
                        "lives": env.unwrapped.ale.lives(),
                    }  # fmt: skip
                )
            action = int(policy.act(frame[None], np.array([new]))[0])
            frame, _, terminated, truncated, _ = env.step(action)
            actions.append(action)
            new, done, t = False, terminated or truncated, t + 1
        episode += 1
    return starts


@torch.no_grad()
def real_runs(agent, starts: list[dict], config: SafetyConfig, seed: int) -> np.ndarray:
    """``(S, R)``: whether each real run from each start lost a life within the horizon."""
    R, ac, tokenizer = config.rollouts, agent.actor_critic, agent.tokenizer
    envs = [make_env(EnvConfig.evaluation()) for _ in range(R)]
    for env in envs:
        env.reset(seed=0)
    generator = torch.Generator().manual_seed(seed)
    outcome = np.zeros((len(starts), R), bool)
    for s, start in enumerate(starts):
        for env in envs:
            restore_env(env, start["snapshot"])
        state = burn_in(ac, start["tokens"][None, :-1].repeat(R, 1, 1))
        current = start["tokens"][-1].repeat(R, 1)
        alive = np.ones(R, bool)
        for _ in range(config.horizon):
            out = ac(current, state)
            policy = ac.policy(out.logits)
            chosen = policy.to_env(policy.sample(generator, config.temperature)).tolist()
            frames = []
            for r, env in enumerate(envs):
                frame, _, terminated, truncated, _ = env.step(int(chosen[r]))
                if alive[r] and (terminated or env.unwrapped.ale.lives() < start["lives"]):
                    outcome[s, r], alive[r] = True, False
                frames.append(frame)
            state, current = out.state, tokenizer.encode(torch.from_numpy(np.stack(frames)))
    return outcome


def figures(imagined: np.ndarray, real: np.ndarray, keep: np.ndarray, seed: int) -> dict:
    S, R = real.shape
    p = imagined.mean(1)[keep]
    outcomes, scores = real[keep].ravel(), np.repeat(p, R)
    # The ceiling a start-level score can reach: each real run scored by the other R - 1 real runs of its start.
    others = (real[keep].sum(1, keepdims=True) - real[keep]) / (R - 1)
    ceiling = others.ravel()
    rng = np.random.default_rng(seed)
    rates = real[keep].mean(1)
    means = rates[rng.integers(0, len(rates), (2000, len(rates)))].mean(1)
    low, high = np.quantile(means, [0.025, 0.975])
    return {
        "starts": int(keep.sum()),
        "auroc": auroc(scores[~outcomes], scores[outcomes]) if 0 < outcomes.sum() < len(outcomes) else None,
        "auroc_real_others": auroc(ceiling[~outcomes], ceiling[outcomes])
        if 0 < outcomes.sum() < len(outcomes)
        else None,
        "imagined_rate": float(p.mean()),
        "real_rate": float(rates.mean()),
        "real_rate_95": [float(low), float(high)],
        "imagined_inside": bool(low <= p.mean() <= high),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", type=Path, default=Path("runs/demo"))
    parser.add_argument("--agent", type=Path, default=None, help="Default: the demo's, agent/checkpoints/last.ckpt.")
    parser.add_argument("--world_model", type=str, default=None, help="Imagine in this model (an ensemble folder).")
    parser.add_argument("--json", type=Path, default=Path("docs/safety_validation.json"))
    parser.add_argument("--starts", type=int, default=200)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--horizon", type=int, default=20)
    parser.add_argument("--rollouts", type=int, default=8, help="Real runs per start.")
    parser.add_argument(
        "--imagined_rollouts", type=int, nargs="+", default=None,
        help="Imagined runs per start (--rollouts); several: the figures of each, against the same real runs.",
    )  # fmt: skip
    parser.add_argument("--device", default="cpu", help="Where the imagination runs (cuda: a GPU); real runs: CPU.")
    parser.add_argument("--temperature", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=5000)
    args = parser.parse_args()
    begin = time.perf_counter()
    agent = load_agent(args.agent or args.demo / "agent" / "checkpoints" / "last.ckpt")
    model = load_model(args.world_model, "world_model") if args.world_model else agent.world_model
    config = SafetyConfig(horizon=args.horizon, rollouts=args.rollouts, temperature=args.temperature, burn_in=4)
    starts = collect_starts(agent, args.starts, args.every, config.burn_in, args.temperature, args.seed)
    real = real_runs(agent, starts, config, args.seed)
    tokens = torch.stack([s["tokens"] for s in starts])
    actions = torch.stack([s["actions"] for s in starts])
    # The imagination on --device: copies of the models there, a generator there.
    ac, tokenizer, model = (copy.deepcopy(m).to(args.device) for m in (agent.actor_critic, agent.tokenizer, model))
    record = {
        "command": "python benchmarks/safety_validation.py " + " ".join(f"--{k} {v}" for k, v in vars(args).items()),
        "date": time.strftime("%Y-%m-%d"),
        "real_seconds": time.perf_counter() - begin,
        "real_outcomes": real.astype(int).tolist(),
        "by_imagined_rollouts": {},
    }
    store = None
    if hasattr(model, "members"):  # an ensemble: its unknown gate is calibrated on held-out windows of the demo's data
        from iris_wm.data.store import TokenStore

        store = TokenStore.open(args.demo / "tokens")
    for count in args.imagined_rollouts or [args.rollouts]:
        generator, began = torch.Generator(args.device).manual_seed(args.seed), time.perf_counter()
        imagine = dataclasses.replace(config, rollouts=count)
        imagined = imagined_rollouts(ac, model, tokenizer, tokens, actions, imagine, None, generator)
        row = {
            "config": {
                "horizon": args.horizon,
                "rollouts": args.rollouts,
                "imagined_rollouts": count,
                "temperature": args.temperature,
                "every": args.every,
            },
            "imagined_seconds": time.perf_counter() - began,
            "all": figures(imagined.probability, real, np.ones(len(starts), bool), args.seed),
            "all_sampled": figures(imagined.unsafe, real, np.ones(len(starts), bool), args.seed),
        }
        if store is not None:
            threshold = unknown_threshold(ac, model, tokenizer, store, imagine, args.starts, args.seed, generator)
            gated = summarize_starts(imagined, threshold)
            keep = np.array([not s["unknown"] for s in gated["starts"]])
            row["unknown_threshold"] = threshold
            row["known"] = figures(imagined.probability, real, keep, args.seed)
            row["known_sampled"] = figures(imagined.unsafe, real, keep, args.seed)
        record["by_imagined_rollouts"][str(count)] = row
        record.update(row)  # the last count's figures at the top level, as before
        print(count, json.dumps({"expected": row["all"], "sampled": row["all_sampled"]}), flush=True)
    record["seconds"] = time.perf_counter() - begin
    record["provenance"] = provenance()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=1))
    print(json.dumps({k: v for k, v in record.items() if k != "provenance"}, indent=1))


if __name__ == "__main__":
    main()
