"""`make demo-control`: the pipeline on a MuJoCo task (dm_control reacher-easy; ``--task`` another, e.g.
cartpole-swingup), each stage through the library function its command calls; every stage is skipped when its output
exists, so an interrupted run resumes.

1. ``iris-wm collect --env.suite dmc --env.task reacher-easy``: random-policy steps (frames from camera 0, the task's
   state, box actions) in two processes.
2. ``iris-wm tokenizer fit`` and ``predict`` (configs/tokenizer/control.yaml): 16 tokens a frame.
3. ``iris-wm world-model fit`` (configs/world_model/control.yaml): box actions through a linear embedding, the state
   as one more token a component (6 on reacher, 5 on cartpole), rewards as two-hot symlog bins.
4. Held-out figures: cross-entropy with the true against permuted actions (``iris_wm.evaluate.conditioning``), and
   open-loop state RMSE at horizons 1 / 10 / 20 against constant-velocity extrapolation
   (``iris_wm.evaluate.proprioception``).
5. ``iris-wm agent fit`` (configs/agent/control.yaml): a squashed-Gaussian policy reading tokens and state, trained
   in imagination.
6. ``iris-wm evaluate``: the agent and the random policy on the same seeded episodes of the real task.
Then ``<out>/report.md`` with ``frames.png`` and ``states.png``: a held-out window's real against imagined frames
and state components. ``<out>/settings.json`` records the arguments and configs; a resumed run must match them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from iris_wm.cli.arguments import StageTimings, claim, demo_parser, settings
from iris_wm.data.collect import collect_parallel
from iris_wm.data.store import EpisodeStore, TokenStore
from iris_wm.data.windows import split_episodes
from iris_wm.envs.atari import EnvConfig
from iris_wm.evaluate.conditioning import action_conditioning
from iris_wm.evaluate.play import evaluate
from iris_wm.evaluate.proprioception import state_rollouts
from iris_wm.evaluate.scores import margin_over_random
from iris_wm.hub import load_model
from iris_wm.train.stages import run_agent_cli, run_tokenizer_cli, run_world_model_cli, stage_args

TASK = "reacher-easy"


STAGES = ("tokenizer", "world_model", "agent")


def run(out: Path, steps: int, seed: int, eval_episodes: int, eval_max_steps: int, task: str = TASK) -> dict:
    arguments = dict(steps=steps, seed=seed, eval_episodes=eval_episodes, eval_max_steps=eval_max_steps, task=task)
    claim(out, settings("control", STAGES, **arguments))
    previous = out / "summary.json"
    timer = timings = StageTimings(previous)

    env = EnvConfig(suite="dmc", task=task)
    episodes, tokens = out / "episodes", out / "tokens"
    with timer("collect"):
        collect_parallel(episodes, steps, env, seed=seed, workers=2)
    tokenizer = out / "tokenizer" / "checkpoints" / "last.ckpt"
    if not tokenizer.exists():
        with timer("tokenizer fit"):
            run_tokenizer_cli(stage_args("fit", "tokenizer", "control", episodes, out / "tokenizer"))
    if not (tokens / "manifest.json").exists():
        with timer("tokenizer predict"):
            extra = ("--ckpt_path", str(tokenizer), "--token_writer.output", str(tokens))
            run_tokenizer_cli(stage_args("predict", "tokenizer", "control", episodes, out / "tokenizer", *extra))
    world_model = out / "world_model" / "checkpoints" / "last.ckpt"
    if not world_model.exists():
        with timer("world model fit"):
            run_world_model_cli(stage_args("fit", "world_model", "control", tokens, out / "world_model"))
    with timer("held-out figures"):
        model = load_model(world_model, "world_model")
        store = TokenStore.open(tokens)
        _, held_out = split_episodes(store, 0.1, 0)
        conditioning = action_conditioning(model, store, held_out, windows=256, seed=seed)
        states = state_rollouts(model, store, burn_in=4, horizon=20, windows=256, seed=seed)
        plot_window(model, load_model(tokenizer, "tokenizer"), store, out, seed)
    agent = out / "agent" / "checkpoints" / "last.ckpt"
    if not agent.exists():
        with timer("agent fit"):
            extra = ("--model.world_model", str(world_model), "--model.tokenizer", str(tokenizer))
            run_agent_cli(stage_args("fit", "agent", "control", tokens, out / "agent", *extra))
    play_env = EnvConfig(suite="dmc", task=task, max_episode_steps=eval_max_steps)
    results = {}
    for name, policy in (("agent", str(agent)), ("random", None)):
        with timer(f"evaluate {name}"):
            results[name] = evaluate(
                str(out / "evaluate" / f"{name}.json"), policy, play_env, eval_episodes, num_envs=8, seed=1000 + seed
            )
    summary = {
        "task": task,
        "seed": seed,
        "steps": steps,
        "conditioning": conditioning,
        "states": states,
        "evaluation": {
            name: {k: r[k] for k in ("mean", "stderr", "episodes", "lengths")} for name, r in results.items()
        },
        "timings_s": timings,
    }
    previous.write_text(json.dumps(summary, indent=1))
    write_report(out, summary)
    return summary


@torch.no_grad()
def plot_window(model, tokenizer, store: TokenStore, out: Path, seed: int, burn_in: int = 4, horizon: int = 20) -> None:
    """One held-out window, imagined (argmax) from ``burn_in`` real steps with the real actions: ``frames.png``, the
    real frames (top) over the imagined ones decoded by the tokenizer (bottom), and ``states.png``, real against
    imagined state components."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from iris_wm.envs.imagination import ImaginationConfig, ImaginationEnv
    from iris_wm.evaluate.rollouts import pick_windows

    first, _ = pick_windows(store, burn_in + horizon, 1, 0.1, 0, np.random.default_rng(seed))
    rows = first[0] + np.arange(burn_in + horizon)
    columns = store.columns
    env = ImaginationEnv(model, config=ImaginationConfig(temperature=0.0, precision="fp32"))
    env.reset(
        torch.from_numpy(store.observations(rows[:burn_in])).long()[None],
        torch.from_numpy(columns.action[rows[: burn_in - 1]])[None],
        torch.from_numpy(columns.state[rows[:burn_in]])[None],
    )
    steps = [env.step(torch.from_numpy(columns.action[rows[burn_in - 1 + h]])[None]) for h in range(horizon)]
    imagined = torch.stack([step.state[0] for step in steps]).numpy()
    real = columns.state[rows]
    real_frames = EpisodeStore.open(out / "episodes").observations(rows[burn_in:])  # row-aligned with the tokens
    decoded = tokenizer.decode(torch.cat([step.tokens for step in steps])).numpy()
    strip = np.concatenate([np.concatenate(list(real_frames), 2), np.concatenate(list(decoded), 2)], 1)
    from PIL import Image

    Image.fromarray(strip.transpose(1, 2, 0)).save(out / "frames.png")
    names = store.state.names
    figure, axes = plt.subplots(1, len(names), figsize=(2.6 * len(names), 2.4), squeeze=False)
    for i, ax in enumerate(axes[0]):
        ax.plot(np.arange(len(rows)), real[:, i], label="real", color="black")
        ax.plot(np.arange(burn_in, len(rows)), imagined[:, i], label="imagined", color="tab:orange")
        ax.axvline(burn_in - 0.5, color="grey", linewidth=0.5)
        ax.set_title(names[i], fontsize=8)
    axes[0][0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(out / "states.png", dpi=90)
    plt.close(figure)


def write_report(out: Path, summary: dict) -> Path:
    c, s, e = summary["conditioning"], summary["states"], summary["evaluation"]
    difference, combined = margin_over_random(e["agent"], e["random"])
    lines = [
        "# iris-wm control demo report",
        "",
        f"dm_control {summary['task']}, {summary['steps']} random-policy steps, seed {summary['seed']}. Reproduce with "
        "`make demo-control`.",
        "",
        f"## Action conditioning: {c['windows']} held-out windows",
        "",
        f"Observation cross-entropy {c['ce_true_actions']:.4f} with the true actions, {c['ce_permuted_actions']:.4f} "
        f"with actions permuted across windows: {100 * c['reduction']:.1f}% lower (paired 95% interval of the "
        f"difference [{c['difference_ci'][0]:.4f}, {c['difference_ci'][1]:.4f}]).",
        "",
        f"## Proprioception: open-loop state RMSE over {s['windows']} held-out windows ({s['burn_in']} real steps, "
        "then the real actions; argmax imagination)",
        "",
        "| horizon | world model [95%] | constant velocity [95%] | reduction |",
        "| --- | --- | --- | --- |",
    ]
    for row in s["per_horizon"]:
        lines.append(
            f"| {row['horizon']} | {row['rmse']:.4f} [{row['rmse_ci'][0]:.4f}, {row['rmse_ci'][1]:.4f}] | "
            f"{row['constant_velocity_rmse']:.4f} [{row['constant_velocity_rmse_ci'][0]:.4f}, "
            f"{row['constant_velocity_rmse_ci'][1]:.4f}] | {100 * row['reduction']:.1f}% |"
        )
    lines += [
        "",
        "![real and imagined state](states.png)",
        "",
        "The same window's frames, real (top) and imagined then decoded (bottom), one column per imagined step:",
        "",
        "![real and imagined frames](frames.png)",
        "",
        f"## The real task: {e['agent']['episodes']} seeded episodes each",
        "",
        "| policy | mean return | standard error |",
        "| --- | --- | --- |",
        f"| agent (trained in imagination) | {e['agent']['mean']:.2f} | {e['agent']['stderr']:.2f} |",
        f"| random | {e['random']['mean']:.2f} | {e['random']['stderr']:.2f} |",
        "",
        f"Difference {difference:+.2f}, combined standard error {combined:.2f} ({difference / combined:.1f} SE).",
        "",
        "## Time per stage (s)",
        "",
        "| stage | seconds |",
        "| --- | --- |",
        *[f"| {stage} | {seconds:.0f} |" for stage, seconds in summary["timings_s"].items()],
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> None:
    parser = demo_parser("iris-wm-demo-control", __doc__, "runs/demo-control", 20_000, 250)
    parser.add_argument("--task", default=TASK, help="The dm_control task, domain-task.")
    args = parser.parse_args(argv)
    run(args.out, args.steps, args.seed, args.eval_episodes, args.eval_max_steps, args.task)
    print((args.out / "report.md").read_text())


if __name__ == "__main__":
    main()
