"""The `iris-wm` command line: one table from verb to a small function that parses its arguments and calls the
library. Nothing imports this package.

``iris-wm collect ...``                           random-policy episodes into an episode store
``iris-wm import FORMAT SRC --out STORE``          a dataset made elsewhere (LeRobot, DreamerV3, TD-MPC2)
``iris-wm games``                                 the Atari game ids that can be used
``iris-wm tokenizer fit|validate|predict ...``    LightningCLI over TokenizerModule and StoreDataModule
``iris-wm world-model fit|validate ...``          LightningCLI over WorldModelModule and StoreDataModule
``iris-wm agent fit ...``                         LightningCLI over ActorCriticModule (training in imagination)
``iris-wm imagine ...``                           imagined vs real rollouts of held-out episodes
``iris-wm play ...``                              a web page for playing inside the world model
``iris-wm evaluate ...``                          episodes of the real game with an agent or the random policy
``iris-wm ensemble build|report ...``             world models as one ensemble; its disagreement's figures
``iris-wm safety-check ...``                      a policy's chance of an unsafe outcome, estimated in imagination
``iris-wm aggregate RESULT.json ...``             mean / median / IQM of human-normalised scores over runs
``iris-wm push-to-hub ...``                       a checkpoint as a pretrained folder (and to the Hub), or a store
``iris-wm run --config configs/run/NAME.yaml``    the online IRIS loop (iris_wm.train.loop)
``iris-wm scaling sweep|fit|report|run ...``      the scaling harness (iris_wm.cli.scaling)
"""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path

from iris_wm.runtime.errors import ConfigError, IrisError

USAGE = """usage: iris-wm COMMAND [ARGS...]

commands:
  collect      collect environment steps with a random policy into an episode store
  import       a dataset made elsewhere as an episode store (iris-wm import lerobot|dreamerv3|tdmpc2 SRC --out STORE)
  games        list the Atari game ids (ALE v5) that --env.game accepts
  tokenizer    train / validate the VQ-VAE tokenizer, or encode a store into tokens
               (iris-wm tokenizer fit|validate|predict --config configs/tokenizer/demo.yaml ...)
  world-model  train / validate the GPT world model on a token store
               (iris-wm world-model fit|validate --config configs/world_model/demo.yaml ...)
  imagine      imagined vs real rollouts of held-out episodes: strips, GIFs, error per horizon;
               with --export STORE, imagined episodes written as a synthetic store
               (iris-wm imagine --export STORE --help)
  play         play inside the world model in a web page (keys or the agent), the real game beside it
               (iris-wm play --agent runs/demo/pretrained --tokens runs/demo/tokens)
  agent        train the actor-critic in the imagination of a trained world model
               (iris-wm agent fit --config configs/agent/demo.yaml --model.world_model ... --model.tokenizer ...)
  evaluate     play episodes of the real game with an agent (or the random policy), returns to JSON
  ensemble     world models of different seeds as one (build); does its disagreement know the unknown (report)
  safety-check the chance that a policy reaches an unsafe outcome within a horizon, estimated in imagination
  aggregate    mean, median and interquartile mean of human-normalised scores over games and seeds
  push-to-hub  export a checkpoint as a pretrained folder with a model card, and push it (or a store) to the Hub
  run          the online IRIS loop: collect, train tokenizer, world model and agent in turn, resumable
               (iris-wm run --config configs/run/demo.yaml)
  scaling      sweep model and data size, fit scaling laws with intervals, report
               (iris-wm scaling run --spec configs/scaling/cpu_default.yaml)

Each command explains its options with --help.
"""

REMEDIES = {
    "collect": "iris-wm collect --out EPISODES --steps N",
    "encode": "iris-wm tokenizer predict --ckpt_path TOKENIZER.ckpt --data.root EPISODES --token_writer.output TOKENS",
    "games": "iris-wm games",
    "overwrite": "add --overwrite to replace the earlier export",
}
"""The command line of each fix a library error names (``IrisError.remedy``)."""


