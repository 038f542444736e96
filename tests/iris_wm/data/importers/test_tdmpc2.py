"""`iris-wm import tdmpc2`: a TD-MPC2-style multi-task TensorDict written by the test (row 0's action and reward
NaN, observations and actions zero-padded to the task set's largest) imports one task with its padding removed and
its steps bitwise after the offset; without --source.trust_pickle nothing is unpickled or written; the result is a
state-only store the world-model stage trains on."""

import numpy as np
import pytest
import torch

from iris_wm.data.importers.tdmpc2 import TDMPC2Options, plan_tdmpc2
from iris_wm.data.importers.writer import SourceError, write_import
from iris_wm.data.store import TokenStore

tensordict = pytest.importorskip("tensordict", reason="TD-MPC2's datasets are TensorDicts: pip install -e '.[tdmpc2]'")

SIZES = {0: (5, 2), 3: (3, 1)}  # task -> (obs_dim, action_dim); padded to 5 and 2


def dataset(path, episodes_per_task=3, length=6, seed=0, terminated=False):
    rng = np.random.default_rng(seed)
    obs, action, reward, task, truth = [], [], [], [], []
    for t, (o, a) in SIZES.items():
        for _ in range(episodes_per_task):
            x = np.zeros((length, 5), np.float32)
            x[:, :o] = rng.normal(size=(length, o))
            u = np.zeros((length, 2), np.float32)
            u[:, :a] = rng.uniform(-1, 1, (length, a))
            u[0] = np.nan  # no action led to the first observation
            r = rng.normal(size=length).astype(np.float32)
            r[0] = np.nan
            obs.append(x), action.append(u), reward.append(r), task.append(np.full(length, t))
            truth.append(dict(task=t, state=x[:-1, :o], action=u[1:, :a], reward=r[1:]))
    td = tensordict.TensorDict(
        {
            "obs": torch.from_numpy(np.stack(obs)),
            "action": torch.from_numpy(np.stack(action)),
            "reward": torch.from_numpy(np.stack(reward)),
            "task": torch.from_numpy(np.stack(task)),
            **({"terminated": torch.ones(len(obs), length, dtype=torch.bool)} if terminated else {}),
        },
        batch_size=(len(obs), length),
    )
    torch.save(td, path)
    return truth


def test_one_task_imports_with_its_padding_removed_and_the_offset_applied(tmp_path):
    truth = dataset(tmp_path / "chunk_0.pt")
    with pytest.raises(SourceError, match="holds several tasks: 0 \\(3 episodes\\), 3 \\(3 episodes\\)"):
        plan_tdmpc2(tmp_path / "chunk_0.pt", TDMPC2Options(trust_pickle=True))
    for task in SIZES:
        out = tmp_path / f"task{task}"
        write_import(
            out, plan_tdmpc2(tmp_path / "chunk_0.pt", TDMPC2Options(trust_pickle=True, task=task)), progress=False
        )
        store = TokenStore.open(out)
        wanted = [e for e in truth if e["task"] == task]
        assert store.num_episodes == 3 and store.num_steps == 15 and store.state.size == SIZES[task][0]
        assert store.action_space.shape == (SIZES[task][1],) and store.observations(np.arange(3)).shape == (3, 0)
        for i, e in enumerate(wanted):
            got = store.episode(i)
            assert np.array_equal(got.states, e["state"]) and np.array_equal(got.actions, e["action"])
            assert np.array_equal(got.rewards, e["reward"]) and got.truncated[-1] and not got.terminated.any()
    dataset(tmp_path / "ended.pt", terminated=True)
    write_import(
        tmp_path / "e", plan_tdmpc2(tmp_path / "ended.pt", TDMPC2Options(trust_pickle=True, task=0)), progress=False
    )
    assert TokenStore.open(tmp_path / "e").episode(0).terminated[-1]


def test_nothing_is_unpickled_or_written_without_trust(tmp_path, monkeypatch):
    dataset(tmp_path / "chunk_0.pt")
    loads = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(a))
    with pytest.raises(SourceError, match="runs any code it carries.*--source.trust_pickle true"):
        write_import(tmp_path / "out", plan_tdmpc2(tmp_path / "chunk_0.pt"), progress=False)
    assert not loads and not (tmp_path / "out").exists()


def test_an_imported_task_trains_the_world_model_stage_on_its_states_alone(tmp_path):
    from iris_wm.hub import load_model
    from iris_wm.train.stages import run_world_model_cli, stage_args

    dataset(tmp_path / "chunk_0.pt", episodes_per_task=12, length=10)
    write_import(
        tmp_path / "s", plan_tdmpc2(tmp_path / "chunk_0.pt", TDMPC2Options(trust_pickle=True, task=0)), progress=False
    )
    run_world_model_cli(stage_args("fit", "world_model", "debug", tmp_path / "s", tmp_path / "wm"))
    model = load_model(tmp_path / "wm" / "checkpoints" / "last.ckpt", "world_model")
    assert model.config.tokens_per_frame == 0 and model.config.state_dim == 5 and model.config.action_dim == 2
