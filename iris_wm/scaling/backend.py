"""The torch side of the scaling harness: trains a trunk and its cooldown branches on a token store.

The loss is the world-model system's own (``WorldModelModule.compute_loss``), the schedule is transformers'
warmup-stable-decay with a ``1-sqrt`` decay, and every point is evaluated on the same fixed held-out windows
(episodes chosen by a seeded hash of their id, disjoint from training).

Resuming: the trunk's model and optimiser state are saved at each fork (``<out>/trunks/<key>.pt``, written
atomically, read with ``weights_only=True``), and the data order is a pure function of (seed, step), so a
rerun after a crash continues from the last fork instead of the start of the trunk.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm
from transformers import get_wsd_schedule

from iris_wm.data.store import open_store, require_token_store
from iris_wm.data.windows import WindowDataset, split_episodes
from iris_wm.runtime.errors import ConfigError
from iris_wm.runtime.files import torch_bytes, write_atomic
from iris_wm.runtime.provenance import provenance
from iris_wm.train.steps import optimizer_steps
from scaling.spec import Series, Size, SweepSpec
from scaling.sweep import Branch, Trunk
from sequence_model.gpt import GPTConfig
from sequence_model.metrics import bits_per_frame
from sequence_model.module import WorldModelModule, parameter_groups
from sequence_model.world_model import WorldModelConfig

GRAD_CLIP = 1.0  # global gradient-norm clip, as IRIS's world-model training


class _Data:
    """A token store split once: training windows, and the fixed held-out windows every run is scored on."""

    def __init__(self, series: Series, spec: SweepSpec):
        store = require_token_store(open_store(series.store), "the scaling sweep")
        self.store = store
        train, val = split_episodes(store, spec.val_fraction, spec.split_seed)
        if len(val) == 0 or len(train) == 0:
            raise ConfigError(
                f"{series.store}: {store.num_episodes} episode(s) cannot be split into training and "
                "held-out episodes; collect more episodes."
            )
        self.train = WindowDataset(store, train, spec.context_steps, "right")
        held_out = WindowDataset(store, val, spec.context_steps, "right")
        count = min(spec.eval_windows, len(held_out))
        chosen = np.linspace(0, len(held_out) - 1, count).round().astype(int)
        chunks = np.array_split(chosen, max(1, math.ceil(count / spec.eval_batch_size)))
        self.eval_batches = [held_out.__getitems__(chunk) for chunk in chunks]
        self.tokens_per_frame = int(store.spec.shape[0])
        self.vocab_size = int(store.manifest["settings"]["vocab_size"])
        self.train_steps = int(store.episode_lengths[train].sum())
        self._perm: tuple[tuple[int, int], np.ndarray] | None = None  # the current epoch's permutation
        shards = [s["sha256"] for s in store.manifest["shards"]]
        self.digest = hashlib.blake2b(json.dumps([shards, list(map(int, val))]).encode(), digest_size=8).hexdigest()

    def batch(self, seed: int, step: int, batch_size: int):
        """The training batch of ``step``: epoch-wise permutations seeded by (seed, epoch), so any step's batch
        can be rebuilt without replaying the ones before it."""
        n = len(self.train)
        start = step * batch_size
        idx = []
        while len(idx) < batch_size:
            epoch, offset = divmod(start + len(idx), n)
            perm = self._permutation(seed, epoch, n)
            idx.extend(perm[offset : offset + batch_size - len(idx)].tolist())
        return self.train.__getitems__(idx)

    def _permutation(self, seed: int, epoch: int, n: int) -> np.ndarray:
        if self._perm is None or self._perm[0] != (seed, epoch):
            self._perm = ((seed, epoch), np.random.default_rng([seed, epoch]).permutation(n))
        return self._perm[1]


class TorchBackend:
    """Implements :class:`scaling.sweep.Backend` with the iris-wm world model on CPU or one GPU."""

    def __init__(self, device: str = "cpu", progress: bool | None = None):
        self.device = torch.device(device)
        self.progress = progress
        self._data: dict[str, _Data] = {}

    def data(self, series: Series, spec: SweepSpec) -> _Data:
        if series.name not in self._data:
            self._data[series.name] = _Data(series, spec)
        return self._data[series.name]

    def config(self, series: Series, size: Size, spec: SweepSpec) -> WorldModelConfig:
        data = self.data(series, spec)
        gpt = GPTConfig(
            num_layers=size.num_layers, num_heads=size.num_heads, embed_dim=size.embed_dim, dropout=spec.dropout
        )
        return WorldModelConfig(
            vocab_size=data.vocab_size,
            tokens_per_frame=data.tokens_per_frame,
            num_actions=data.store.num_actions,
            context_steps=spec.context_steps,
            gpt=gpt,
        )

    def describe(self, series: Series, size: Size, spec: SweepSpec) -> dict:
        data = self.data(series, spec)
        cfg = self.config(series, size, spec)
        with torch.device("meta"):
            model = WorldModelModule(cfg).world_model
        return {
            "params": model.num_parameters(),
            "params_non_embedding": model.num_parameters(non_embedding=True),
            "flops_per_token": model.flops_per_token(),
            "tokens_per_step": spec.batch_size * cfg.gpt.max_tokens,
            "unique_tokens": data.train_steps * cfg.tokens_per_block,
            "tokens_per_frame": data.tokens_per_frame,
            "vocab_size": data.vocab_size,
            "store_digest": data.digest,
        }

    # ------------------------------------------------------------------ training
    def train(self, trunk: Trunk, spec: SweepSpec, out: Path, on_point) -> None:
        data = self.data(trunk.series, spec)
        torch.manual_seed(trunk.seed)
        system = WorldModelModule(self.config(trunk.series, trunk.size, spec)).to(self.device)
        optimizer = self._optimizer(system, trunk.learning_rate, spec)
        branches = sorted(trunk.branches, key=lambda b: b.fork)
        ckpt = Path(out) / "trunks" / f"{trunk.key}.pt"
        step = self._resume(ckpt, system, optimizer, branches[0].fork)
        schedule = trunk_schedule(optimizer, spec.warmup_steps, step)
        total = branches[-1].fork - step + sum(b.cooldown for b in branches)
        # progress None: a bar only on a terminal (tqdm's disable=None).
        disable = None if self.progress is None else not self.progress
        bar = tqdm(total=total, desc=f"{trunk.size.label} seed {trunk.seed}", leave=False, disable=disable, unit="step")
        started = time.monotonic()
        for branch in branches:
            self._steps(system, optimizer, schedule, data, trunk, spec, step, branch.fork, bar)
            step = branch.fork
            self._save(ckpt, system, optimizer, step)
            on_point(branch, self._branch(system, optimizer, data, trunk, spec, branch, bar, started))
        bar.close()
        ckpt.unlink(missing_ok=True)  # every branch of the trunk is recorded

    def _optimizer(self, system, lr: float, spec: SweepSpec) -> torch.optim.Optimizer:
        groups = parameter_groups(system.world_model, spec.weight_decay)
        for g in groups:
            g["initial_lr"] = lr  # lets a schedule start at any step (last_epoch)
        # fused: one kernel for all parameters; the per-tensor loop cost more than the arithmetic for small models.
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), fused=True)

    def _branch(self, system, optimizer, data, trunk, spec, branch: Branch, bar, started) -> dict:
        """Copy the trunk at the fork, decay the learning rate to 0 over the cooldown, evaluate."""
        model = copy.deepcopy(system)
        opt = self._optimizer(model, trunk.learning_rate, spec)
        # A deep copy: load_state_dict keeps the very tensors it is given on the same device, and the branch's
        # steps would then advance the trunk's Adam moments too (the resume test caught this).
        opt.load_state_dict(copy.deepcopy(optimizer.state_dict()))
        schedule = branch_schedule(opt, spec.warmup_steps, branch)
        losses = self._steps(model, opt, schedule, data, trunk, spec, branch.fork, branch.steps, bar)
        measured = self.evaluate(model, data, spec)
        tail = losses[-max(1, len(losses) // 5) :]
        measured.update(
            train_loss=float(np.mean(tail)) if tail else None,
            wall_s=time.monotonic() - started,
            device=str(self.device),
            provenance=provenance(),
        )
        return measured

    def _steps(self, system, optimizer, schedule, data, trunk, spec, start: int, stop: int, bar) -> list[float]:
        system.train()
        bf16 = spec.precision == "bf16"
        history = optimizer_steps(
            lambda batch: (system.compute_loss(batch).total, {}),
            lambda i: _to(data.batch(trunk.seed, start + i, spec.batch_size), self.device),
            optimizer,
            stop - start,
            what=f"{trunk.size.label} training",
            first_step=start,
            kept="the points recorded so far are kept",
            fix=f"Lower the learning rate (now {trunk.learning_rate:.3g}).",
            scheduler=schedule,
            max_grad_norm=GRAD_CLIP,
            params=[p for p in system.parameters() if p.requires_grad],
            autocast=(lambda: torch.autocast(self.device.type, dtype=torch.bfloat16)) if bf16 else nullcontext,
            after_step=lambda i: bar.update(1),
        )
        return [float(x) for x in history.get("loss", [])]  # one host transfer per stretch, not per step

    @torch.no_grad()
    def evaluate(self, system, data: _Data, spec: SweepSpec) -> dict:
        """Pooled means over the fixed held-out windows: observation CE (nats/token, bits/frame), reward and
        termination losses."""
        system.eval()
        sums = torch.zeros(5, dtype=torch.float64)  # CE, reward and termination sums; target and step counts
        for batch in data.eval_batches:
            losses = system.compute_loss(_to(batch, self.device))
            n_obs, n_steps = losses.observation_targets.double(), losses.steps.double()
            sums += torch.stack(
                [
                    losses.observation.double() * n_obs,
                    losses.reward.double() * n_steps,
                    losses.termination.double() * n_steps,
                    n_obs,
                    n_steps,
                ]
            ).cpu()
        ce_sum, reward_sum, end_sum, targets, steps = sums.tolist()
        ce = ce_sum / targets
        return {
            "val_obs_ce": ce,
            "val_bits_per_frame": float(bits_per_frame(ce, data.tokens_per_frame)),
            "val_reward_loss": reward_sum / steps,
            "val_termination_loss": end_sum / steps,
            "val_targets": int(targets),
            "val_windows": sum(len(b) for b in data.eval_batches),
        }

    # ------------------------------------------------------------------ trunk checkpoints
    def _save(self, path: Path, system, optimizer, step: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(
            path, torch_bytes({"step": step, "model": system.state_dict(), "optimizer": optimizer.state_dict()})
        )

    def _resume(self, path: Path, system, optimizer, first_fork: int) -> int:
        if not path.exists():
            return 0
        state = torch.load(path, map_location=self.device, weights_only=True)
        if state["step"] > first_fork:
            return 0  # saved past the first point still to run: start the trunk again
        system.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        return int(state["step"])


def trunk_schedule(optimizer, warmup: int, step: int = 0):
    """Linear warmup, then constant: the trunk's learning rate, continuing from ``step``."""
    return get_wsd_schedule(optimizer, warmup, num_decay_steps=0, num_stable_steps=10**12, last_epoch=step - 1)


def branch_schedule(optimizer, warmup: int, branch: Branch):
    """The trunk's schedule up to the fork, then (1 - sqrt) decay to 0 over the cooldown (Hägele et al. 2024),
    continuing from the fork step."""
    return get_wsd_schedule(
        optimizer,
        warmup,
        num_decay_steps=branch.cooldown,
        num_stable_steps=max(0, branch.fork - warmup),
        decay_type="1-sqrt",
        last_epoch=branch.fork - 1,
    )


def _to(batch, device: torch.device):
    if device.type == "cpu":
        return batch
    return type(batch)(**{k: v.to(device, non_blocking=True) for k, v in vars(batch).items()})
