"""`make demo`: the pipeline end to end on a CPU-sized Breakout setup, each stage through the library function that
its command calls.

Stages (each skipped when its output already exists, so an interrupted demo resumes):
1. ``iris-wm collect``: random-policy Breakout steps into an episode store.
2. ``iris-wm tokenizer fit``: the demo tokenizer (configs/tokenizer/demo.yaml).
3. ``iris-wm tokenizer validate``: held-out PSNR, L1 and codebook usage on every validation frame.
4. ``iris-wm tokenizer predict``: the token store the world model trains on.
5. ``iris-wm world-model fit`` and ``validate``: the demo world model (configs/world_model/demo.yaml); then every
   held-out step's reward and end predicted once with its full context (``iris_wm.evaluate.events``).
6. ``iris-wm imagine``: imagined vs real rollouts of held-out episodes and the error per horizon, sampled as the
   agent imagines (temperature 1) and as a point prediction (argmax, temperature 0).
7. ``iris-wm agent fit``: the demo actor-critic, trained in the world model's imagination
   (configs/agent/demo.yaml).
8. ``iris-wm evaluate``: the agent and the random policy on the same seeded episodes of the real game.
9. ``iris-wm push-to-hub`` without a repository: the agent exported as a pretrained folder with its card.
Then ``<out>/report.md`` gathers the figures, the reconstruction grid, the imagined rollouts and the
learning curves (``<out>/curves.png``).
"""

from __future__ import annotations

import json
from pathlib import Path

from iris_wm.agent.bundle import Agent
from iris_wm.cli.arguments import StageTimings, claim, demo_parser, settings
from iris_wm.cli.report import plot_curves, write_report
from iris_wm.data.collect import collect
from iris_wm.data.store import EpisodeStore
from iris_wm.data.windows import split_episodes
from iris_wm.envs.atari import EnvConfig
from iris_wm.evaluate.events import event_figures, step_events
from iris_wm.evaluate.imagine import imagine
from iris_wm.evaluate.play import evaluate
from iris_wm.evaluate.scores import read_figures, result_figures
from iris_wm.evaluate.showcase import showcase
from iris_wm.hub import CardInfo, export_checkpoint, load_model, read_checkpoint
from iris_wm.runtime.hardware import cpu_has_native_bf16
from iris_wm.runtime.provenance import weights_digest
from iris_wm.train.stages import run_agent_cli, run_tokenizer_cli, run_world_model_cli, stage_args

RUNNERS = {"tokenizer": run_tokenizer_cli, "world_model": run_world_model_cli, "agent": run_agent_cli}
DATA = {"tokenizer": "episodes", "world_model": "tokens", "agent": "tokens"}


CONFIG = "demo"
"""The config of every stage (``configs/<stage>/<CONFIG>.yaml``); the smoke test runs the demo with ``debug``."""
IMAGINATION = {"demo": {"burn_in": 4, "horizon": 20, "num_windows": 256}, "debug": {"burn_in": 2, "horizon": 3}}
"""The imagined windows of each config (the debug world model's context holds 4 steps)."""


def _stage(stage: str, verb: str, out: Path, *extra: str):
    """``verb`` of ``stage`` with the demo's config, reading the demo's store and writing under ``out/<stage>``."""
    return RUNNERS[stage](stage_args(verb, stage, CONFIG, out / DATA[stage], out / stage, *extra))


def mean_frame(datamodule, chunk: int = 4096):
    """The per-pixel mean training frame ``(3, H, W)``: what a tokenizer that knows nothing of the frame draws."""
    import numpy as np

    train = datamodule.train_set
    total = np.zeros((3, *datamodule.store.spec.shape[1:]), np.float64)
    for start in range(0, len(train), chunk):
        total += datamodule.store.observations(train.anchors[start : start + chunk]).sum(0, dtype=np.float64)
    return total / len(train)


def tokenizer_figures(checkpoint: Path, datamodule) -> dict[str, float]:
    """Held-out reconstruction on every pixel and on the dynamic ones, beside the mean-frame and previous-frame
    baselines, and token stability (:func:`iris_wm.evaluate.reconstruction.reconstruction_figures`)."""
    from iris_wm.data.windows import split_episodes
    from iris_wm.evaluate.reconstruction import reconstruction_figures

    store = datamodule.store
    _, val = split_episodes(store, datamodule.hparams.val_fraction, datamodule.hparams.split_seed)
    tokenizer = load_model(str(checkpoint), "tokenizer").eval()
    figures = reconstruction_figures(tokenizer, store, val, mean_frame(datamodule))
    return {f"reconstruction/{k}": v for k, v in figures.items()}


