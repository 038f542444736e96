"""Encode an episode store once into a token store (the `predict` stage of the tokenizer)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from iris_wm.data.store import Episode, EpisodeStore, TokenStore
from iris_wm.provenance import weights_digest


class TokenStoreWriter(BasePredictionWriter):
    """Collects the tokens that ``predict`` produces and writes them, row-aligned, as a :class:`TokenStore`.

    The token store copies actions, rewards and episode ends from the episode store, so the world model
    reads nothing else. Its manifest names the episode store (path and manifest digest) and the tokenizer
    checkpoint, so a mismatch can be detected later.
    """

    def __init__(self, output: str | None = None, episodes_per_shard: int = 256):
        """
        Args:
            output: folder of the token store to write (must not exist yet). Required for `predict`.
            episodes_per_shard: episodes written per Arrow shard.
        """
        super().__init__(write_interval="batch")
        self.output = output
        self.episodes_per_shard = episodes_per_shard
        self._tokens: np.ndarray | None = None
        self.tokenizer_source: str | None = None
        """Where the tokenizer came from when it was not a --ckpt_path (the CLI sets --model.from_pretrained)."""

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.output:
            raise ValueError("`predict` writes a token store: pass --token_writer.output FOLDER.")
        if Path(self.output).exists() and any(Path(self.output).iterdir()):
            raise FileExistsError(f"{self.output} already exists; choose a new folder for the token store.")
        store = trainer.datamodule.store
        if not isinstance(store, EpisodeStore):
            raise ValueError(f"`predict` encodes an episode store, but {store.root} is a {store.kind!r} store.")
        self._tokens = np.full((store.num_steps, pl_module.config.tokens_per_frame), -1, dtype=np.int16)

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        rows = batch.rows.reshape(-1).cpu().numpy()
        tokens = prediction.reshape(len(rows), -1).cpu().numpy().astype(np.int16)
        real = rows >= 0
        self._tokens[rows[real]] = tokens[real]

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        source: EpisodeStore = trainer.datamodule.store
        if (self._tokens < 0).any():
            raise RuntimeError("Some frames were not encoded; the token store was not written.")
        write_token_store(
            self.output,
            source,
            self._tokens,
            pl_module.config,
            trainer.ckpt_path or self.tokenizer_source,
            self.episodes_per_shard,
            weights_digest(pl_module.tokenizer),
        )


def write_token_store(
    output: str | Path,
    source: EpisodeStore,
    tokens: np.ndarray,
    tokenizer_config,
    checkpoint: str | None,
    episodes_per_shard: int = 256,
    tokenizer_digest: str | None = None,
) -> TokenStore:
    """Write ``tokens`` (one row per row of ``source``) as a token store beside the source's other columns.
    ``checkpoint`` names the tokenizer (a .ckpt, a pretrained folder or a Hub id) and ``tokenizer_digest`` is
    :func:`~iris_wm.provenance.weights_digest` of it, which :func:`check_tokenizer` compares later."""
    manifest_digest = hashlib.sha256((source.root / "manifest.json").read_bytes()).hexdigest()
    settings = {
        "env": source.manifest["settings"].get("env"),
        "source_store": str(Path(source.root).resolve()),
        "source_manifest_sha256": manifest_digest,
        "tokenizer_checkpoint": (str(Path(checkpoint).resolve()) if Path(checkpoint).exists() else str(checkpoint))
        if checkpoint
        else None,
        "tokenizer_digest": tokenizer_digest,
        "tokens_per_frame": int(tokenizer_config.tokens_per_frame),
        "vocab_size": int(tokenizer_config.vocab_size),
        "frame_shape": list(source.spec.shape),
    }
    store = TokenStore.create(output, TokenStore.token_spec(tokens.shape[1]), source.num_actions, settings)
    cols = source.columns
    batch: list[Episode] = []
    for position in range(source.num_episodes):
        start, length = int(source.episode_starts[position]), int(source.episode_lengths[position])
        rows = slice(start, start + length)
        batch.append(
            Episode(tokens[rows], cols.action[rows], cols.reward[rows], cols.terminated[rows], cols.truncated[rows])
        )
        if len(batch) == episodes_per_shard or position == source.num_episodes - 1:
            store.append(batch)
            batch = []
    return store


def check_tokenizer(store: TokenStore, tokenizer) -> None:
    """Refuse a tokenizer other than the one that encoded ``store``: with the same sizes, its token ids would
    name other codes and everything read through it would be silently wrong. Stores written before the
    digest was recorded are checked on sizes only."""
    settings = store.manifest["settings"]
    if (settings["vocab_size"], settings["tokens_per_frame"]) != (tokenizer.vocab_size, tokenizer.tokens_per_frame):
        raise ValueError(
            f"The token store {store.root} holds {settings['tokens_per_frame']} tokens of "
            f"{settings['vocab_size']} codes per frame, but the tokenizer makes "
            f"{tokenizer.tokens_per_frame} of {tokenizer.vocab_size}: pass the tokenizer that encoded "
            f"the store ({settings.get('tokenizer_checkpoint')})."
        )
    recorded = settings.get("tokenizer_digest")
    given = weights_digest(tokenizer) if recorded is not None else None
    if recorded != given:
        raise ValueError(
            f"The token store {store.root} was encoded by another tokenizer "
            f"({settings.get('tokenizer_checkpoint')}, weights digest {recorded[:12]}) than the one "
            f"given (digest {given[:12]}): its token ids would mean other codes. "
            "Pass the tokenizer that encoded the store, or encode the episodes again with this one "
            "(`iris-wm tokenizer predict --ckpt_path ... --token_writer.output NEW_FOLDER`)."
        )


@torch.no_grad()
def encode_store(tokenizer, source: EpisodeStore, batch_size: int = 256) -> np.ndarray:
    """Tokens ``int16 (N, K)`` of every frame of ``source``, without a Trainer (used by the online loop)."""
    out = np.empty((source.num_steps, tokenizer.tokens_per_frame), dtype=np.int16)
    for start in range(0, source.num_steps, batch_size):
        rows = np.arange(start, min(start + batch_size, source.num_steps))
        frames = torch.from_numpy(source.observations(rows))
        out[rows] = tokenizer.encode(frames).cpu().numpy()
    return out
