"""``iris-wm import FORMAT SRC --out STORE``: a dataset made elsewhere as an episode store (iris_wm.data.importers).

Formats: ``dreamerv3`` (a folder of NM512/dreamerv3-torch episode files or danijar/dreamerv3 replay chunks).
"""

from __future__ import annotations

from dataclasses import fields

FORMATS = ("dreamerv3",)


def main(argv: list[str]) -> None:
    from jsonargparse import ArgumentParser

    from iris_wm.data.importers import dreamerv3
    from iris_wm.data.importers.dreamerv3 import DreamerOptions, plan_dreamerv3
    from iris_wm.data.importers.writer import write_import

    if not argv or argv[0] not in FORMATS:
        got = f"got {argv[0]!r}" if argv and not argv[0].startswith("-") else "none given"
        raise ValueError(
            f"iris-wm import needs a format first, one of {', '.join(FORMATS)} ({got}): "
            "iris-wm import dreamerv3 SRC --out STORE (--help lists its options)."
        )
    parser = ArgumentParser(prog=f"iris-wm import {argv[0]}", description=dreamerv3.__doc__.split("\n\n")[0])
    parser.add_argument("src", type=str, help="The folder of .npz files DreamerV3 saved.")
    parser.add_argument("--out", type=str, required=True, help="Folder of the episode store (created if needed).")
    parser.add_argument("--flush_steps", type=int, default=5_000, help="Append finished episodes every N steps.")
    parser.add_class_arguments(DreamerOptions, "source", help="How to read the source.")
    cfg = parser.parse_args(argv[1:])
    options = DreamerOptions(**{f.name: cfg.source[f.name] for f in fields(DreamerOptions)})
    options.state_keys = tuple(options.state_keys)
    plan = plan_dreamerv3(cfg.src, options)
    summary = write_import(cfg.out, plan, flush_steps=cfg.flush_steps)
    for note in summary.skipped:
        print(f"not imported: {note}")
    print(
        f"{summary.out}: added {summary.steps} steps in {summary.episodes} episodes; the store holds "
        f"{summary.total_steps} steps, {summary.total_episodes} episodes ({plan.actions.describe()})."
    )
