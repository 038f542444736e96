"""Periodic pictures of the online run: tokenizer reconstructions and an imagined rollout of the agent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from PIL import Image

from iris_wm.agent.rollout import rollout


@torch.no_grad()
def write_media(loop, epoch: int, frames: int = 8) -> list[Path]:
    """``media/reconstructions-EPOCH.png`` (real over reconstructed) and ``media/imagined-EPOCH.gif`` (the
    policy acting in the world model from a real window). Nothing is written while the store is empty."""
    out = Path(loop.out) / "media"
    out.mkdir(parents=True, exist_ok=True)
    store, tokenizer, written = loop.store, loop.tokenizer, []
    if store.num_steps == 0:
        return written
    # Evenly spaced rows, so the picture does not consume the loop's random numbers.
    rows = np.linspace(0, store.num_steps - 1, frames).round().astype(int)
    real = torch.from_numpy(store.observations(rows)).to(loop.fabric.device)
    tokenizer.eval()
    pair = torch.stack([real, tokenizer.decode(tokenizer.encode(real))]).cpu()
    path = out / f"reconstructions-{epoch:04d}.png"
    Image.fromarray(rearrange(pair, "r b c h w -> (r h) (b w) c").numpy()).save(path)
    written.append(path)
    if len(loop.tokens) >= 1 and loop.steps["world_model"] > 0:
        written.append(_imagined_gif(loop, epoch, out))
    return written


def _imagined_gif(loop, epoch: int, out: Path) -> Path:
    agent, tokenizer = loop.modules["agent"], loop.tokenizer
    loop.world_model.eval()
    # A private generator: the picture must not change the run's random stream.
    generator = torch.Generator(loop.fabric.device).manual_seed(epoch)
    env = loop.agent.imagination(agent.objective.imagination, generator)
    start = torch.from_numpy(loop.tokens[-1:][:, None]).to(loop.fabric.device)  # the newest real frame
    current = env.reset(start)
    state = agent.actor_critic.initial_state(1, loop.fabric.device)
    imagined = rollout(agent.actor_critic, env, current, state, agent.objective.horizon, generator)
    pages = [tokenizer.decode(tokens) for tokens in imagined.tokens]
    images = [Image.fromarray(p[0].permute(1, 2, 0).cpu().numpy()).resize((192, 192), Image.NEAREST) for p in pages]
    path = out / f"imagined-{epoch:04d}.gif"
    images[0].save(path, save_all=True, append_images=images[1:], duration=200, loop=0)
    return path
