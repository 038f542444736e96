"""A stage checkpoint records what it is, and loading it needs no training code: the record names the kind and
each model's config; checkpoints without one (iris-wm 0.1) still load, from their weights' names."""

import subprocess
import sys
from dataclasses import asdict

import pytest
import torch

from iris_wm.hub import PretrainedError, load_agent, load_model, read_checkpoint
from iris_wm.runtime.provenance import weights_digest
from sequence_model.gpt import GPTConfig
from sequence_model.world_model import WorldModelConfig
from tokenizer.model import TokenizerConfig


def test_a_stage_checkpoint_records_its_kind_and_configs(pipeline):
    saved = torch.load(pipeline / "wm" / "checkpoints" / "last.ckpt", weights_only=True)
    record = saved["iris_wm"]
    assert record["format"] == 1 and record["kind"] == "world_model" and list(record["models"]) == ["world_model"]
    config = record["models"]["world_model"]
    assert (config["vocab_size"], config["tokens_per_frame"], config["gpt"]["num_layers"]) == (32, 256, 2)
    # Hyperparameters are plain values: nothing in the file is a class that must be allow-listed to read it.
    assert not any(hasattr(value, "__dataclass_fields__") for value in saved["hyper_parameters"].values())


def test_loading_a_checkpoint_needs_no_training_code(pipeline):
    script = (
        "import sys, torch; from iris_wm.hub import load_model; "
        f"m = load_model({str(pipeline / 'wm' / 'checkpoints' / 'last.ckpt')!r}, 'world_model'); "
        "training = [n for n in sys.modules if n.startswith(('iris_wm.train', 'lightning')) or "
        "n in ('iris_wm.agent.module', 'tokenizer.module', 'sequence_model.module')]; "
        "print(type(m).__name__, sorted(training))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.split(maxsplit=1) == ["WorldModel", "[]\n"], done.stdout


def _as_legacy(path, out):
    """The checkpoint as iris-wm 0.1 wrote it: no record, the configs as dataclasses in the hyperparameters."""
    saved = torch.load(path, weights_only=True)
    del saved["iris_wm"]
    config = saved["hyper_parameters"]["config"]
    if "gpt" in config:
        config = WorldModelConfig(**{**config, "gpt": GPTConfig(**config["gpt"])})
    else:
        config = TokenizerConfig(**config)
    saved["hyper_parameters"]["config"] = config
    torch.save(saved, out)
    return out


@pytest.mark.parametrize("stage, kind", [("tok", "tokenizer"), ("wm", "world_model")])
def test_a_checkpoint_without_a_record_still_loads(pipeline, tmp_path, stage, kind):
    current = pipeline / stage / "checkpoints" / "last.ckpt"
    legacy = _as_legacy(current, tmp_path / "legacy.ckpt")
    old, new = read_checkpoint(legacy), read_checkpoint(current)
    assert old.kind == new.kind == kind
    assert weights_digest(old.models[kind]) == weights_digest(new.models[kind])
    assert asdict(old.models[kind].config) == asdict(new.models[kind].config)


def test_checkpoints_that_cannot_give_the_model_asked_for_are_refused(pipeline, tmp_path):
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"encoder.weight": torch.zeros(2)}, "hyper_parameters": {}}, other)
    with pytest.raises(PretrainedError, match="not a checkpoint of a tokenizer, world-model or agent stage"):
        load_model(other, "tokenizer")
    with pytest.raises(PretrainedError, match="world model stage, not of the agent stage"):
        load_agent(pipeline / "wm" / "checkpoints" / "last.ckpt")
    saved = torch.load(pipeline / "wm" / "checkpoints" / "last.ckpt", weights_only=True)
    saved["state_dict"].pop(next(k for k in saved["state_dict"] if k.startswith("world_model.")))
    torch.save(saved, tmp_path / "edited.ckpt")
    with pytest.raises(PretrainedError, match="do not match the config it records"):
        load_model(tmp_path / "edited.ckpt", "world_model")


def test_reading_a_checkpoint_keeps_the_configs_loadable_everywhere(pipeline):
    """The configs registered as safe for ``weights_only`` loading at import must stay registered after a read:
    Lightning's own loading of an agent checkpoint needs them (torch's ``safe_globals`` context manager removes
    on exit what it was given, even if it had been registered before)."""
    from iris_wm.agent.actor_critic import ActorCriticConfig
    from iris_wm.agent.objective import AgentObjective
    from iris_wm.envs.imagination import ImaginationConfig

    read_checkpoint(pipeline / "wm" / "checkpoints" / "last.ckpt")
    assert {ActorCriticConfig, AgentObjective, ImaginationConfig} <= set(torch.serialization.get_safe_globals())
