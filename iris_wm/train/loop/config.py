"""The settings of an online run (:class:`RunConfig`), and reading them from a command line or YAML."""

from __future__ import annotations

from dataclasses import dataclass, field

from iris_wm.agent.actor_critic import ActorCriticConfig
from iris_wm.agent.objective import AgentObjective
from iris_wm.envs.atari import EnvConfig
from iris_wm.runtime.checks import at_least, positive, within
from sequence_model.world_model import WorldModelConfig
from tokenizer.model import TokenizerConfig


@dataclass
class Training:
    """When and how much one component trains."""

    start_after_epochs: int = 0
    """The component trains in every epoch after this one."""
    steps_per_epoch: int = 200
    """Optimiser steps per epoch (IRIS: 200)."""
    batch_size: int = 64
    """Frames (tokenizer) or windows (world model, agent) per step."""
    learning_rate: float = 1e-4
    """Learning rate (IRIS: 1e-4 for all three)."""
    max_grad_norm: float | None = 10.0
    """Gradient-norm clipping (IRIS: 10); None disables."""
    module_args: dict = field(default_factory=dict)
    """Further arguments of the component's Lightning module (e.g. ``l2_weight`` of the tokenizer)."""

    def __post_init__(self):
        at_least(0, "training", start_after_epochs=self.start_after_epochs)
        at_least(1, "training", steps_per_epoch=self.steps_per_epoch, batch_size=self.batch_size)
        positive("training", learning_rate=self.learning_rate, max_grad_norm=self.max_grad_norm)


@dataclass
class Collection:
    steps_per_epoch: int = 200
    """Real environment steps per epoch (IRIS: 200)."""
    epsilon: float = 0.01
    """Probability of a uniformly random action (IRIS: 0.01)."""
    temperature: float = 1.0
    """Sampling temperature of the policy while collecting (IRIS: 1)."""
    stop_after_epochs: int | None = None
    """No collection after this epoch (IRIS: 500, i.e. 100k steps; training goes on to the last epoch)."""

    def __post_init__(self):
        at_least(1, "collection", steps_per_epoch=self.steps_per_epoch)
        at_least(0, "collection", stop_after_epochs=self.stop_after_epochs)
        within(0, 1, "collection", epsilon=self.epsilon)
        positive("collection", temperature=self.temperature)


def _training(start: int, batch: int) -> Training:
    return Training(start_after_epochs=start, batch_size=batch)


@dataclass
class RunConfig:
    """The whole online run. Defaults: the IRIS Atari 100k protocol (600 epochs of 200 steps)."""

    out: str = "runs/iris"
    """Folder of the run: episodes, checkpoints, metrics, media."""
    epochs: int = 600
    """Epochs to reach; rerunning with more continues the run."""
    seed: int = 0
    """Seed of everything: environment, sampling, initialisation."""
    device: str = "cpu"
    """Fabric accelerator: cpu, cuda, mps or auto."""
    devices: int = 1
    """Data-parallel processes (Fabric DDP: gloo on CPU, one per GPU): rank 0 collects, every rank trains on its own
    windows, gradients are averaged (iris_wm.train.loop.parallel)."""
    precision: str = "32-true"
    """Fabric precision (bf16-mixed on hardware with bf16; falls back to 32-true on CPUs without it)."""
    env: EnvConfig = field(default_factory=EnvConfig)
    """The training environment (IRIS protocol: life loss ends the episode)."""
    collection: Collection = field(default_factory=Collection)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    tokenizer_training: Training = field(default_factory=lambda: _training(5, 256))
    world_model: WorldModelConfig = field(default_factory=WorldModelConfig)
    """Vocabulary and tokens per frame are the tokenizer's; actions are the game's (set by the loop)."""
    world_model_training: Training = field(default_factory=lambda: _training(25, 64))
    actor_critic: ActorCriticConfig = field(default_factory=ActorCriticConfig)
    """Sizes come from the tokenizer and the game (set by the loop)."""
    agent_training: Training = field(default_factory=lambda: _training(50, 64))
    objective: AgentObjective = field(default_factory=AgentObjective)
    burn_in: int = 20
    """Real steps per agent window (IRIS: 20)."""
    prime_steps: int | None = None
    """Real steps the world model is primed with in the agent's imagination (default: the whole window)."""
    reencode_every_epochs: int = 1
    """Re-encode the token cache with the current tokenizer every this many epochs (when it has changed)."""
    media_every_epochs: int = 50
    """Write reconstructions and an imagined rollout every this many epochs (0: never)."""

    def __post_init__(self):
        at_least(1, "run", epochs=self.epochs, burn_in=self.burn_in, prime_steps=self.prime_steps)
        at_least(1, "run", reencode_every_epochs=self.reencode_every_epochs, devices=self.devices)
        at_least(0, "run", seed=self.seed, media_every_epochs=self.media_every_epochs)


def build_parser():
    """The parser of `iris-wm run`: ``--config`` YAML, every field of :class:`RunConfig` under ``--run.``."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(
        prog="iris-wm run",
        description="The online IRIS loop: collect, then train tokenizer, world model and agent in turn; resumable.",
    )
    parser.add_argument("--config", action="config", help="YAML file (configs/run/*.yaml) with any option below.")
    parser.add_class_arguments(RunConfig, "run", help="The run.")
    parser.add_argument(
        "--export_agent",
        type=str,
        default=None,
        help="When done, also write the agent as a pretrained agent folder (for `iris-wm evaluate --agent`).",
    )
    return parser


def parse_run_config(argv: list[str]) -> RunConfig:
    """A :class:`RunConfig` from command-line arguments (as `iris-wm run` reads them)."""
    parser = build_parser()
    return parser.instantiate(parser.parse_args(argv)).run