def _collect(argv: list[str]) -> None:
    from jsonargparse import ArgumentParser

    from iris_wm.data.collect import collect, collect_parallel
    from iris_wm.envs.atari import EnvConfig

    parser = ArgumentParser(prog="iris-wm collect", description=collect.__doc__, default_config_files=[])
    parser.add_argument("--config", action="config", help="YAML file with any of the options below.")
    parser.add_argument("--out", type=str, required=True, help="Folder of the episode store (created if needed).")
    parser.add_argument("--steps", type=int, required=True, help="Total steps the store must hold when done.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the environment and the random policy.")
    parser.add_argument("--flush_steps", type=int, default=5_000, help="Append finished episodes every N steps.")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="Processes collecting shares of the steps at once (one emulator each; 2 on 2 cores take "
        "about half the time). The store then differs from a 1-worker one after the first "
        "share; rerun an interrupted collection with the same number.",
    )
    parser.add_class_arguments(EnvConfig, "env", help="Environment protocol (IRIS training defaults).")
    cfg = parser.parse_args(argv)
    env = EnvConfig(**cfg.env.as_dict())
    if cfg.workers != 1:  # collect_parallel refuses fewer than 1
        summary = collect_parallel(
            cfg.out, cfg.steps, env, seed=cfg.seed, workers=cfg.workers, flush_steps=cfg.flush_steps
        )
    else:
        summary = collect(cfg.out, cfg.steps, env, seed=cfg.seed, flush_steps=cfg.flush_steps)
    mean = sum(summary.returns) / len(summary.returns) if summary.returns else float("nan")
    print(
        f"{summary.store}: added {summary.steps_added} steps in {summary.episodes_added} episodes "
        f"(mean return {mean:.2f}); the store holds {summary.total_steps} steps, {summary.total_episodes} episodes."
    )


def _games(argv: list[str]) -> None:
    from iris_wm.envs.atari import known_games

    print("\n".join(known_games()))


def _stage(name: str):
    def run(argv: list[str]) -> None:
        from iris_wm.train import stages

        getattr(stages, f"run_{name}_cli")(argv)

    return run


