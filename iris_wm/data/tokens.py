"""Token stores: an episode store encoded once by a tokenizer, row-aligned with it, and the check that a
tokenizer is the one that encoded a store (the tokenizer's predict stage writes them through
``iris_wm.train.callbacks.TokenStoreWriter``; the online loop encodes with :func:`encode_store`)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from iris_wm.data.episode import Episode
from iris_wm.data.sizes import check_sizes
from iris_wm.data.store import EpisodeStore, StoreError, TokenStore
from iris_wm.runtime.faults import maybe_fault
from iris_wm.runtime.files import complete_or_absent
from iris_wm.runtime.provenance import weights_digest


class TokenizerMismatch(StoreError, ValueError):
    """A token store read through a tokenizer other than the one that encoded it."""


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
    # Complete or absent: a predict killed while writing leaves no token store that could be trained on.
    with complete_or_absent(output, "token store") as partial:
        store = TokenStore.create(
            partial,
            TokenStore.token_spec(tokens.shape[1]),
            source.action_space,
            settings,
            state=source.state,
            fps=source.fps,
        )
        cols = source.columns
        batch: list[Episode] = []
        for position in range(source.num_episodes):
            start, length = int(source.episode_starts[position]), int(source.episode_lengths[position])
            rows = slice(start, start + length)
            states = None if cols.state is None else cols.state[rows]
            batch.append(
                Episode(
                    tokens[rows],
                    cols.action[rows],
                    cols.reward[rows],
                    cols.terminated[rows],
                    cols.truncated[rows],
                    states,
                )
            )
            if len(batch) == episodes_per_shard or position == source.num_episodes - 1:
                store.append(batch)
                batch = []
                maybe_fault(f"tokens:{position}")
    return TokenStore.open(output)


def check_tokenizer(store: TokenStore, tokenizer) -> None:
    """Refuse a tokenizer other than the one that encoded ``store``: with the same sizes, its token ids would
    name other codes and everything read through it would be silently wrong. Stores written before the
    digest was recorded are checked on sizes only."""
    settings = store.manifest["settings"]
    check_sizes(
        token_store=store,
        tokenizer=tokenizer,
        fix=f"Pass the tokenizer that encoded the store ({settings.get('tokenizer_checkpoint')}).",
    )
    recorded = settings.get("tokenizer_digest")
    given = weights_digest(tokenizer) if recorded is not None else None
    if recorded != given:
        raise TokenizerMismatch(
            f"The token store {store.root} was encoded by another tokenizer "
            f"({settings.get('tokenizer_checkpoint')}, weights digest {recorded[:12]}) than the one "
            f"given (digest {given[:12]}): its token ids would mean other codes. "
            "Pass the tokenizer that encoded the store, or encode the episodes again with this one into a new "
            "token store.",
            "encode",
        )


@torch.no_grad()
def encode_store(
    tokenizer,
    source: EpisodeStore,
    first: int = 0,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    autocast: Callable[[], object] = nullcontext,
) -> np.ndarray:
    """Tokens ``int16 (N - first, K)`` of the frames of ``source`` from row ``first`` on, without a Trainer (the
    online loop encodes its store so), in batches of ``batch_size`` on ``device`` under ``autocast()``."""
    rows_total = source.num_steps - first
    out = np.empty((max(0, rows_total), tokenizer.tokens_per_frame), dtype=np.int16)
    for start in range(first, source.num_steps, batch_size):
        rows = np.arange(start, min(start + batch_size, source.num_steps))
        frames = torch.from_numpy(source.observations(rows)).to(device)
        with autocast():
            out[rows - first] = tokenizer.encode(frames).cpu().numpy()
    return out
