"""Model cards: README.md with the Hub's YAML metadata and a body a reader can act on (how to load the model, the
environment and data, the figures with the command that reproduces them, the provenance)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

CARD_FILE = "README.md"


@dataclass
class CardInfo:
    """What the model card says beyond the config."""

    environment: str | None = None
    """The game, e.g. ``ALE/Breakout-v5``."""
    dataset: str | None = None
    """Hub id (or local path) of the data it was trained on."""
    training_config: dict = field(default_factory=dict)
    """The resolved training configuration."""
    metrics: dict[str, float] = field(default_factory=dict)
    """Evaluation figures, by name."""
    command: str | None = None
    """The command that reproduces the figures."""
    tags: list[str] = field(default_factory=list)
    """More Hub tags."""


def write_card(folder: Path, kind: str, config: dict, card: CardInfo) -> Path:
    """README.md with YAML metadata (library, tags, dataset, metrics) and a body a reader can act on."""
    from huggingface_hub import ModelCard, ModelCardData

    data = ModelCardData(
        library_name="iris-wm",
        tags=["world-model", "iris", "reinforcement-learning", kind.replace("_", "-"), *card.tags],
        datasets=[card.dataset] if card.dataset and "/" in card.dataset else None,
        metrics=sorted(card.metrics) or None,
        environment=card.environment,
        training_config=card.training_config or None,
    )
    title = {"agent": "agent (tokenizer, world model, actor-critic)"}.get(kind, kind.replace("_", " "))
    lines = [
        f"# iris-wm {title}",
        "",
        "A component of an IRIS-style tokenized world model (Micheli et al. 2023), trained with iris-wm. Load it with:",
        "",
        "```python",
        "from iris_wm.hub import " + ("load_agent" if kind == "agent" else "from_pretrained"),
        f'model = {"load_agent" if kind == "agent" else "from_pretrained"}("<this repository or folder>")',
        "```",
        "",
    ]
    if card.environment:
        lines += [f"Environment: `{card.environment}`.", ""]
    if card.dataset:
        lines += [f"Training data: `{card.dataset}`.", ""]
    synthetic = config.get("provenance", {}).get("inputs", {}).get("synthetic")
    if synthetic:
        lines += [
            f"Trained partly on synthetic data: {100 * synthetic['fraction']:.0f}% of its training windows were "
            f"imagined episodes ({synthetic.get('policy')} policy) from the world model with weights digest "
            f"`{str(synthetic.get('world_model_digest'))[:12]}`; see the provenance below.",
            "",
        ]
    if card.metrics:
        lines += ["## Evaluation", "", "| figure | value |", "| --- | --- |"]
        lines += [f"| {name} | {value:.4g} |" for name, value in card.metrics.items()]
        lines.append("")
    if card.command:
        lines += ["## Reproduce", "", "```bash", card.command, "```", ""]
    if "parameters" in config:
        lines += [f"Parameters: {config['parameters']:,}.", ""]
    lines += ["## Provenance", "", "```json", json.dumps(config.get("provenance", {}), indent=1), "```", ""]
    path = folder / CARD_FILE
    ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines)).save(path)
    return path