def _function_arguments(function, prog: str, argv: list[str]) -> dict:
    """Parse ``argv`` into the keyword arguments of ``function`` (its signature and docstring give the options;
    ``--config`` reads them from YAML), with dataclass arguments instantiated."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(prog=prog, description=function.__doc__.split("\n")[0])
    parser.add_argument("--config", action="config", help="YAML file with any of the options below.")
    parser.add_function_arguments(function)
    cfg = parser.parse_args(argv)
    cfg.pop("config", None)
    return parser.instantiate(cfg).as_dict()


def _imagine(argv: list[str]) -> None:
    if any(arg == "--export" or arg.startswith("--export=") for arg in argv):
        return _export(argv)
    from iris_wm.evaluate.imagine import imagine

    kwargs = _function_arguments(imagine, "iris-wm imagine", argv)
    metrics = imagine(**kwargs)
    print(
        f"{metrics['windows']} held-out windows of {metrics['episodes']} episodes imagined; strips, GIFs and "
        f"metrics.json in {kwargs['out']}. Imagined (copy the last real frame):"
    )
    for h, row in metrics["reported"].items():
        print(
            f"  {h}: token accuracy {row['token_accuracy']:.3f} ({row['copy_token_accuracy']:.3f}), frame PSNR "
            f"{row['frame_psnr']:.2f} ({row['copy_frame_psnr']:.2f}) dB, dynamic pixels {row['dynamic_psnr']:.2f} "
            f"({row['copy_dynamic_psnr']:.2f}) dB"
        )


def _export(argv: list[str]) -> None:
    from iris_wm.evaluate.synthetic import export_episodes

    summary = export_episodes(**_function_arguments(export_episodes, "iris-wm imagine --export", argv))
    line = (
        f"{summary['store']}: {summary['episodes']} synthetic episodes ({summary['policy']} policy), "
        f"{summary['steps']} steps, {summary['ended_by_world_model']} ended by the world model, "
        f"reward {summary['reward_per_step']:.4f} per step"
    )
    if "reencoded_token_agreement" in summary:
        line += f"; decoded frames re-encode to {100 * summary['reencoded_token_agreement']:.1f}% of the tokens"
    print(line)


def _play(argv: list[str]) -> None:
    from iris_wm.cli.play import serve

    serve(argv)


def _evaluate(argv: list[str]) -> None:
    from iris_wm.evaluate.play import evaluate

    kwargs = _function_arguments(evaluate, "iris-wm evaluate", argv)
    result = evaluate(**kwargs)
    hns = result["human_normalized"]
    print(
        f"{result['game']}, {result['policy']}: mean return {result['mean']:.2f} +- {result['stderr']:.2f} "
        f"(standard error, {result['episodes']} episodes)"
        + (f", human-normalised {hns:.3f}" if hns is not None else "")
        + f"; written to {kwargs['out']}"
    )


def _aggregate(argv: list[str]) -> None:
    import argparse

    from iris_wm.evaluate.scores import aggregate_results

    parser = argparse.ArgumentParser(
        prog="iris-wm aggregate",
        description="Aggregate human-normalised scores of `iris-wm evaluate` results (one file per game and seed).",
    )
    parser.add_argument("results", nargs="+", help="JSON files written by `iris-wm evaluate`.")
    parser.add_argument("--out", help="Also write the aggregate to this JSON file.")
    parser.add_argument("--draws", type=int, default=2000, help="Stratified bootstrap draws.")
    args = parser.parse_args(argv)
    summary = aggregate_results(args.results, draws=args.draws)
    for name in ("mean", "median", "iqm"):
        row = summary[name]
        print(f"{name:>6}: {row['value']:.3f}  [{row['low']:.3f}, {row['high']:.3f}]")
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=1))


def _push_to_hub(argv: list[str]) -> None:
    import argparse

    from iris_wm.hub import CardInfo, export_checkpoint, push_to_hub
    from iris_wm.hub.pretrained import check_push

    parser = argparse.ArgumentParser(
        prog="iris-wm push-to-hub",
        description="Export a stage's checkpoint as a pretrained folder (config.json, model.safetensors, model card) "
        "and push it to the Hub; or push an episode/token store as a dataset. The token comes from HF_TOKEN or "
        "`hf auth login`.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="A .ckpt of `iris-wm tokenizer|world-model|agent fit`.")
    source.add_argument("--store", help="An episode or token store folder, pushed as a dataset repository.")
    parser.add_argument("--out", help="Folder for the exported model (kept; default: a folder beside the checkpoint).")
    parser.add_argument("--repo_id", help="owner/name on the Hub; without it the model is only exported.")
    parser.add_argument("--private", action="store_true", help="Create the repository as private.")
    parser.add_argument("--overwrite", action="store_true", help="Replace an earlier export in --out (only that).")
    parser.add_argument("--results", nargs="*", default=[], help="`iris-wm evaluate` JSON files shown in the card.")
    parser.add_argument("--metrics", help='A JSON file of more figures for the card: {"name": number, ...}.')
    parser.add_argument("--environment", help="The game, for the card (default: from the results).")
    parser.add_argument("--dataset", help="Hub id of the training data, for the card.")
    parser.add_argument("--command", help="The command that reproduces the card's figures.")
    args = parser.parse_args(argv)
    if args.store and not args.repo_id:
        parser.error("--store needs --repo_id.")
    if args.repo_id:
        check_push(args.repo_id)  # before any export work
    if args.store:
        from iris_wm.hub.datasets import push_store

        print(push_store(args.store, args.repo_id, private=args.private))
        return
    from iris_wm.evaluate.scores import read_figures, result_figures

    figures, game = result_figures(args.results)
    figures.update(read_figures(args.metrics) if args.metrics else {})
    card = CardInfo(environment=args.environment or game, dataset=args.dataset, metrics=figures, command=args.command)
    out = args.out or str(Path(args.checkpoint).with_suffix("")) + "-pretrained"
    kind, folder = export_checkpoint(args.checkpoint, out, card, overwrite=args.overwrite)
    print(f"exported the {kind} to {folder}")
    if args.repo_id:
        print(push_to_hub(folder, args.repo_id, private=args.private))


def _run_loop(argv: list[str]) -> None:
    from iris_wm.train.loop.config import build_parser
    from iris_wm.train.loop.online import OnlineLoop

    parser = build_parser()
    cfg = parser.parse_args(argv)
    loop = OnlineLoop(parser.instantiate_classes(cfg).run)
    row = loop.run()
    if not loop.ranks.zero:  # the other ranks of a data-parallel run (started without --export_agent)
        return
    if cfg.export_agent:
        print(f"exported the agent to {loop.export_agent(cfg.export_agent)}")
    print(json.dumps(row))


def _module(name: str):
    """A verb whose options live in ``iris_wm.cli.<name>`` (its ``main(argv)``), imported when it runs."""

    def run(argv: list[str]) -> None:
        import importlib

        importlib.import_module(f"iris_wm.cli.{name}").main(argv)

    return run


COMMANDS = {
    "collect": _collect,
    "import": _module("importing"),
    "games": _games,
    "tokenizer": _stage("tokenizer"),
    "world-model": _stage("world_model"),
    "imagine": _imagine,
    "play": _play,
    "agent": _stage("agent"),
    "evaluate": _evaluate,
    "ensemble": _module("ensemble"),
    "safety-check": _module("safety"),
    "aggregate": _aggregate,
    "run": _run_loop,
    "push-to-hub": _push_to_hub,
    "scaling": _module("scaling"),
}


CONTINUE = {
    "collect": "rerun the same command: the store keeps every flushed episode and collection continues from there",
    "run": "rerun the same command: the loop resumes from its last checkpoint",
    "import": "rerun the same command: the store keeps every appended episode and the import goes on from there",
    "tokenizer": "rerun the same command with --ckpt_path last to resume training",
    "world-model": "rerun the same command with --ckpt_path last to resume training",
    "agent": "rerun the same command with --ckpt_path last to resume training",
    "scaling": "rerun the same command: finished points are kept and skipped",
}
"""How to go on after Ctrl-C, per command (others simply start again)."""

USER_ERRORS = (IrisError, ValueError, OSError, FloatingPointError)
"""What a user can fix: shown as the message alone. Anything else is a bug, shown with its traceback."""


def _check_config_files(argv: list[str]) -> None:
    """Every ``--config FILE`` must exist and be YAML: said here with the file's name (the parser would say
    neither)."""
    import yaml

    given = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("--config", "-c")]
    given += [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]
    for name in given:
        path = Path(name)
        if not path.is_file():
            raise ConfigError(f"--config {name}: no such file (the shipped configs are under configs/).")
        try:
            yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as error:
            where = getattr(error, "problem_mark", None)
            line = f", line {where.line + 1}" if where else ""
            problem = getattr(error, "problem", None) or str(error).splitlines()[0]
            raise ConfigError(f"--config {name} is not valid YAML ({problem}{line}): repair the file.") from None


@contextmanager
def _usage_on_request():
    """Parse errors as the message alone: jsonargparse prints the whole usage first (hundreds of lines for a
    stage), which buries the one line that matters; its tip names --help."""
    from jsonargparse import ArgumentParser

    original = ArgumentParser.print_usage
    ArgumentParser.print_usage = lambda self, file=None: None if file is sys.stderr else original(self, file)
    try:
        yield
    finally:
        ArgumentParser.print_usage = original


def _debugging(argv: list[str]) -> tuple[bool, list[str]]:
    """Whether tracebacks are wanted (``--debug`` anywhere in the arguments, or ``IRIS_WM_DEBUG=1``), and the
    arguments without the flag."""
    import os

    wanted = "--debug" in argv or os.environ.get("IRIS_WM_DEBUG", "") not in ("", "0")
    return wanted, [a for a in argv if a != "--debug"]


def _message(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    if isinstance(error, IrisError) and error.remedy in REMEDIES:
        # The library states its fix in its own terms; on the command line, name the command that does it.
        text = f"{text} On the command line: {REMEDIES[error.remedy]}"
    if isinstance(error, OSError) and error.filename and str(error.filename) not in text:
        text = f"{text} ({error.filename})"
    return text


def main(argv: list[str] | None = None) -> None:
    """Run one command. A problem the user can fix ends the process with exit status 2 and one or two lines on
    standard error (what is wrong, which file or flag, the fix); ``--debug`` (or ``IRIS_WM_DEBUG=1``) re-raises it
    with its traceback instead. Ctrl-C says how to continue and exits with 130."""
    debug, argv = _debugging(list(sys.argv[1:] if argv is None else argv))
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"iris-wm: unknown command {command!r}.\n\n{USAGE}", file=sys.stderr)
        raise SystemExit(2)
    try:
        _check_config_files(rest)
        with _usage_on_request():
            COMMANDS[command](rest)
    except KeyboardInterrupt:
        if debug:
            raise
        how = CONTINUE.get(command, "run the command again")
        print(f"iris-wm {command}: interrupted; {how}.", file=sys.stderr)
        raise SystemExit(130) from None
    except USER_ERRORS as error:
        if debug:
            raise
        print(f"iris-wm {command}: error: {_message(error)}", file=sys.stderr)
        print("(add --debug, or set IRIS_WM_DEBUG=1, to see the traceback)", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
