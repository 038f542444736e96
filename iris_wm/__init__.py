"""iris-wm: tokenized world models in the IRIS style (Micheli et al. 2023).

The pipeline, and where each step lives (imports flow down this list; nothing imports ``cli``)::

    cli/        the `iris-wm` command line, `make demo`: a table from verb to library function
    scaling/    the scaling harness on torch: the sweep's backend, its token store, its steps
    train/      the LightningCLI stages and their callbacks, the optimiser loop, the online IRIS loop
    evaluate/   the real game (play), imagined vs real rollouts (imagine), human-normalised scores
    hub/        pretrained folders and cards, stage checkpoints -> models, stores as Hub datasets
    agent/      the actor-critic, its objective and rollouts, the policy, the Agent bundle, its Lightning system
    data/       episodes and stores, windows, collection, token stores, the size check, the data module
    envs/       Atari behind the IRIS wrappers, the point mass, DeepMind Control tasks, the imagination environment
    runtime/    provenance and digests, durable files, random state, the non-finite-loss rule, hardware

Every layer may use the two model packages beside this one: ``tokenizer`` (frames <-> tokens) and
``sequence_model`` (tokens -> next tokens); only ``iris_wm.scaling`` uses the torch-free ``scaling`` package.

The names most programs need are importable from here (loaded on first use)::

    from iris_wm import load_agent, EpisodeStore, ImaginationEnv
"""

from importlib import import_module

_PUBLIC = {
    "Agent": "iris_wm.agent.bundle",
    "ActorCritic": "iris_wm.agent.actor_critic",
    "ActorCriticConfig": "iris_wm.agent.actor_critic",
    "EnvConfig": "iris_wm.envs.atari",
    "make_env": "iris_wm.envs.atari",
    "ImaginationConfig": "iris_wm.envs.imagination",
    "ImaginationEnv": "iris_wm.envs.imagination",
    "Episode": "iris_wm.data.episode",
    "ActionSpace": "iris_wm.data.spaces",
    "StateSpec": "iris_wm.data.spaces",
    "PointMass": "iris_wm.envs.point_mass",
    "EpisodeStore": "iris_wm.data.store",
    "TokenStore": "iris_wm.data.store",
    "open_store": "iris_wm.data.store",
    "collect": "iris_wm.data.collect",
    "load_model": "iris_wm.hub.checkpoints",
    "load_agent": "iris_wm.hub.checkpoints",
    "from_pretrained": "iris_wm.hub.pretrained",
    "save_pretrained": "iris_wm.hub.pretrained",
    "save_agent": "iris_wm.hub.pretrained",
    "evaluate": "iris_wm.evaluate.play",
    "imagine": "iris_wm.evaluate.imagine",
    "OnlineLoop": "iris_wm.train.loop.online",
    "RunConfig": "iris_wm.train.loop.config",
    "IrisError": "iris_wm.runtime.errors",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'iris_wm' has no attribute {name!r}")
