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
from iris_wm.data.windows import split_episodes
from iris_wm.envs.imagination import ImaginationConfig
from iris_wm.hub.checkpoints import load_model
from iris_wm.runtime.checks import at_least, output_folder, within
from iris_wm.runtime.errors import ConfigError
from tokenizer.module import psnr

REPORTED_HORIZONS = (1, 5, 10, 20)


def _choose(
    tokens: TokenStore, length: int, count: int, val_fraction: float, split_seed: int, rng: np.random.Generator
) -> list[tuple[int, int]]:
    """(first row, episode position) of up to ``count`` held-out windows of ``length`` steps."""
    _, val = split_episodes(tokens, val_fraction, split_seed)
    long_enough = [p for p in val if tokens.episode_lengths[p] >= length]
    if not long_enough:
        raise ConfigError(
            f"No validation episode has the {length} steps that burn_in + horizon need "
            f"(longest: {int(tokens.episode_lengths[val].max()) if len(val) else 0}). Lower --horizon or --burn_in."
        )
    picks = []
    for position in long_enough[:count]:
        offset = int(rng.integers(0, tokens.episode_lengths[position] - length + 1))
        picks.append((int(tokens.episode_starts[position]) + offset, int(position)))
    return picks


@torch.no_grad()
def imagine(
    world_model: str,
    tokenizer: str,
    episodes: str,
    tokens: str,
    out: str,
    burn_in: int = 4,
    horizon: int = 20,
    num_episodes: int = 8,
    temperature: float = 1.0,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    seed: int = 0,
) -> dict:
    """Imagine held-out episodes from real context and compare with what really happened.

    Args:
        world_model: the world model: a checkpoint of its stage, a pretrained (or agent) folder, or a Hub id.
        tokenizer: the tokenizer whose token store the world model trained on (the same kinds of source).
        episodes: the episode store (real frames).
        tokens: the token store made from it (real tokens).
        out: folder for the strips, GIFs and metrics.json.
        burn_in: real steps that prime the world model before imagining.
        horizon: imagined steps, following the real actions.
        num_episodes: held-out episodes to imagine (one window each).
        temperature: sampling temperature of observation tokens (0: argmax).
        val_fraction: validation share used when the world model was trained (held-out episodes only).
        split_seed: split seed used when the world model was trained.
        seed: seed of the window offsets and of sampling.
    """
    at_least(1, "imagine", burn_in=burn_in, horizon=horizon, num_episodes=num_episodes)
    at_least(0, "imagine", temperature=temperature, seed=seed, split_seed=split_seed)
    within(0, 1, "imagine", val_fraction=val_fraction)
    output_folder(out, "output folder")
    agent = Agent(load_model(tokenizer, "tokenizer"), load_model(world_model, "world_model"))
    wm, tok = agent.world_model, agent.tokenizer
    token_store, frame_store = TokenStore.open(tokens), EpisodeStore.open(episodes)
    check_tokenizer(token_store, tok)
    check_sizes(world_model=wm, token_store=token_store)
    lengths = token_store.episode_lengths
    if not np.array_equal(frame_store.episode_lengths[: len(lengths)], lengths):
        raise ConfigError(
            f"The token store {tokens} was not encoded from the episode store {episodes} (their "
            f"episodes differ; it names {token_store.manifest['settings'].get('source_store')}): "
            "pass the episode store it was made from."
        )
    rng = np.random.default_rng(seed)
    length = burn_in + horizon
    picks = _choose(token_store, length, num_episodes, val_fraction, split_seed, rng)
    rows = np.stack([np.arange(first, first + length) for first, _ in picks])  # (N, L)
    real_tokens = torch.from_numpy(token_store.observations(rows)).long()
    real_frames = torch.from_numpy(frame_store.observations(rows))
    actions = torch.from_numpy(token_store.columns.action[rows])

    env = agent.imagination(ImaginationConfig(temperature=temperature), torch.Generator().manual_seed(seed))
    env.reset(real_tokens[:, :burn_in], actions[:, : burn_in - 1])
    imagined_frames, accuracy, frame_psnr, recon_psnr = [], [], [], []
    for h in range(horizon):
        step = env.step(actions[:, burn_in - 1 + h])
        truth = real_tokens[:, burn_in + h]
        frames = tok.decode(step.tokens)
        imagined_frames.append(frames)
        accuracy.append((step.tokens == truth).float().mean().item())
        frame_psnr.append(psnr(frames, real_frames[:, burn_in + h]).mean().item())
        recon_psnr.append(psnr(tok.decode(truth), real_frames[:, burn_in + h]).mean().item())

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    imagined = torch.stack(imagined_frames, 1)  # (N, H, 3, h, w)
    for i, (first, position) in enumerate(picks):
        _save_strip(folder / f"episode{position:05d}-row{first}.png", real_frames[i, burn_in:], imagined[i])
        _save_gif(folder / f"episode{position:05d}-row{first}.gif", real_frames[i, burn_in:], imagined[i])
    metrics = {
        "episodes": len(picks),
        "burn_in": burn_in,
        "horizon": horizon,
        "temperature": temperature,
        "per_horizon": [
            {
                "horizon": h + 1,
                "token_accuracy": accuracy[h],
                "frame_psnr": frame_psnr[h],
                "tokenizer_psnr": recon_psnr[h],
            }
            for h in range(horizon)
        ],
        "reported": {
            f"h{h}": {"token_accuracy": accuracy[h - 1], "frame_psnr": frame_psnr[h - 1]}
            for h in REPORTED_HORIZONS
            if h <= horizon
        },
    }
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
