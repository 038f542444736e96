"""Data parallelism of the online loop (``--run.devices N``): N Fabric DDP processes (gloo on CPU, NCCL on GPUs).

The choice, and why: **rank 0 collects**, alone, with the one policy and emulator of the run, and appends the
epoch's episodes to the one store; the other ranks wait for it at a barrier and then read the store again. Every
rank then trains the three components on windows drawn by its own sampler from that store, and the gradients are
averaged across ranks before each optimiser step, so the weights stay identical on every rank (one global batch is
``devices`` times a rank's). Collection is a small share of an epoch (IRIS: 200 real steps against 3 x 200
optimiser steps), and one collector keeps the run's episodes, the emulator's state and the checkpoint exactly those
of a single process's collection. Rank 0 writes the checkpoint, the metrics and the media; each rank's random
state (its sampler, torch's generators) is gathered into the checkpoint, so a killed run resumes exactly, with the
same number of processes.

Ranks 1..N-1 are started by Fabric running ``python -m iris_wm.cli run --config <out>/launch.yaml``: the run's own
config, written by rank 0, so a run started from Python starts its other ranks the same way.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import torch
import yaml

from iris_wm.runtime.files import plain_json


def launch(fabric, config, out: Path) -> None:
    """Start the other ranks of ``fabric`` (no-op on one device, or in a rank that was started by a launch)."""
    if fabric.world_size == 1:
        return
    import __main__

    path = Path(out) / "launch.yaml"
    if fabric.global_rank == 0 and not _launched():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump({"run": plain_json(config)}, sort_keys=False))
    saved = sys.argv, getattr(__main__, "__spec__", None)
    sys.argv = ["iris-wm", "run", "--config", str(path)]
    __main__.__spec__ = importlib.util.find_spec("iris_wm.cli.__main__")
    try:
        fabric.launch()
    finally:
        sys.argv, __main__.__spec__ = saved


def _launched() -> bool:
    return "LOCAL_RANK" in os.environ and os.environ.get("LOCAL_RANK") != "0"


class Ranks:
    """What the loop asks of its processes: who it is, waiting for rank 0, averaging gradients and figures,
    gathering and handing out per-rank state."""

    def __init__(self, fabric):
        self.fabric = fabric
        self.world, self.rank = fabric.world_size, fabric.global_rank

    @property
    def zero(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            self.fabric.barrier()

    def average_gradients(self, params) -> None:
        """The mean of every gradient over the ranks, in one all-reduce of a flat buffer."""
        if self.world == 1:
            return
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        torch.distributed.all_reduce(flat)
        flat /= self.world
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        if self.world == 1:
            return value
        value = value.clone()
        torch.distributed.all_reduce(value)
        return value / self.world

    def gather(self, state) -> list | None:
        """Every rank's ``state`` on rank 0 (in rank order), None elsewhere."""
        if self.world == 1:
            return [state]
        out = [None] * self.world if self.zero else None
        torch.distributed.gather_object(state, out, dst=0)
        return out
