"""An ensemble's disagreement knows what its members never saw: three small world models trained with different
seeds on one synthetic "game" disagree more on another game's windows (codes the first never uses) than on their
own held-out windows; the report's AUROC is Mann-Whitney's; the ensemble is shared as one pretrained folder that
loads wherever a world model does, and `iris-wm ensemble build|report` run from the command line."""

import json

import numpy as np
import pytest
import torch

from helpers.tokens import fit_windows, synthetic_token_store
from iris_wm.cli.main import main
from iris_wm.data.windows import split_episodes
from iris_wm.evaluate.uncertainty import auroc, uncertainty_report
from iris_wm.hub import load_model, save_pretrained
from iris_wm.runtime.errors import ConfigError
from sequence_model.ensemble import WorldModelEnsemble
from sequence_model.gpt import GPTConfig
from sequence_model.world_model import WorldModel, WorldModelConfig

V = 16  # each game's codes; the model knows 2 V


def test_auroc_is_mann_whitneys():
    assert auroc(np.array([0.0, 1.0, 2.0]), np.array([1.5, 3.0])) == pytest.approx(5 / 6)
    assert auroc(np.array([1.0]), np.array([1.0])) == 0.5


def _member(store, seed: int) -> WorldModel:
    torch.manual_seed(seed)
    model = WorldModel(
        WorldModelConfig(
            vocab_size=2 * V,
            tokens_per_frame=4,
            num_actions=3,
            context_steps=4,
            prediction="parallel",
            gpt=GPTConfig(num_layers=1, num_heads=2, embed_dim=32),
        )
    )
    train, _ = split_episodes(store, 0.1, 0)
    return fit_windows(model, store, train, 150, seed)


@pytest.fixture(scope="module")
def games(tmp_path_factory):
    root = tmp_path_factory.mktemp("games")
    own = synthetic_token_store(root / "own", episodes=60, length=30, vocab_size=V, noise=0.1, seed=0)
    other = synthetic_token_store(root / "other", episodes=20, length=30, vocab_size=V, seed=5, offset=V)
    return own, other


def test_disagreement_separates_another_game_and_the_ensemble_loads_as_a_world_model(games, tmp_path):
    own, other = games
    ensemble = WorldModelEnsemble([_member(own, seed) for seed in range(3)]).eval()
    report = uncertainty_report(ensemble, own, other, windows=48, burn_in=2, horizon=4)
    assert report["windows"] == {"own": 48, "other": 48}
    assert report["real"]["auroc_other_game"] > 0.9
    assert report["real"]["mean"]["other"] > 1.5 * report["real"]["mean"]["own"]
    assert -1 <= report["imagined"]["spearman_with_error"] <= 1
    folder = save_pretrained(ensemble, tmp_path / "ensemble")
    loaded = load_model(folder, "world_model")
    assert isinstance(loaded, WorldModelEnsemble) and loaded.size == 3
    again = uncertainty_report(loaded, own, other, windows=48, burn_in=2, horizon=4)
    assert again["per_window"] == report["per_window"]
    with pytest.raises(ConfigError, match="needs an ensemble"):
        uncertainty_report(ensemble.members[0], own, other)


def test_the_ensemble_command_builds_and_reports(games, tmp_path, capsys):
    own, other = games
    members = []
    for seed in range(2):
        members.append(str(save_pretrained(_member(own, seed), tmp_path / f"m{seed}")))
    main(["ensemble", "build", "--members", json.dumps(members), "--out", str(tmp_path / "ens")])
    assert "2 world models saved as one ensemble" in capsys.readouterr().out
    out = tmp_path / "report.json"
    main(["ensemble", "report", "--ensemble", str(tmp_path / "ens"), "--tokens", str(own.root), "--other",
          str(other.root), "--out", str(out), "--windows", "16", "--burn_in", "2", "--horizon", "3"])  # fmt: skip
    assert json.loads(out.read_text())["members"] == 2 and "AUROC" in capsys.readouterr().out


def test_members_trained_on_tokens_of_different_tokenizers_are_refused(games, tmp_path):
    from iris_wm.hub.checkpoints import PretrainedError, save_ensemble, training_tokenizer

    own, _ = games
    stores = {
        name: synthetic_token_store(tmp_path / name, episodes=2, length=8, settings={"tokenizer_digest": digest})
        for name, digest in (("a", "a" * 64), ("b", "b" * 64), ("a2", "a" * 64))
    }
    members = {}
    for name, store in stores.items():
        inputs = {"data": {"store": str(store.root)}}
        members[name] = str(save_pretrained(_member(own, 0), tmp_path / f"member_{name}", inputs=inputs))
    assert training_tokenizer(members["b"]) == "b" * 64
    assert training_tokenizer(tmp_path / "nowhere") is None
    with pytest.raises(PretrainedError, match=r"members 0 .* and 1 .* were trained on tokens of different tokenizers"):
        save_ensemble([members["a"], members["b"]], tmp_path / "mixed")
    assert not (tmp_path / "mixed").exists()
    folder = save_ensemble([members["a"], members["a2"]], tmp_path / "same")
    saved = json.loads((folder / "config.json").read_text())["provenance"]["inputs"]
    assert saved["tokenizer_digest"] == "a" * 64
