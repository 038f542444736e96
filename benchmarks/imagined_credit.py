"""Does the imagination pay for good actions? (issue 19)

An actor trained in imagination can only learn what the imagined rewards tell apart. From starts inside recorded
episodes of a purposeful policy (a planner's, ``iris-wm evaluate --record``, tokenized), this imagines ``horizon``
steps under that policy's own recorded actions (open loop), under uniform random actions, under zero actions and
under the agent's policy (closed loop), each ``repeats`` times, and compares their imagined returns with the real
return the recorded policy earned over the same steps. If the recorded actions earn no more in imagination than
random or zero actions, no learner can climb this imagination, whatever its gradient.

    python benchmarks/imagined_credit.py --agent AGENT.ckpt --tokens TOKENS --first_episode 40 --json out.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from iris_wm.agent.rollout import burn_in, rollout
from iris_wm.data.store import open_store
from iris_wm.envs.imagination import ImaginationConfig, ImaginationEnv
from iris_wm.hub.checkpoints import load_agent, load_model


def starts(store, first: int, context: int, horizon: int, every: int):
    """Windows of ``context`` real steps ending at each start, the recorded actions from the window's first step
    (the ``context - 1`` between its steps, then the ``horizon`` from the start on) and the real return of those
    ``horizon`` steps."""
    tokens, states, actions, returns = [], [], [], []
    for e in range(first, store.num_episodes):
        episode = store.episode(e)
        for t in range(context, len(episode.rewards) - horizon, every):
            tokens.append(episode.observations[t - context + 1 : t + 1])
            states.append(episode.states[t - context + 1 : t + 1])
            actions.append(episode.actions[t - context + 1 : t + horizon])
            returns.append(float(episode.rewards[t : t + horizon].sum()))
    if not returns:
        raise SystemExit(f"No starts: the store has no episode from {first} on longer than {context + horizon} steps.")
    as_tensor = lambda x: torch.as_tensor(np.stack(x))  # noqa: E731
    return as_tensor(tokens).long(), as_tensor(states).float(), as_tensor(actions).float(), np.array(returns)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agent", required=True, help="an agent checkpoint (its world model imagines)")
    parser.add_argument("--world_model", help="imagine with this one, not the agent's")
    parser.add_argument("--tokens", required=True, help="a token store of the recorded episodes")
    parser.add_argument("--first_episode", type=int, default=0, help="the recorded episodes start here in the store")
    parser.add_argument("--horizon", type=int, default=10)
    parser.add_argument("--prime", type=int, default=1, help="real steps the world model is primed with")
    parser.add_argument("--burn_in", type=int, default=8, help="real steps the agent reads before acting")
    parser.add_argument("--every", type=int, default=20, help="a start every this many steps of an episode")
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--greedy", action="store_true", help="argmax tokens and expected rewards (default: IRIS's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    agent = load_agent(args.agent).eval()
    world_model = load_model(args.world_model, "world_model") if args.world_model else agent.world_model
    context = max(args.prime, args.burn_in)
    store = open_store(args.tokens)
    tokens, states, actions, real = starts(store, args.first_episode, context, args.horizon, args.every)
    n, low, high = len(real), agent.actor_critic.action_low, agent.actor_critic.action_high
    future = actions[:, context - 1 :]  # the recorded actions from the start on
    config = ImaginationConfig(temperature=0.0, differentiable=True) if args.greedy else ImaginationConfig.iris()

    memory = burn_in(agent.actor_critic, tokens[:, :-1], states[:, :-1])  # the agent's state at the starts

    def imagine(policy) -> torch.Tensor:  # (n,) mean imagined return over the repeats
        totals = []
        for _ in range(args.repeats):
            env = ImaginationEnv(world_model, None, config, generator)
            p = args.prime
            current = env.reset(tokens[:, -p:], actions[:, context - p : context - 1], states[:, -p:])
            if policy == "agent":
                totals.append(rollout(agent.actor_critic, env, current, memory, args.horizon, generator).rewards.sum(1))
                continue
            total = torch.zeros(n)
            for h in range(args.horizon):
                if policy == "recorded":
                    act = future[:, h]
                elif policy == "random":
                    act = low + torch.rand(n, len(low), generator=generator) * (high - low)
                else:
                    act = torch.zeros(n, len(low))
                total += env.step(act).reward
            totals.append(total)
        return torch.stack(totals).mean(0)

    result = {"agent": args.agent, "world_model": args.world_model, "tokens": args.tokens, "starts": n}
    result.update({"horizon": args.horizon, "real_recorded": float(real.mean()), "imagined": {}})
    per_start = {}
    with torch.no_grad():
        for policy in ("recorded", "random", "zero", "agent"):
            got = per_start[policy] = imagine(policy).numpy()
            result["imagined"][policy] = {
                "mean": float(got.mean()),
                "stderr": float(got.std(ddof=1) / np.sqrt(n)),
                "corr_with_real_recorded": float(np.corrcoef(got, real)[0, 1]),
            }
            print(policy, result["imagined"][policy], flush=True)
    for other in ("random", "zero"):  # paired over the starts
        gap = per_start["recorded"] - per_start[other]
        result[f"recorded_minus_{other}"] = {"mean": float(gap.mean()), "stderr": float(gap.std(ddof=1) / np.sqrt(n))}
    over = {k: result[f"recorded_minus_{k}"] for k in ("random", "zero")}
    print(
        f"real return of the recorded policy {real.mean():.3f}; in imagination it earns "
        + ", ".join(f"{v['mean']:+.3f} +- {v['stderr']:.3f} over {k}" for k, v in over.items())
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
