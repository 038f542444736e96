"""`iris-wm run`: the online IRIS loop (Micheli et al. 2023, algorithm 1 and appendix B).

Each epoch collects ``collection.steps_per_epoch`` real steps with the current policy, then trains the
tokenizer, the world model and the actor-critic for their own number of steps, each once its start epoch
has passed (IRIS: 200 steps of each, starting after epochs 5, 25 and 50, for 600 epochs). Every component
trains through the same ``loss(batch)`` as its Lightning system. Lightning Fabric places the models and
runs autocast and backward; the loop itself is plain so that every piece of state can be saved.

Crash safety. After every epoch one checkpoint holds the whole run: weights, optimisers, schedules, step
counters, every random generator, the emulator's state and the unfinished episode, the token cache and the
number of store shards it has seen. Episodes are appended to the store once per epoch, before the
checkpoint; on resume, shards the checkpoint does not know of (an epoch that crashed after appending) are
rolled back and collected again, identically. A resumed run so reaches the state of an uninterrupted one,
bitwise on CPU (tests/reliability/test_loop_faults.py kills a run with SIGKILL mid-epoch and compares).

The world model and the agent read tokens from a cache of the whole store: new rows are encoded as they
arrive, and everything is re-encoded with the current tokenizer every ``reencode_every_epochs`` epochs in
which it has changed (IRIS re-encodes every sampled frame of every batch instead).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch

from iris_wm.agent.bundle import Agent
from iris_wm.agent.module import ActorCriticModule
from iris_wm.data.episode import EpisodeBuffer
from iris_wm.data.store import EpisodeStore
from iris_wm.data.tokens import encode_store
from iris_wm.data.windows import WindowDataset
from iris_wm.envs.atari import env_snapshot, make_env, resolve_game_id
from iris_wm.hub.pretrained import save_agent
from iris_wm.runtime.checks import output_folder
from iris_wm.runtime.errors import ConfigError
from iris_wm.runtime.faults import maybe_fault
from iris_wm.runtime.files import FolderLock, plain_json
from iris_wm.runtime.hardware import effective_precision
from iris_wm.runtime.rng import global_rng_state
from iris_wm.train.loop.config import RunConfig
from iris_wm.train.loop.media import write_media
from iris_wm.train.loop.parallel import Ranks, launch
from iris_wm.train.loop.state import (
    LoopLog,
    checkpoint_path,
    load_checkpoint,
    resume,
    save_checkpoint,
    start_without_checkpoint,
)
from iris_wm.train.steps import optimizer_steps
from sequence_model.module import WorldModelModule
from tokenizer.module import TokenizerModule

COMPONENTS = ("tokenizer", "world_model", "agent")


class OnlineLoop:
    """Builds or resumes the run in ``config.out`` and trains it to ``config.epochs``."""

    def __init__(self, config: RunConfig):
        from lightning.fabric import Fabric

        self.config = cfg = dataclasses.replace(
            config, env=dataclasses.replace(config.env, game=resolve_game_id(config.env.game))
        )
        precision, note = effective_precision(cfg.precision, cfg.device)
        if note:
            print(f"iris-wm run: {note}", file=sys.stderr)
        strategy = "ddp" if cfg.devices > 1 else "auto"
        self.fabric = Fabric(accelerator=cfg.device, devices=cfg.devices, strategy=strategy, precision=precision)
        self.out = output_folder(cfg.out, "run folder")
        self.out.mkdir(parents=True, exist_ok=True)
        launch(self.fabric, self.config, self.out)
        self.ranks = Ranks(self.fabric)
        # One process runs a run folder at a time (rank 0 of a data-parallel run): the lock is held until run()
        # returns (or construction fails).
        self._lock = FolderLock(self.out, "run")
        if self.ranks.zero:
            self._lock.acquire()
        try:
            self._build()
        except BaseException:
            self._lock.release()
            raise

    def _build(self) -> None:
        cfg = self.config
        # What the run folder holds is read (and refused if damaged) before anything is created in it.
        self.log = LoopLog(self.out)
        self.log.rows()
        self._saved = load_checkpoint(self.out)
        torch.manual_seed(cfg.seed)
        self.env = make_env(cfg.env)
        num_actions = int(self.env.action_space.n)
        if self.ranks.zero:
            self.store = EpisodeStore.open_or_create(
                self.out / "episodes",
                EpisodeStore.frame_spec(cfg.env.size),
                num_actions,
                {"env": cfg.env.to_dict(), "loop": True},
            )
        self.modules = self._build_modules(num_actions)
        self.optimizers, self.schedulers = {}, {}
        for name, module in self.modules.items():
            module.to(self.fabric.device)
            self.optimizers[name], self.schedulers[name] = _optimizer(module)
        self.agent = Agent(self.tokenizer, self.world_model, self.modules["agent"].actor_critic)
        generator = torch.Generator(self.fabric.device).manual_seed(cfg.seed)
        self.policy = self.agent.policy(cfg.collection.temperature, cfg.collection.epsilon, generator)
        # Each rank draws its own windows (rank 0 those of a single process); dropout differs by rank too.
        self.sampler = np.random.default_rng(cfg.seed if self.ranks.zero else [cfg.seed, self.ranks.rank])
        if not self.ranks.zero:
            torch.manual_seed(cfg.seed + 1000 * self.ranks.rank)
        self.steps = dict.fromkeys(COMPONENTS, 0)
        self.epoch = 0
        K = cfg.tokenizer.tokens_per_frame
        self.tokens = np.zeros((0, K), np.int64)  # token cache, one row per store row
        self.tokens_version = -1  # tokenizer steps at the last full encoding
        self._start_environment()
        self._resume()
        self._reopen_store()

    # ------------------------------------------------------------------ construction
    @property
    def tokenizer(self):
        return self.modules["tokenizer"].tokenizer

    @property
    def world_model(self):
        return self.modules["world_model"].world_model

    def _build_modules(self, num_actions: int) -> dict:
        cfg = self.config
        t, w, a = cfg.tokenizer_training, cfg.world_model_training, cfg.agent_training
        tok = TokenizerModule(cfg.tokenizer, learning_rate=t.learning_rate, **t.module_args)
        K, V = cfg.tokenizer.tokens_per_frame, cfg.tokenizer.vocab_size
        wm_config = dataclasses.replace(cfg.world_model, vocab_size=V, tokens_per_frame=K, num_actions=num_actions)
        wm = WorldModelModule(wm_config, learning_rate=w.learning_rate, **w.module_args)
        ac_config = dataclasses.replace(
            cfg.actor_critic, num_actions=num_actions, vocab_size=V, tokens_per_frame=K, frame_size=cfg.env.size
        )
        agent = ActorCriticModule(
            ac_config,
            objective=cfg.objective,
            burn_in=cfg.burn_in,
            prime_steps=cfg.prime_steps,
            learning_rate=a.learning_rate,
            **a.module_args,
        )
        agent.attach(wm.world_model, tok.tokenizer, frozen=False)
        return {"tokenizer": tok, "world_model": wm, "agent": agent}

    def _reopen_store(self) -> None:
        """Ranks other than 0 read the store once rank 0 has written (created, rolled back, appended to) it."""
        self.ranks.barrier()
        if not self.ranks.zero:
            self.store = EpisodeStore.open(self.out / "episodes", verify="size")

    def _start_environment(self) -> None:
        self.obs, _ = self.env.reset(seed=self.config.seed)
        self.episode = EpisodeBuffer()

    # ------------------------------------------------------------------ checkpoint
    def _trainable(self, name: str) -> torch.nn.Module:
        agent = self.modules["agent"]
        if name != "agent":
            return self.modules[name]
        return torch.nn.ModuleDict(
            {
                "actor_critic": agent.actor_critic,
                **({"target_critic": agent.target_critic} if agent.target_critic is not None else {}),
            }
        )

    def state(self) -> dict | None:
        """The whole run, on rank 0 (None on the others, once they have handed it their random state)."""
        ranks = self.ranks.gather({**global_rng_state(), "sampler": self.sampler.bit_generator.state})
        if ranks is None:
            return None
        return {
            "format": 1,
            "config": plain_json(self.config),
            "epoch": self.epoch,
            "steps": dict(self.steps),
            "store_shards": len(self.store.manifest["shards"]),
            "modules": {n: self._trainable(n).state_dict() for n in COMPONENTS},
            "optimizers": {n: o.state_dict() for n, o in self.optimizers.items()},
            "schedulers": {n: s.state_dict() for n, s in self.schedulers.items() if s is not None},
            "rng": {
                **global_rng_state(),
                "policy": self.policy.generator.get_state(),
                "sampler": self.sampler.bit_generator.state,
            },
            "env": env_snapshot(self.env),
            "obs": torch.from_numpy(self.obs.copy()),
            "episode": {k: torch.from_numpy(np.asarray(v)) for k, v in vars(self.episode).items()},
            "policy_state": self.policy.state,
            "tokens": torch.from_numpy(self.tokens),
            "tokens_version": self.tokens_version,
            "ranks": ranks[1:],
        }

    def _resume(self) -> None:
        saved, self._saved = self._saved, None
        if saved is None:
            start_without_checkpoint(self)
        else:
            resume(self, saved)

    # ------------------------------------------------------------------ the epoch
    def run(self) -> dict:
        """Train to ``config.epochs``; returns the last epoch's metrics. The run folder stays locked until then."""
        if self._lock.handle is None and self.ranks.zero:
            self._lock.acquire()
        try:
            return self._run()
        finally:
            self._lock.release()

    def _run(self) -> dict:
        from tqdm.auto import tqdm

        cfg = self.config
        bar = tqdm(total=cfg.epochs, initial=self.epoch, desc="iris-wm run", unit="epoch", disable=not self.ranks.zero)
        row = {}
        while self.epoch < cfg.epochs:
            epoch = self.epoch + 1
            start = time.perf_counter()
            stop = cfg.collection.stop_after_epochs
            collecting = stop is None or epoch <= stop
            row = {"epoch": epoch, **(self.collect(epoch) if collecting and self.ranks.zero else {})}
            if collecting:
                self._reopen_store()
            for name in COMPONENTS:
                training = getattr(cfg, f"{name}_training")
                if epoch > training.start_after_epochs and training.steps_per_epoch > 0:
                    row.update(self.train_component(name, epoch))
            if cfg.media_every_epochs and epoch % cfg.media_every_epochs == 0 and self.ranks.zero:
                write_media(self, epoch)
            self.epoch = epoch
            row.update({"seconds": time.perf_counter() - start, **{f"steps/{k}": v for k, v in self.steps.items()}})
            state = self.state()  # collective under data parallelism (the ranks' random states)
            if self.ranks.zero:
                save_checkpoint(self.out, state)
                self.log.write(row)
            bar.update(1)
            bar.set_postfix({k: f"{v:.3g}" for k, v in row.items() if k in ("collect/return", "agent/imagined_return")})
        bar.close()
        return row

    def collect(self, epoch: int) -> dict:
        """Real steps with the current policy; finished episodes go to the store in one append."""
        self.tokenizer.eval()
        self.modules["agent"].actor_critic.eval()
        finished = []
        for i in range(self.config.collection.steps_per_epoch):
            maybe_fault(f"{epoch}:collect:{i}")
            new = np.array([len(self.episode) == 0])
            action = int(self.policy.act(self.obs[None], new)[0])
            next_obs, reward, terminated, truncated, _ = self.env.step(action)
            self.episode.add(self.obs, action, float(reward), bool(terminated), bool(truncated))
            self.obs = next_obs
            if terminated or truncated:
                finished.append(self.episode.to_episode())
                self.episode = EpisodeBuffer()
                self.obs, _ = self.env.reset()
        if finished:
            self.store.append(finished)
        returns = [float(e.rewards.sum()) for e in finished]
        mean = float(np.mean(returns)) if returns else float("nan")
        return {"collect/episodes": len(finished), "collect/return": mean, "collect/store_steps": self.store.num_steps}

    # ------------------------------------------------------------------ training
    def train_component(self, name: str, epoch: int) -> dict:
        training = getattr(self.config, f"{name}_training")
        module, optimizer, scheduler = self.modules[name], self.optimizers[name], self.schedulers[name]
        data = self._windows(name)
        if len(data) == 0:
            return {f"{name}/skipped": 1.0}
        if name == "tokenizer" and self.steps[name] == 0:
            self._init_background(data)
        if name != "tokenizer":
            self._refresh_tokens(epoch)
        module.train()
        if name == "agent":
            self.world_model.eval()
            self.tokenizer.eval()

        optimized = [p for group in optimizer.param_groups for p in group["params"]]

        def after_step(i: int) -> None:
            if name == "agent":
                module.update_target()
            self.steps[name] += 1

        history = optimizer_steps(
            module.loss,
            lambda i: self._batch(name, data, training.batch_size),
            optimizer,
            training.steps_per_epoch,
            what=name.replace("_", " "),
            first_step=self.steps[name],
            kept=f"the run stops, and {checkpoint_path(self.out)} keeps epoch {self.epoch}",
            scheduler=scheduler,
            max_grad_norm=training.max_grad_norm,
            autocast=self.fabric.autocast,
            backward=lambda loss: (self.fabric.backward(loss), self.ranks.average_gradients(optimized)),
            before_step=lambda i: maybe_fault(f"{epoch}:{name}:{i}"),
            after_step=after_step,
        )
        return {f"{name}/{k}": float(self.ranks.mean(torch.stack(v).mean())) for k, v in history.items()}

    def _windows(self, name: str) -> WindowDataset:
        episodes = np.arange(self.store.num_episodes)
        if name == "tokenizer":
            return WindowDataset(self.store, episodes, 1)
        if name == "world_model":
            return WindowDataset(self.store, episodes, self.world_model.config.context_steps, "right")
        return WindowDataset(self.store, episodes, self.config.burn_in, "left", complete=True)

    def _batch(self, name: str, data: WindowDataset, size: int):
        batch = data.__getitems__(self.sampler.integers(0, len(data), size))
        if name != "tokenizer":
            rows = batch.rows.numpy()
            batch.observations = torch.from_numpy(np.where(rows[..., None] >= 0, self.tokens[np.maximum(rows, 0)], 0))
        device = self.fabric.device
        return dataclasses.replace(
            batch,
            **{
                f.name: getattr(batch, f.name).to(device)
                for f in dataclasses.fields(batch)
                if getattr(batch, f.name) is not None
            },
        )

    @torch.no_grad()
    def _init_background(self, data: WindowDataset) -> None:
        module = self.modules["tokenizer"]
        wanted = module.hparams.init_background_frames
        if self.tokenizer.background is not None and wanted > 0:
            rows = self.sampler.choice(data.anchors, min(wanted, len(data)), replace=False)
            self.tokenizer.init_background(
                torch.from_numpy(self.store.observations(np.sort(rows))).to(self.fabric.device)
            )

    @torch.no_grad()
    def _refresh_tokens(self, epoch: int) -> None:
        """Encode new store rows; re-encode all of them on the cadence when the tokenizer has changed."""
        stale = self.tokens_version != self.steps["tokenizer"]
        every = max(1, self.config.reencode_every_epochs)
        first = 0 if stale and (self.tokens_version < 0 or epoch % every == 0) else len(self.tokens)
        if first == 0:
            self.tokens_version = self.steps["tokenizer"]
        if first >= self.store.num_steps:
            return
        self.tokenizer.eval()
        fresh = encode_store(
            self.tokenizer, self.store, first, device=self.fabric.device, autocast=self.fabric.autocast
        )
        self.tokens = np.concatenate([self.tokens[:first], fresh])

    def export_agent(self, folder: str | Path) -> Path:
        """Write the agent (tokenizer, world model, actor-critic) as a pretrained agent folder
        (:func:`~iris_wm.hub.pretrained.save_agent`), which evaluation and the Hub read."""
        if Path(folder).suffix == ".ckpt":
            raise ConfigError(
                f"{folder}: the agent is exported as a pretrained agent folder (configs, safetensors, a card), not "
                "a .ckpt file; give a folder path."
            )
        inputs = {"store": str(self.store.root.resolve()), "run": str(self.out.resolve()), "epoch": self.epoch}
        return save_agent(folder, self.agent, inputs=inputs)


def _optimizer(module):
    configured = module.configure_optimizers()
    if isinstance(configured, dict):
        return configured["optimizer"], configured.get("lr_scheduler", {}).get("scheduler")
    return configured, None
