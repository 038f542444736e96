"""``iris-wm ensemble build|report``: world models trained with different seeds as one ensemble, and whether its
disagreement knows when it is unsure (iris_wm.evaluate.uncertainty).

    iris-wm ensemble build --members M0.ckpt M1.ckpt M2.ckpt --out runs/demo/ensemble
    iris-wm ensemble report --ensemble runs/demo/ensemble --tokens runs/demo/tokens --other runs/pong/tokens \\
        --out runs/demo/ensemble/uncertainty.json
"""

from __future__ import annotations

import json
from pathlib import Path

VERBS = ("build", "report")


def main(argv: list[str]) -> None:
    from jsonargparse import ArgumentParser

    if not argv or argv[0] not in VERBS:
        got = f"got {argv[0]!r}" if argv and not argv[0].startswith("-") else "none given"
        raise ValueError(
            f"iris-wm ensemble needs a verb first, build or report ({got}): iris-wm ensemble build --help."
        )
    verb, rest = argv[0], argv[1:]
    parser = ArgumentParser(prog=f"iris-wm ensemble {verb}", description=__doc__.split("\n")[0])
    if verb == "build":
        parser.add_argument("--members", type=list[str], required=True, help="World models (checkpoints, folders).")
        parser.add_argument("--out", type=str, required=True, help="Pretrained folder of the ensemble to write.")
        args = parser.parse_args(rest)
        from iris_wm.hub.checkpoints import save_ensemble

        folder = save_ensemble(args.members, args.out)
        print(f"{len(args.members)} world models saved as one ensemble in {folder}")
        return
    parser.add_argument("--ensemble", type=str, required=True, help="The ensemble (a folder iris-wm ensemble built).")
    parser.add_argument("--tokens", type=str, required=True, help="Token store of the game the members trained on.")
    parser.add_argument("--other", type=str, required=True, help="Token store of another game, same tokenizer.")
    parser.add_argument("--out", type=str, required=True, help="JSON file for the figures.")
    parser.add_argument("--windows", type=int, default=256, help="Windows of each store.")
    parser.add_argument("--burn_in", type=int, default=4, help="Real steps that prime each window.")
    parser.add_argument("--horizon", type=int, default=10, help="Imagined steps of each window.")
    parser.add_argument("--device", type=str, default="cpu", help="Where the members imagine (cuda: a GPU).")
    args = parser.parse_args(rest)
    from iris_wm.data.store import TokenStore
    from iris_wm.evaluate.uncertainty import uncertainty_report
    from iris_wm.hub.checkpoints import load_model

    ensemble = load_model(args.ensemble, "world_model", map_location=args.device)
    own, other = TokenStore.open(args.tokens), TokenStore.open(args.other)
    report = uncertainty_report(ensemble, own, other, args.windows, args.burn_in, args.horizon)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"{report['members']} members, {report['windows']['own']} + {report['windows']['other']} windows:")
    for name in ("real", "imagined"):
        row = report[name]
        print(
            f"  disagreement about the {name} steps: AUROC {row['auroc_other_game']:.3f} (own game against "
            f"{args.other}), Spearman {row['spearman_with_error']:.3f} with the token error at horizon {args.horizon}"
        )
    print(f"written to {args.out}")
