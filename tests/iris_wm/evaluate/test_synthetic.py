"""Synthetic episodes: the export (`iris-wm imagine --export`) and the mixing of a synthetic store into training."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from helpers.cli import refused, snapshot
from iris_wm.agent.actor_critic import ActorCritic, ActorCriticConfig
from iris_wm.cli.main import main as iris_wm
from iris_wm.data.datamodule import StoreDataModule
from iris_wm.data.mixing import MixedWindows
from iris_wm.data.store import EpisodeStore, TokenStore
from iris_wm.data.windows import WindowDataset
from iris_wm.evaluate.synthetic import export_episodes
from iris_wm.hub import load_model, save_pretrained
from iris_wm.runtime.provenance import weights_digest
from iris_wm.train.stages import run_world_model_cli, stage_args


def _sources(pipeline):
    return {"world_model": str(pipeline / "wm-pretrained"), "tokenizer": str(pipeline / "tok-pretrained")}


@pytest.fixture(scope="module")
def exported(pipeline, tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic") / "store"
    summary = export_episodes(
        **_sources(pipeline),
        tokens=str(pipeline / "tokens"),
        export=str(out),
        policy="store-actions",
        num_episodes=10,
        horizon=5,
        burn_in=2,
        frames=True,
        batch_size=4,
        seed=3,
    )
    return out, summary


def test_the_export_starts_from_real_rows_replays_their_actions_and_records_where_it_came_from(pipeline, exported):
    out, summary = exported
    store, start = TokenStore.open(out), TokenStore.open(pipeline / "tokens")
    block = store.manifest["settings"]["synthetic"]
    assert store.num_episodes == summary["episodes"] == 10
    assert block["policy"] == "store-actions" and block["start_store"] == str((pipeline / "tokens").resolve())
    assert block["world_model_digest"] == weights_digest(load_model(pipeline / "wm-pretrained", "world_model"))
    assert block["tokenizer_digest"] == start.manifest["settings"]["tokenizer_digest"]
    for position, row in enumerate(block["start_rows"]):
        episode = store.episode(position)
        assert 1 <= len(episode) <= 5
        assert episode.terminated[-1] != episode.truncated[-1]
        np.testing.assert_array_equal(episode.observations[0], start.observations(np.array([row]))[0])
        np.testing.assert_array_equal(episode.actions, start.columns.action[row : row + len(episode)])
    frames = EpisodeStore.open(out / "frames")
    np.testing.assert_array_equal(frames.episode_lengths, store.episode_lengths)
    np.testing.assert_array_equal(frames.columns.reward, store.columns.reward)
    tokenizer = load_model(pipeline / "tok-pretrained", "tokenizer")
    # Decoded an episode at a time, as the export does (a convolution's rounding depends on the batch).
    tokens = [store.episode(p).observations for p in range(store.num_episodes)]
    decoded = [tokenizer.decode(torch.from_numpy(t).long()).numpy() for t in tokens]
    np.testing.assert_array_equal(frames.observations(np.arange(frames.num_steps)), np.concatenate(decoded))
    agreement = np.mean(
        np.concatenate(
            [tokenizer.encode(torch.from_numpy(d)).numpy() == t for d, t in zip(decoded, tokens, strict=True)]
        )
    )
    assert summary["reencoded_token_agreement"] == pytest.approx(agreement)


def test_the_same_seed_exports_the_same_episodes_and_another_seed_others(pipeline, exported, tmp_path):
    out, _ = exported
    kwargs = dict(tokens=str(pipeline / "tokens"), policy="random", num_episodes=6, horizon=4, burn_in=2)
    first = export_episodes(**_sources(pipeline), export=str(tmp_path / "a"), seed=5, **kwargs)
    export_episodes(**_sources(pipeline), export=str(tmp_path / "b"), seed=5, **kwargs)
    export_episodes(**_sources(pipeline), export=str(tmp_path / "c"), seed=6, **kwargs)
    a, b, c = (TokenStore.open(tmp_path / name) for name in "abc")
    assert first["steps"] == a.num_steps
    np.testing.assert_array_equal(a.observations(np.arange(a.num_steps)), b.observations(np.arange(b.num_steps)))
    np.testing.assert_array_equal(a.columns.action, b.columns.action)
    assert a.manifest["settings"]["synthetic"]["start_rows"] != c.manifest["settings"]["synthetic"]["start_rows"]


def test_the_agent_policy_acts_with_the_given_actor_critic(pipeline, tmp_path):
    start = TokenStore.open(pipeline / "tokens")
    config = ActorCriticConfig(
        num_actions=start.num_actions,
        observation="tokens",
        vocab_size=int(start.manifest["settings"]["vocab_size"]),
        tokens_per_frame=start.spec.shape[0],
        token_embed_dim=4,
        encoder_dim=8,
        lstm_dim=8,
    )
    torch.manual_seed(0)
    network = ActorCritic(config)
    with torch.no_grad():  # a policy that always chooses the last action
        network.actor.weight.zero_()
        network.actor.bias.copy_(torch.arange(start.num_actions, dtype=torch.float32) * 100)
    save_pretrained(network, tmp_path / "ac")
    export_episodes(
        **_sources(pipeline),
        tokens=str(pipeline / "tokens"),
        export=str(tmp_path / "out"),
        agent=str(tmp_path / "ac"),
        num_episodes=5,
        horizon=3,
        burn_in=6,  # beyond the context of 4: the agent reads all six, the world model is primed with the last 2
        prime_steps=2,
        policy_temperature=0.0,
    )
    store = TokenStore.open(tmp_path / "out")
    assert (store.columns.action == start.num_actions - 1).all()
    assert store.manifest["settings"]["synthetic"]["actor_critic_digest"] == weights_digest(network)
    assert store.manifest["settings"]["synthetic"]["prime_steps"] == 2


def test_bad_exports_are_refused_and_leave_no_store(pipeline, exported, capsys, tmp_path):
    out, _ = exported
    base = [
        "imagine",
        "--world_model",
        str(pipeline / "wm-pretrained"),
        "--tokenizer",
        str(pipeline / "tok-pretrained"),
    ]
    base += ["--tokens", str(pipeline / "tokens"), "--horizon", "3", "--burn_in", "2"]
    before = snapshot(out)
    refused(capsys, [*base, "--export", str(out), "--policy", "random"], "already", str(out))
    assert snapshot(out) == before
    new = str(tmp_path / "new")
    refused(capsys, [*base, "--export", new], "--policy agent needs --agent")
    refused(capsys, [*base, "--export", new, "--policy", "random", "--burn_in", "41"], "No train episode", "41 steps")
    refused(capsys, [*base, "--export", new, "--policy", "random", "--tokens", str(out / "frames")], "episode store")
    assert not (tmp_path / "new").exists()


def test_a_killed_export_leaves_no_store(pipeline, tmp_path):
    out = tmp_path / "killed"
    argv = ["imagine", "--export", str(out), "--policy", "random", "--world_model", str(pipeline / "wm-pretrained")]
    argv += ["--tokenizer", str(pipeline / "tok-pretrained"), "--tokens", str(pipeline / "tokens")]
    argv += ["--num_episodes", "8", "--batch_size", "2", "--horizon", "3", "--burn_in", "2"]
    code = f"from iris_wm.cli.main import main; main({argv!r})"
    env = {**os.environ, "IRIS_WM_FAULT": "export:4"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == -9, done.stderr
    assert not out.exists()


# ---------------------------------------------------------------------------------------------- mixing
def test_a_mix_serves_the_fraction_asked_every_real_window_and_synthetic_ones_in_turn(pipeline, exported):
    out, _ = exported
    real_store, synthetic_store = TokenStore.open(pipeline / "tokens"), TokenStore.open(out)
    real = WindowDataset(real_store, np.arange(real_store.num_episodes), 2)
    synthetic = WindowDataset(synthetic_store, np.arange(synthetic_store.num_episodes), 2)
    for fraction in (0.5, 0.8):
        mix = MixedWindows(real, synthetic, fraction)
        assert len(mix) == int(np.ceil(len(real) / (1 - fraction)))
        flags = mix.is_synthetic(np.arange(len(mix)))
        assert abs(flags.sum() - fraction * len(mix)) <= 1
        assert all(abs(flags[i : i + 50].mean() - fraction) <= 1 / 50 + 1e-9 for i in range(0, len(mix) - 50, 7))
        batch = mix.__getitems__(np.arange(len(mix)))
        real_rows = batch.rows[torch.from_numpy(~flags), 0]
        assert sorted(set(real_rows.tolist())) == sorted(set(real.anchors.tolist()))
        got = batch.observations[torch.from_numpy(flags)]
        want = synthetic.__getitems__(np.arange(int(flags.sum())) % len(synthetic)).observations
        torch.testing.assert_close(got, want)
        synthetic_rows = batch.rows[torch.from_numpy(flags)]
        assert (synthetic_rows[synthetic_rows >= 0] >= real_store.num_steps).all()


def test_the_datamodule_mixes_training_windows_and_validates_on_real_ones(pipeline, exported):
    out, _ = exported
    plain = StoreDataModule(str(pipeline / "tokens"), sequence_length=2, val_fraction=0.2)
    mixed = StoreDataModule(
        str(pipeline / "tokens"), sequence_length=2, val_fraction=0.2, synthetic_root=str(out), synthetic_fraction=0.5
    )
    plain.setup(), mixed.setup()
    assert isinstance(mixed.train_set, MixedWindows) and len(mixed.train_set) == 2 * len(plain.train_set)
    np.testing.assert_array_equal(mixed.val_set.anchors, plain.val_set.anchors)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"synthetic_fraction": 0.5}, ["both", "synthetic_root"]),
        ({"synthetic_root": "X"}, ["both", "synthetic_fraction"]),
        ({"synthetic_root": "X", "synthetic_fraction": 1.0}, ["synthetic_fraction must lie in"]),
    ],
)
def test_half_given_synthetic_options_are_refused(pipeline, kwargs, words):
    with pytest.raises(ValueError) as caught:
        StoreDataModule(str(pipeline / "tokens"), **kwargs)
    assert all(w in str(caught.value) for w in words)


def test_a_real_store_or_another_tokenizers_tokens_are_refused_as_synthetic(pipeline, exported, tmp_path):
    out, _ = exported
    real = StoreDataModule(str(pipeline / "tokens"), synthetic_root=str(pipeline / "tokens"), synthetic_fraction=0.5)
    with pytest.raises(ValueError, match="holds real episodes"):
        real.setup()
    other = tmp_path / "other"
    other.mkdir()
    for path in out.rglob("*"):
        target = other / path.relative_to(out)
        target.mkdir(exist_ok=True) if path.is_dir() else target.write_bytes(path.read_bytes())
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["settings"]["tokenizer_digest"] = "0" * 64
    (other / "manifest.json").write_text(json.dumps(manifest))
    foreign = StoreDataModule(str(pipeline / "tokens"), synthetic_root=str(other), synthetic_fraction=0.5)
    with pytest.raises(ValueError, match="another tokenizer"):
        foreign.setup()


def test_a_model_trained_on_synthetic_data_says_so_in_its_folder_and_card(pipeline, exported, tmp_path):
    out, _ = exported
    extra = ["--data.synthetic_root", str(out), "--data.synthetic_fraction", "0.5", "--trainer.max_steps", "2"]
    run_world_model_cli(stage_args("fit", "world_model", "debug", pipeline / "tokens", tmp_path / "wm", *extra))
    folder = tmp_path / "exported"
    iris_wm(["push-to-hub", "--checkpoint", str(tmp_path / "wm" / "checkpoints" / "last.ckpt"), "--out", str(folder)])
    synthetic = json.loads((folder / "config.json").read_text())["provenance"]["inputs"]["synthetic"]
    assert synthetic["store"] == str(out.resolve()) and synthetic["fraction"] == 0.5
    assert synthetic["policy"] == "store-actions" and "start_rows" not in synthetic
    card = (folder / "README.md").read_text()
    assert "synthetic-data" in card and "50% of its training windows were imagined episodes" in card
