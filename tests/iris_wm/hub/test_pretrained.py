"""save_pretrained / from_pretrained round trips, refusals, stores as datasets, and the real push path of
huggingface_hub against a local in-memory Hub (httpx2.MockTransport: no network, nothing of ours mocked)."""

import json

import numpy as np
import pytest
import torch

from helpers import tiny
from iris_wm.agent.actor_critic import ActorCritic, ActorCriticConfig
from iris_wm.agent.bundle import Agent
from iris_wm.hub import PretrainedError, from_pretrained, load_agent, push_to_hub, save_agent, save_pretrained
from sequence_model.world_model import WorldModel
from tokenizer.model import Tokenizer

K, V, A = 4, 16, 3


def models():
    torch.manual_seed(0)
    tok = Tokenizer(tiny.tokenizer_config(V)).eval()
    wm = WorldModel(tiny.world_model_config(V, K, A, context_steps=3)).eval()
    ac = ActorCritic(
        ActorCriticConfig(num_actions=A, observation="frames", frame_size=16, channels=(4, 4), lstm_dim=8)
    ).eval()
    return tok, wm, ac


def outputs(tok, wm, ac):
    g = torch.Generator().manual_seed(1)
    frames = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8, generator=g)
    tokens = tok.encode(frames)
    ids = wm.interleave(tokens[:, None].repeat(1, 3, 1), torch.zeros(2, 3, dtype=torch.long))
    with torch.no_grad():
        out = ac(frames, ac.initial_state(2))
        return [tokens, tok.decode_normalized(tokens), wm(ids).observation_logits, out.logits, out.value]


def test_each_model_round_trips_with_identical_outputs(tmp_path):
    originals = models()
    for model in originals:
        save_pretrained(model, tmp_path / type(model).__name__)
    loaded = [from_pretrained(tmp_path / type(m).__name__) for m in originals]
    for a, b in zip(outputs(*originals), outputs(*loaded), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    config = json.loads((tmp_path / "WorldModel" / "config.json").read_text())
    assert config["kind"] == "world_model" and config["provenance"]["libraries"]["torch"]
    assert "git_sha" in config["provenance"]


def test_a_folder_written_before_a_config_field_existed_loads_with_that_fields_default(tmp_path):
    _, wm, _ = models()
    save_pretrained(wm, tmp_path / "wm")
    path = tmp_path / "wm" / "config.json"
    config = json.loads(path.read_text())
    del (
        config["config"]["prediction"],
        config["config"]["gpt"]["attention_dropout"],
        config["config"]["gpt"]["block_size"],
    )
    path.write_text(json.dumps(config))  # the config.json of a world model saved before issue 16's fields
    loaded = from_pretrained(tmp_path / "wm")
    assert loaded.config.prediction == "autoregressive" and loaded.config.gpt.block_size == 1
    assert loaded.config.gpt.attention_dropout == loaded.config.gpt.dropout
    for a, b in zip(outputs(*models()[:2], models()[2]), outputs(models()[0], loaded, models()[2]), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    del config["config"]["context_steps"]  # a field that was always there is still required
    path.write_text(json.dumps(config))
    with pytest.raises(PretrainedError, match="lacks context_steps"):
        from_pretrained(tmp_path / "wm")


def test_a_whole_agent_round_trips_and_its_card_has_metadata(tmp_path):
    from huggingface_hub import ModelCard

    from iris_wm.hub import CardInfo

    tok, wm, ac = models()
    card = CardInfo(
        environment="ALE/Breakout-v5",
        dataset="someone/breakout-tokens",
        metrics={"mean return": 5.81, "human-normalised": 0.143},
        command="make demo",
    )
    save_agent(tmp_path / "agent", Agent(tok, wm, ac), card)
    loaded = load_agent(tmp_path / "agent")
    for a, b in zip(outputs(tok, wm, ac), outputs(*loaded.components.values()), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    parsed = ModelCard.load(tmp_path / "agent" / "README.md")
    assert parsed.data.library_name == "iris-wm" and "world-model" in parsed.data.tags
    assert parsed.data.datasets == ["someone/breakout-tokens"] and parsed.data.environment == "ALE/Breakout-v5"
    assert "| mean return | 5.81 |" in parsed.text and "make demo" in parsed.text


def test_broken_folders_are_refused_with_the_reason(tmp_path):
    tok, wm, _ = models()
    save_pretrained(tok, tmp_path / "tok")
    save_pretrained(wm, tmp_path / "wm")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "config.json").write_text((tmp_path / "tok" / "config.json").read_text())
    (mixed / "model.safetensors").write_bytes((tmp_path / "wm" / "model.safetensors").read_bytes())
    with pytest.raises(PretrainedError, match="do not match its config.json: missing"):
        from_pretrained(mixed)
    (tmp_path / "wm" / "model.safetensors").unlink()
    with pytest.raises(PretrainedError, match="no model.safetensors"):
        from_pretrained(tmp_path / "wm")
    config = json.loads((tmp_path / "tok" / "config.json").read_text())
    (tmp_path / "tok" / "config.json").write_text(json.dumps(config | {"iris_wm_format": 99}))
    with pytest.raises(PretrainedError, match="format version 99"):
        from_pretrained(tmp_path / "tok")
    with pytest.raises(PretrainedError, match="not a whole agent"):
        load_agent(tmp_path / "wm")
    with pytest.raises(PretrainedError, match="neither a local folder nor a Hub repository id"):
        from_pretrained(tmp_path / "nowhere" / "at" / "all")


def test_offline_without_the_repository_in_the_cache_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(PretrainedError, match="not in the local cache"):
        from_pretrained("someone/not-downloaded")


def test_push_to_hub_and_load_by_repository_id(local_hub, tmp_path):
    tok, wm, ac = models()
    folder = save_agent(tmp_path / "agent", Agent(tok, wm, ac))
    url = push_to_hub(folder, "someone/iris-agent")
    assert "someone/iris-agent/commit/" in url
    stored = local_hub.repos["someone/iris-agent"]
    assert stored["world_model/model.safetensors"] == (folder / "world_model" / "model.safetensors").read_bytes()
    assert {"agent.json", "README.md", "tokenizer/config.json", "actor_critic/model.safetensors"} <= set(stored)
    loaded = load_agent("someone/iris-agent")
    for a, b in zip(outputs(tok, wm, ac), outputs(*loaded.components.values()), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_stores_export_and_load_as_datasets(tmp_path, local_hub):
    from helpers.tokens import synthetic_token_store
    from iris_wm.hub.datasets import export_store, load_store, push_store

    source = synthetic_token_store(tmp_path / "tokens", episodes=6, length=9)
    export_store(tmp_path / "tokens", tmp_path / "exported")
    for copy in (
        load_store(tmp_path / "exported", tmp_path / "copy"),
        (push_store(tmp_path / "tokens", "someone/tokens"), load_store("someone/tokens", tmp_path / "c2"))[1],
    ):
        assert (copy.num_steps, copy.num_episodes, copy.kind) == (source.num_steps, source.num_episodes, "tokens")
        rows = np.arange(source.num_steps)
        np.testing.assert_array_equal(copy.observations(rows), source.observations(rows))
        for column in ("action", "reward", "terminated", "truncated", "episode"):
            np.testing.assert_array_equal(getattr(copy.columns, column), getattr(source.columns, column))
        assert copy.manifest["settings"] == source.manifest["settings"]
    assert "README.md" in local_hub.repos["someone/tokens"]
