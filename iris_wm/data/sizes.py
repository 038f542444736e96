"""The one check that models and stores fit together: the sizes that come from the data.

Four sizes link every part of the pipeline: the tokenizer's vocabulary and tokens per frame, which the token
store records and the world model and a token-reading actor-critic are built with, and the actions, which the
stores, the world model and the actor-critic share: a number of discrete actions, or the components of a
continuous one (each part reports 0 for the kind it does not take). :func:`check_sizes` compares every part
it is given on every size that part has, and names the parts and sizes that differ.
"""

from __future__ import annotations

from iris_wm.runtime.errors import IrisError

SIZES = ("vocab_size", "tokens_per_frame", "num_actions", "action_dim")
LABELS = {
    "vocab_size": "codes",
    "tokens_per_frame": "tokens per frame",
    "num_actions": "actions",
    "action_dim": "components of a continuous action",
}


class SizeMismatch(IrisError, ValueError):
    """Parts that cannot work together: a model and data, or two models, of different sizes."""


def action_sizes(space) -> dict[str, int]:
    """The action sizes of an :class:`~iris_wm.data.spaces.ActionSpace`, 0 for the kind of action it does not hold,
    so that a discrete model and continuous data (or the other way round) disagree."""
    if space.is_discrete:
        return {"num_actions": space.n, "action_dim": 0}
    return {"num_actions": 0, "action_dim": space.size}


def sizes_of(part) -> dict[str, int]:
    """The data-linked sizes ``part`` has: a tokenizer (codes, tokens per frame), a world model (all three), an
    actor-critic (actions, and codes and tokens per frame when it reads tokens), a store (actions; a token store
    also codes and tokens per frame), or a dict of them."""
    if isinstance(part, dict):
        return {k: int(v) for k, v in part.items() if k in SIZES and v is not None}
    if hasattr(part, "manifest"):  # a store
        found = action_sizes(part.action_space)
        settings = part.manifest["settings"]
        if part.kind == "tokens":
            found.update(vocab_size=settings["vocab_size"], tokens_per_frame=settings["tokens_per_frame"])
        return sizes_of(found)
    config = part.config
    if hasattr(part, "vocab_size") and not hasattr(config, "num_actions"):  # a tokenizer
        return sizes_of({"vocab_size": part.vocab_size, "tokens_per_frame": part.tokens_per_frame})
    found = {k: getattr(config, k, None) for k in SIZES}
    if hasattr(config, "action_dim"):  # a model that may take either kind of action: 0 for the kind it does not
        if found["action_dim"] is None and found["num_actions"] is not None:
            found["action_dim"] = 0
        elif found["num_actions"] is None and found["action_dim"] is not None:
            found["num_actions"] = 0
    if getattr(config, "observation", "tokens") != "tokens":  # an actor-critic that reads frames
        found.update(vocab_size=None, tokens_per_frame=None)
    return sizes_of(found)


def describe(sizes: dict[str, int]) -> str:
    shown = [k for k in SIZES if k in sizes and not (k in ("num_actions", "action_dim") and sizes[k] == 0)]
    return ", ".join(f"{sizes[k]} {LABELS[k]}" for k in shown) or "no data-linked sizes"


def check_sizes(fix: str | None = None, **parts) -> None:
    """Raise :class:`SizeMismatch` when any two of the named ``parts`` (None ones are skipped) disagree on a size
    they both have. ``fix`` replaces the default advice."""
    found = {name: sizes_of(part) for name, part in parts.items() if part is not None}
    for size in SIZES:
        values = {name: s[size] for name, s in found.items() if size in s}
        if len(set(values.values())) > 1:
            named = [f"the {name.replace('_', ' ')} ({describe(found[name])})" for name in values]
            names = ", ".join(named[:-1]) + " and " + named[-1]
            advice = fix or (
                "Use parts made from the same data: the world model trained on the tokens of this tokenizer, the "
                "actor-critic in that world model's imagination, on the game the stores were collected from."
            )
            raise SizeMismatch(f"{names[0].upper()}{names[1:]} do not fit together ({LABELS[size]} differ). {advice}")
