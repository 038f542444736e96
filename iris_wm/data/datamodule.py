"""`StoreDataModule`: windows of steps from an episode or token store, split into train and validation by episode."""

from __future__ import annotations

import functools

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler, Subset

from iris_wm.data.mixing import MixedWindows, check_mixable
from iris_wm.data.store import StepStore, TokenStore, Verify, open_store, require_token_store
from iris_wm.data.windows import Pad, WindowDataset, collate_batch, split_episodes
from iris_wm.runtime.checks import at_least, within
from iris_wm.runtime.errors import ConfigError


class ResumableRandomSampler(Sampler[int]):
    """A shuffled order that is a function of (seed, epoch) and starts past the batches already trained on.

    ``position()`` is read when iteration begins (the generator's body runs at the first ``next``, after
    Lightning has restored its counters from a checkpoint), so a run resumed mid-epoch continues with the
    very batch the interrupted run would have trained on next.

    Under data parallelism (``replicas`` processes) the order is the same on every rank and is cut into global
    batches of ``replicas * batch_size``; rank ``r`` takes the ``r``-th slice of each. One step of all ranks
    therefore sees exactly the windows one process would see at ``replicas`` times the batch, and a resumed run
    continues with the global batch the interrupted one would have taken next. An incomplete last global batch
    is left out there, so that every rank takes the same number of steps.
    """

    def __init__(self, size: int, seed: int, batch_size: int, position, replicas: int = 1, rank: int = 0):
        if not 0 <= rank < replicas:
            raise ValueError(f"rank {rank} is outside the {replicas} replicas.")
        self.size, self.seed, self.batch_size, self.position = size, seed, batch_size, position
        self.replicas, self.rank = replicas, rank

    def __len__(self) -> int:
        if self.replicas == 1:
            return self.size
        return self.size // (self.replicas * self.batch_size) * self.batch_size

    def __iter__(self):
        epoch, batches_done = self.position()
        # The order of torch's RandomSampler with a generator seeded once (which draws two permutations per
        # epoch and yields the first), so an uninterrupted run trains on exactly the batches it did before.
        generator = torch.Generator().manual_seed(self.seed)
        for _ in range(2 * epoch + 1):
            order = torch.randperm(self.size, generator=generator)
        if self.replicas == 1:
            yield from order[batches_done * self.batch_size :].tolist()
            return
        B, G = self.batch_size, self.replicas * self.batch_size
        usable = order[: self.size // G * G].view(-1, self.replicas, B)  # (global batches, ranks, B)
        yield from usable[batches_done:, self.rank].reshape(-1).tolist()


class StoreDataModule(L.LightningDataModule):
    """Serves :class:`~iris_wm.data.windows.StepBatch` windows from the store at ``root``."""

    def __init__(
        self,
        root: str,
        sequence_length: int = 1,
        batch_size: int = 64,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        shuffle_seed: int = 0,
        pad: Pad = "right",
        max_val_windows: int | None = None,
        complete_windows: bool = False,
        num_workers: int = 0,
        verify: Verify = "checksum",
        synthetic_root: str | None = None,
        synthetic_fraction: float = 0.0,
        bootstrap_seed: int | None = None,
    ):
        """
        Args:
            root: folder of an episode store (frames) or a token store.
            sequence_length: steps per window (1 for the tokenizer, which sees single frames).
            batch_size: windows per batch.
            val_fraction: share of episodes held out for validation (chosen by a hash of the episode id).
            split_seed: seed of the train/validation split.
            shuffle_seed: seed of the order of training windows.
            pad: windows start at their anchor step and pad past the episode end ("right"), or end there ("left").
            max_val_windows: validate on at most this many windows, evenly spaced over the validation set.
            complete_windows: serve only windows that lie wholly inside their episode (no padding).
            num_workers: DataLoader worker processes (0: load in the training process; the store is mmapped).
            verify: check every shard's checksum when opening ("checksum") or only its size ("size").
            synthetic_root: a store of imagined episodes (``iris-wm imagine --export``) to train on beside the real
                one; validation stays on real episodes only.
            synthetic_fraction: share of the training windows drawn from ``synthetic_root`` (0.5 to 0.8 is usual).
            bootstrap_seed: train on a bootstrap resample of the training episodes (as many, drawn with replacement
                with this seed; validation unchanged): members of an ensemble trained on different resamples
                disagree more where the data is thin. None: every training episode once.
        """
        super().__init__()
        at_least(1, "data", sequence_length=sequence_length, batch_size=batch_size, max_val_windows=max_val_windows)
        at_least(0, "data", num_workers=num_workers, split_seed=split_seed, shuffle_seed=shuffle_seed)
        at_least(0, "data", bootstrap_seed=bootstrap_seed)
        within(0, 1, "data", val_fraction=val_fraction)
        within(0, 0.99, "data", synthetic_fraction=synthetic_fraction)
        if (synthetic_root is None) != (synthetic_fraction == 0):
            raise ConfigError(
                "Synthetic data needs both --data.synthetic_root (the exported store) and --data.synthetic_fraction "
                f"above 0; got synthetic_root={synthetic_root!r} and synthetic_fraction={synthetic_fraction}. "
                "Give both, or neither to train on real data only."
            )
        self.save_hyperparameters()
        self.store: StepStore | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.store is not None:
            return
        hp = self.hparams
        self.store = open_store(hp.root, hp.verify)
        if self.store.num_episodes == 0:
            raise ConfigError(f"The store at {hp.root} holds no episodes; collect some into it first.", "collect")
        train, val = split_episodes(self.store, hp.val_fraction, hp.split_seed)
        if hp.get("bootstrap_seed") is not None:
            train = np.sort(np.random.default_rng(hp.bootstrap_seed).choice(train, size=len(train), replace=True))
        self.train_episodes, self.val_episodes = train, val
        self.train_set = WindowDataset(self.store, train, hp.sequence_length, hp.pad, hp.complete_windows)
        self.val_set = WindowDataset(self.store, val, hp.sequence_length, hp.pad, hp.complete_windows)
        self.predict_set = WindowDataset(self.store, np.arange(self.store.num_episodes), 1, "right")
        if hp.synthetic_root is not None:
            self.synthetic_store = open_store(hp.synthetic_root, hp.verify)
            check_mixable(self.store, self.synthetic_store)
            every = np.arange(self.synthetic_store.num_episodes)
            synthetic = WindowDataset(self.synthetic_store, every, hp.sequence_length, hp.pad, hp.complete_windows)
            self.train_set = MixedWindows(self.train_set, synthetic, hp.synthetic_fraction)

    @property
    def num_actions(self) -> int | None:
        """Discrete actions of the store (None where they are continuous: see ``action_dim``)."""
        self.setup()
        space = self.store.action_space
        return space.n if space.is_discrete else None

    @property
    def action_dim(self) -> int | None:
        """Components of the store's continuous actions (None where they are discrete)."""
        self.setup()
        space = self.store.action_space
        return None if space.is_discrete else space.size

    @property
    def action_low(self) -> list[float] | None:
        """Lower bounds of the store's continuous actions (None where they are discrete)."""
        self.setup()
        space = self.store.action_space
        return None if space.is_discrete else list(space.low)

    @property
    def action_high(self) -> list[float] | None:
        self.setup()
        space = self.store.action_space
        return None if space.is_discrete else list(space.high)

    @property
    def state_dim(self) -> int | None:
        """Components of the store's state column (None: the store has none)."""
        self.setup()
        return None if self.store.state is None else self.store.state.size

    @property
    def state_low(self) -> list[float] | None:
        """Lower end of each state component over the training episodes, with a margin (see :func:`state_range`)."""
        return None if self._state_range is None else self._state_range[0]

    @property
    def state_high(self) -> list[float] | None:
        return None if self._state_range is None else self._state_range[1]

    @functools.cached_property
    def _state_range(self) -> tuple[list[float], list[float]] | None:
        self.setup()
        return None if self.store.state is None else state_range(self.store, self.train_episodes)

    def _token_store(self) -> TokenStore:
        self.setup()
        return require_token_store(self.store, "the world model")

    @property
    def tokens_per_frame(self) -> int:
        """K, read from the token store (linked to the world model's config by the CLI)."""
        return int(self._token_store().spec.shape[0])

    @property
    def vocab_size(self) -> int:
        """The tokenizer's vocabulary, as the token store's manifest records it."""
        return int(self._token_store().manifest["settings"]["vocab_size"])

    def _replicas(self) -> tuple[int, int]:
        """(processes, this one's rank) of the trainer's data parallelism; (1, 0) without one."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 1, 0
        return trainer.world_size, trainer.global_rank

    def _loader(self, dataset, shuffle: bool) -> DataLoader:
        sampler = None
        if shuffle:
            replicas, rank = self._replicas()
            hp = self.hparams
            sampler = ResumableRandomSampler(
                len(dataset), hp.shuffle_seed, hp.batch_size, self._position, replicas, rank
            )
        return DataLoader(
            dataset,
            batch_size=self.hparams.batch_size,
            sampler=sampler,
            # Each new iterator draws a base seed; from its own generator it leaves the global random state
            # (dropout, sampling in imagination) alone, so validations do not shift a resumed run's stream.
            generator=torch.Generator().manual_seed(self.hparams.shuffle_seed),
            collate_fn=collate_batch,
            num_workers=self.hparams.num_workers,
            persistent_workers=self.hparams.num_workers > 0,
        )

    def _position(self) -> tuple[int, int]:
        """(epoch, batches of it already trained on), from the trainer's restored counters."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 0
        done = trainer.global_step * trainer.accumulate_grad_batches
        per_epoch = trainer.num_training_batches
        start = done - trainer.current_epoch * per_epoch if per_epoch not in (0, float("inf")) else 0
        return trainer.current_epoch, max(0, int(start))

    def train_dataloader(self) -> DataLoader:
        if len(self.train_set) == 0:
            raise ValueError(f"No training episodes in {self.hparams.root}: lower val_fraction or collect more.")
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        dataset = self.val_set
        cap = self.hparams.max_val_windows
        if cap is not None and len(dataset) > cap:
            dataset = Subset(dataset, np.linspace(0, len(dataset) - 1, cap).round().astype(int).tolist())
        return self._loader(dataset, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        replicas, rank = self._replicas()
        if replicas == 1:
            return self._loader(self.predict_set, shuffle=False)
        # Each rank encodes every replicas-th window; the token writer gathers them (on rank 0).
        return self._loader(Subset(self.predict_set, range(rank, len(self.predict_set), replicas)), shuffle=False)


def state_range(store: StepStore, episodes: np.ndarray, margin: float = 0.05) -> tuple[list[float], list[float]]:
    """Per state component, the range a world model discretises: the minimum and maximum over ``episodes``, each
    widened by ``margin`` of the span (held-out values a little beyond still get their own bins; further ones take
    the end bins); a component that never changes gets a span of 1 around its value."""
    rows = np.concatenate(
        [
            np.arange(s, s + n)
            for s, n in zip(store.episode_starts[episodes], store.episode_lengths[episodes], strict=True)
        ]
    )
    values = store.columns.state[rows].astype(np.float64)
    low, high = values.min(0), values.max(0)
    span = np.where(high > low, high - low, 1.0)
    low, high = (
        np.where(high > low, low - margin * span, low - 0.5),
        np.where(high > low, high + margin * span, high + 0.5),
    )
    return [float(v) for v in low], [float(v) for v in high]
