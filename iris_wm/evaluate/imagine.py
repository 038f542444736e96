"""`iris-wm imagine`: imagined vs real rollouts of held-out episodes, and the error per horizon."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from iris_wm.agent.bundle import Agent
from iris_wm.data.sizes import check_sizes
from iris_wm.data.store import EpisodeStore, TokenStore
from iris_wm.data.tokens import check_tokenizer
from iris_wm.evaluate.rollouts import DYNAMIC_LEVELS, pick_windows, rollout_errors, summarize
from iris_wm.hub.checkpoints import load_model
from iris_wm.runtime.checks import at_least, output_folder, within
from iris_wm.runtime.errors import ConfigError

REPORTED_HORIZONS = (1, 5, 10, 20, 50)


@torch.no_grad()
def imagine(
    world_model: str,
    tokenizer: str,
    episodes: str,
    tokens: str,
    out: str,
    burn_in: int = 4,
    horizon: int = 20,
    num_windows: int = 256,
    temperature: float = 1.0,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    seed: int = 0,
    pictures: int = 8,
) -> dict:
    """Imagine held-out windows from real context and compare with what really happened, per horizon.

    Writes ``metrics.json`` (token accuracy, whole-frame and dynamic-pixel PSNR of the imagined frames and of the
    copy-the-last-frame baseline, each with a 95% bootstrap interval over episodes) and, for the first
    ``pictures`` windows, strips and GIFs of real vs imagined frames.

    Args:
        world_model: the world model: a checkpoint of its stage, a pretrained (or agent) folder, or a Hub id.
        tokenizer: the tokenizer whose token store the world model trained on (the same kinds of source).
        episodes: the episode store (real frames).
        tokens: the token store made from it (real tokens).
        out: folder for the strips, GIFs and metrics.json.
        burn_in: real steps that prime the world model before imagining.
        horizon: imagined steps, following the real actions.
        num_windows: held-out windows to imagine, drawn uniformly among those that fit in a validation episode.
        temperature: sampling temperature of observation tokens (0: argmax).
        val_fraction: validation share used when the world model was trained (held-out episodes only).
        split_seed: split seed used when the world model was trained.
        seed: seed of the window draw, of sampling and of the bootstrap.
        pictures: windows shown as strips and GIFs.
    """
    at_least(1, "imagine", burn_in=burn_in, horizon=horizon, num_windows=num_windows)
    at_least(0, "imagine", temperature=temperature, seed=seed, split_seed=split_seed, pictures=pictures)
    within(0, 1, "imagine", val_fraction=val_fraction)
    output_folder(out, "output folder")
    agent = Agent(load_model(tokenizer, "tokenizer"), load_model(world_model, "world_model"))
    tok = agent.tokenizer
    token_store, frame_store = TokenStore.open(tokens), EpisodeStore.open(episodes)
    check_tokenizer(token_store, tok)
    check_sizes(world_model=agent.world_model, token_store=token_store)
    lengths = token_store.episode_lengths
    if not np.array_equal(frame_store.episode_lengths[: len(lengths)], lengths):
        raise ConfigError(
            f"The token store {tokens} was not encoded from the episode store {episodes} (their "
            f"episodes differ; it names {token_store.manifest['settings'].get('source_store')}): "
            "pass the episode store it was made from."
        )
    rng = np.random.default_rng(seed)
    length = burn_in + horizon
    firsts, window_episodes = pick_windows(token_store, length, num_windows, val_fraction, split_seed, rng)
    rows = firsts[:, None] + np.arange(length)[None]  # (N, L)
    real_tokens = torch.from_numpy(token_store.observations(rows)).long()
    real_frames = torch.from_numpy(frame_store.observations(rows))
    actions = torch.from_numpy(token_store.columns.action[rows])
    errors, imagined = rollout_errors(
        agent, real_tokens, real_frames, actions, burn_in, temperature, torch.Generator().manual_seed(seed)
    )
    per_horizon = summarize(errors, window_episodes, list(range(1, horizon + 1)), seed=seed)

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(min(pictures, len(imagined))):
        name = f"episode{int(window_episodes[i]):05d}-row{int(firsts[i])}"
        _save_strip(folder / f"{name}.png", real_frames[i, burn_in:], imagined[i])
        _save_gif(folder / f"{name}.gif", real_frames[i, burn_in:], imagined[i])
    metrics = {
        "windows": len(firsts),
        "episodes": int(len(np.unique(window_episodes))),
        "burn_in": burn_in,
        "horizon": horizon,
        "temperature": temperature,
        "dynamic_levels": DYNAMIC_LEVELS,
        "per_horizon": per_horizon,
        "reported": {f"h{row['horizon']}": row for row in per_horizon if row["horizon"] in REPORTED_HORIZONS},
    }
    if errors.disagreement is not None:  # an ensemble: its members' mean disagreement per horizon (nats)
        metrics["disagreement_per_horizon"] = {name: v.mean(0).tolist() for name, v in errors.disagreement.items()}
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics


def _grid(real: torch.Tensor, imagined: torch.Tensor) -> np.ndarray:
    """Real frames (top row) over imagined frames (bottom row): (2H, T*W, 3) uint8."""
    from einops import rearrange

    return rearrange(torch.stack([real, imagined]), "row t c h w -> (row h) (t w) c").numpy()


def _save_strip(path: Path, real: torch.Tensor, imagined: torch.Tensor) -> None:
    from PIL import Image

    Image.fromarray(_grid(real, imagined)).save(path)


def _save_gif(path: Path, real: torch.Tensor, imagined: torch.Tensor) -> None:
    """Side-by-side animation: real on the left, imagined on the right, upscaled 3x."""
    from PIL import Image

    pages = [
        Image.fromarray(np.concatenate([r, i], axis=2).transpose(1, 2, 0))
        for r, i in zip(real.numpy(), imagined.numpy(), strict=True)
    ]
    pages = [p.resize((p.width * 3, p.height * 3), Image.NEAREST) for p in pages]
    pages[0].save(path, save_all=True, append_images=pages[1:], duration=200, loop=0)
