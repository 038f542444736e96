"""``iris-wm import FORMAT SRC --out STORE``: a dataset made elsewhere as an episode store (iris_wm.data.importers).

Formats: ``lerobot`` (a LeRobot dataset folder, or a Hub dataset repo id), ``dreamerv3`` (a folder of
NM512/dreamerv3-torch episode files or danijar/dreamerv3 replay chunks), ``tdmpc2`` (TD-MPC2's offline dataset
files: pickles, read only with ``--source.trust_pickle true``).
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

FORMATS = ("lerobot", "dreamerv3", "tdmpc2")


def _format(name: str):
    """The options dataclass, the planning function and the module of a format."""
    if name == "lerobot":
        from iris_wm.data.importers import lerobot

        return lerobot.LeRobotOptions, lerobot.plan_lerobot, lerobot
    if name == "tdmpc2":
        from iris_wm.data.importers import tdmpc2

        return tdmpc2.TDMPC2Options, tdmpc2.plan_tdmpc2, tdmpc2
    from iris_wm.data.importers import dreamerv3

    return dreamerv3.DreamerOptions, dreamerv3.plan_dreamerv3, dreamerv3


def main(argv: list[str]) -> None:
    from jsonargparse import ArgumentParser

    from iris_wm.data.importers.writer import write_import

    if not argv or argv[0] not in FORMATS:
        got = f"got {argv[0]!r}" if argv and not argv[0].startswith("-") else "none given"
        raise ValueError(
            f"iris-wm import needs a format first, one of {', '.join(FORMATS)} ({got}): "
            "iris-wm import lerobot SRC --out STORE (--help lists its options)."
        )
    options_class, plan, module = _format(argv[0])
    parser = ArgumentParser(prog=f"iris-wm import {argv[0]}", description=module.__doc__.split("\n\n")[0])
    hub = argv[0] == "lerobot"
    where = "The dataset's folder (the one holding meta/), or a Hub dataset repo id." if hub else "The file or folder."
    parser.add_argument("src", type=str, help=where)
    parser.add_argument("--out", type=str, required=True, help="Folder of the episode store (created if needed).")
    parser.add_argument("--flush_steps", type=int, default=5_000, help="Append finished episodes every N steps.")
    if hub:
        parser.add_argument("--revision", type=str, default=None, help="The Hub revision (branch, tag or commit).")
    parser.add_class_arguments(options_class, "source", help="How to read the source.")
    cfg = parser.parse_args(argv[1:])
    options = options_class(**{f.name: cfg.source[f.name] for f in fields(options_class)})
    if hub:
        from iris_wm.hub.pretrained import resolve

        root = resolve(cfg.src, cfg.revision, "dataset")
        origin = {} if Path(cfg.src).exists() else {"repo_id": cfg.src, "revision": root.name}  # the snapshot's commit
        found = plan(root, options, origin)
    else:
        found = plan(cfg.src, options)
    summary = write_import(cfg.out, found, flush_steps=cfg.flush_steps)
    for note in summary.skipped:
        print(f"not imported: {note}")
    print(
        f"{summary.out}: added {summary.steps} steps in {summary.episodes} episodes; the store holds "
        f"{summary.total_steps} steps, {summary.total_episodes} episodes ({found.actions.describe()})."
    )