def run(out: Path, steps: int, seed: int, eval_episodes: int = 32, eval_max_steps: int = 2_000) -> dict:
    claim(
        out,
        settings(CONFIG, RUNNERS, steps=steps, seed=seed, eval_episodes=eval_episodes, eval_max_steps=eval_max_steps),
    )
    previous = out / "summary.json"
    timer = timings = StageTimings(previous)

    with timer("collect"):
        collect(out / "episodes", steps, EnvConfig(), seed=seed)

    checkpoint = out / "tokenizer" / "checkpoints" / "last.ckpt"
    if not checkpoint.exists():
        with timer("tokenizer fit"):
            _stage("tokenizer", "fit", out, "--seed_everything", str(seed))

    with timer("tokenizer validate"):
        cli = _stage("tokenizer", "validate", out, "--ckpt_path", str(checkpoint), "--data.max_val_windows", "null")
        metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items()}

    tokens = out / "tokens"
    if not (tokens / "manifest.json").exists():
        with timer("tokenizer predict"):
            _stage("tokenizer", "predict", out, "--ckpt_path", str(checkpoint), "--token_writer.output", str(tokens))

    metrics.update(tokenizer_figures(checkpoint, cli.datamodule))

    wm_checkpoint = out / "world_model" / "checkpoints" / "last.ckpt"
    if not wm_checkpoint.exists():
        with timer("world model fit"):
            _stage("world_model", "fit", out, "--seed_everything", str(seed))
    with timer("world model validate"):
        wm_cli = _stage(
            "world_model", "validate", out, "--ckpt_path", str(wm_checkpoint), "--data.max_val_windows", "null"
        )
        metrics.update({f"world_model/{k}": float(v) for k, v in wm_cli.trainer.callback_metrics.items()})
        val_rows = wm_cli.datamodule.val_set.anchors
        metrics["baseline/zero_reward_accuracy"] = float((wm_cli.datamodule.store.columns.reward[val_rows] == 0).mean())

    with timer("world model events"):
        data = wm_cli.datamodule.hparams
        token_store = wm_cli.datamodule.store
        _, held_out = split_episodes(token_store, data.val_fraction, data.split_seed)
        world_model = load_model(str(wm_checkpoint), "world_model")
        events = step_events(world_model, token_store, held_out, bf16=cpu_has_native_bf16())
        metrics.update({f"events/{k}": v for k, v in event_figures(events, seed=seed).items()})

    imaginations = {}
    for name, folder, temperature in (("sampled", "imagine", 1.0), ("argmax", "imagine-argmax", 0.0)):
        with timer(f"imagine ({name})"):
            imaginations[name] = imagine(
                str(wm_checkpoint),
                str(checkpoint),
                str(out / "episodes"),
                str(tokens),
                str(out / folder),
                **IMAGINATION[CONFIG],
                temperature=temperature,
                seed=seed,
            )
    imagination = imaginations["sampled"]

    with timer("showcase"):
        models = Agent(load_model(str(checkpoint), "tokenizer"), world_model)
        stores = token_store, EpisodeStore.open(out / "episodes")
        burn_in, horizon = IMAGINATION[CONFIG]["burn_in"], IMAGINATION[CONFIG]["horizon"]
        window = showcase(models, *stores, out / "showcase.png", burn_in=burn_in, horizon=horizon, seed=seed)

    agent_checkpoint = out / "agent" / "checkpoints" / "last.ckpt"
    if not agent_checkpoint.exists():
        with timer("agent fit"):
            _stage(
                "agent",
                "fit",
                out,
                "--seed_everything",
                str(seed),
                "--model.world_model",
                str(wm_checkpoint),
                "--model.tokenizer",
                str(checkpoint),
            )
    evaluation = {}
    for name, agent in (("agent", str(agent_checkpoint)), ("random", None)):
        with timer(f"evaluate {name}"):
            evaluation[name] = evaluate(
                str(out / "evaluate" / f"{name}.json"),
                agent,
                EnvConfig.evaluation(max_episode_steps=eval_max_steps),
                episodes=eval_episodes,
                num_envs=8,
                seed=1000 + seed,
            )
    with timer("export and round trip"):
        card_metrics = {
            "tokenizer: held-out PSNR (dB)": metrics.get("reconstruction/tokenizer/psnr"),
            "baseline: the previous frame's PSNR (dB)": metrics.get("reconstruction/previous_frame/psnr"),
            "tokenizer: held-out PSNR on the dynamic pixels (dB)": metrics.get("reconstruction/tokenizer/dynamic_psnr"),
            "baseline: the mean frame's PSNR on the dynamic pixels (dB)": metrics.get(
                "reconstruction/mean_frame/dynamic_psnr"
            ),
            "world model: held-out observation CE (nats/token)": metrics.get("world_model/val/observation_ce"),
            "world model: held-out bits per frame": metrics.get("world_model/val/bits_per_frame"),
        }
        for head, label in (("reward/positive", "positive rewards"), ("end", "episode ends")):
            for rule, how in (("argmax", "argmax"), ("threshold", "cross-fitted threshold")):
                card_metrics[f"world model: F1 of {label} on held-out steps, {how} (majority baseline 0)"] = (
                    metrics.get(f"events/{head}/{rule}/f1")
                )
            card_metrics[f"world model: decision threshold of {label} (chosen on held-out steps)"] = metrics.get(
                f"events/{head}/threshold"
            )
        for name, rows in (("sampled", imagination["per_horizon"]), ("argmax", imaginations["argmax"]["per_horizon"])):
            for row in rows:
                if row["horizon"] in (1, 5, 10, 20):
                    h = row["horizon"]
                    card_metrics[f"imagination ({name}): token accuracy at horizon {h}"] = row["token_accuracy"]
                    card_metrics[f"imagination ({name}): frame PSNR at horizon {h} (dB)"] = row["frame_psnr"]
                    card_metrics[f"imagination ({name}): dynamic-pixel PSNR at horizon {h} (dB)"] = row["dynamic_psnr"]
                    if name == "sampled":  # the baselines do not depend on how imagination draws its tokens
                        card_metrics[f"baseline: copy-last tokens at horizon {h}"] = row["copy_token_accuracy"]
                        card_metrics[f"baseline: copy-last frame PSNR at horizon {h} (dB)"] = row["copy_frame_psnr"]
                        card_metrics[f"baseline: copy-last dynamic-pixel PSNR at horizon {h} (dB)"] = row[
                            "copy_dynamic_psnr"
                        ]
        (out / "card_metrics.json").write_text(json.dumps({k: v for k, v in card_metrics.items() if v is not None}))
        round_trip = check_round_trip(
            out, export_pretrained(out, agent_checkpoint), agent_checkpoint, metrics["world_model/val/observation_ce"]
        )
    plot_curves(out)
    summary = {
        "metrics": metrics,
        "imagination": imagination,
        "imagination_argmax": imaginations["argmax"],
        "showcase": window,
        "seed": seed,
        "game": EnvConfig().game,
        "evaluation": evaluation,
        "timings_s": timings,
        "round_trip": round_trip,
        "checkpoint": str(checkpoint),
        "tokens": str(tokens),
        "validation_frames": len(cli.datamodule.val_set),
        "training_frames": len(cli.datamodule.train_set),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    write_report(out, summary)
    return summary


def export_pretrained(out: Path, agent_checkpoint: Path) -> Path:
    """The trained agent as a pretrained folder (safetensors, configs, a model card with the evaluation)."""
    metrics = out / "card_metrics.json"
    figures, game = result_figures([out / "evaluate" / "agent.json", out / "evaluate" / "random.json"])
    figures.update(read_figures(metrics) if metrics.exists() else {})
    card = CardInfo(environment=game, metrics=figures, command="make demo")
    return export_checkpoint(agent_checkpoint, out / "pretrained", card, overwrite=True)[1]


def check_round_trip(out: Path, folder: Path, agent_checkpoint: Path, observation_ce: float) -> dict:
    """The exported folder holds exactly the trained weights (digests of each component, checkpoint vs folder),
    and `world-model validate --model.from_pretrained` on it gives the checkpoint's held-out figure."""
    trained = read_checkpoint(agent_checkpoint).models
    same = {kind: weights_digest(trained[kind]) == weights_digest(load_model(folder, kind)) for kind in trained}
    cli = _stage(
        "world_model", "validate", out, "--model.from_pretrained", str(folder), "--data.max_val_windows", "null"
    )
    again = float(cli.trainer.callback_metrics["val/observation_ce"])
    return {
        "identical_weights": same,
        "observation_ce_checkpoint": observation_ce,
        "observation_ce_pretrained": again,
        "observation_ce_abs_difference": abs(again - observation_ce),
    }


def main(argv: list[str] | None = None) -> None:
    args = demo_parser("iris-wm-demo", __doc__, "runs/demo", 50_000, 2_000).parse_args(argv)
    summary = run(args.out, args.steps, args.seed, args.eval_episodes, args.eval_max_steps)
    print((args.out / "report.md").read_text())
    print(json.dumps(summary["timings_s"]))


if __name__ == "__main__":
    main()
