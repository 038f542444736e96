"""Sharing the HuggingFace way: pretrained folders and Hub repositories (``pretrained``), model cards
(``cards``), stage checkpoints read into models (``checkpoints``: the one ``load_model`` and ``load_agent``), and
stores as Hub datasets (``datasets``)."""

from iris_wm.hub.cards import CardInfo, write_card
from iris_wm.hub.checkpoints import (
    export_checkpoint,
    is_checkpoint_path,
    load_agent,
    load_model,
    read_checkpoint,
    save_ensemble,
)
from iris_wm.hub.pretrained import PretrainedError, from_pretrained, push_to_hub, resolve, save_agent, save_pretrained

__all__ = [
    "CardInfo",
    "PretrainedError",
    "export_checkpoint",
    "from_pretrained",
    "is_checkpoint_path",
    "load_agent",
    "load_model",
    "push_to_hub",
    "read_checkpoint",
    "resolve",
    "save_agent",
    "save_ensemble",
    "save_pretrained",
    "write_card",
]
