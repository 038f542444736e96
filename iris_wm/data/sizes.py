"""The one check that models and stores fit together: the sizes that come from the data.

Three sizes link every part of the pipeline: the tokenizer's vocabulary and tokens per frame, which the token
store records and the world model and a token-reading actor-critic are built with, and the game's number of
actions, which the stores, the world model and the actor-critic share. :func:`check_sizes` compares every part
it is given on every size that part has, and names the parts and sizes that differ.
"""

from __future__ import annotations

from iris_wm.runtime.errors import IrisError

SIZES = ("vocab_size", "tokens_per_frame", "num_actions")
LABELS = {"vocab_size": "codes", "tokens_per_frame": "tokens per frame", "num_actions": "actions"}


class SizeMismatch(IrisError, ValueError):
    """Parts that cannot work together: a model and data, or two models, of different sizes."""


def sizes_of(part) -> dict[str, int]:
    """The data-linked sizes ``part`` has: a tokenizer (codes, tokens per frame), a world model (all three), an
    actor-critic (actions, and codes and tokens per frame when it reads tokens), a store (actions; a token store
    also codes and tokens per frame), or a dict of them."""
    if isinstance(part, dict):
        return {k: int(v) for k, v in part.items() if k in SIZES and v is not None}
    if hasattr(part, "manifest"):  # a store
        found = {"num_actions": part.num_actions}
        settings = part.manifest["settings"]
        if part.kind == "tokens":
            found.update(vocab_size=settings["vocab_size"], tokens_per_frame=settings["tokens_per_frame"])
        return sizes_of(found)
    config = part.config
    if hasattr(part, "vocab_size") and not hasattr(config, "num_actions"):  # a tokenizer
        return sizes_of({"vocab_size": part.vocab_size, "tokens_per_frame": part.tokens_per_frame})
    found = {k: getattr(config, k, None) for k in SIZES}
    if getattr(config, "observation", "tokens") != "tokens":  # an actor-critic that reads frames
        found.update(vocab_size=None, tokens_per_frame=None)
    return sizes_of(found)


def describe(sizes: dict[str, int]) -> str:
    return ", ".join(f"{sizes[k]} {LABELS[k]}" for k in SIZES if k in sizes) or "no data-linked sizes"


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
