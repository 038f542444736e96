"""An interrupted `iris-wm evaluate` loses no finished episode, and `--resume` plays only the others; idle
environments at the end of an evaluation are not planned for."""

import json

import numpy as np
import pytest

import iris_wm.evaluate.play as play_module
from iris_wm.envs.atari import EnvConfig, make_env
from iris_wm.evaluate.play import RandomPolicy, evaluate, play
from iris_wm.runtime.errors import ConfigError

ENV = EnvConfig(suite="point-mass", max_episode_steps=12)


class _Stop(Exception):
    pass


def _interrupt_after(monkeypatch, count: int):
    ended = play_module._Progress.ended

    def then_stop(self, index, earned, length):
        ended(self, index, earned, length)
        if len(self.done) == count:
            raise _Stop

    monkeypatch.setattr(play_module._Progress, "ended", then_stop)


def test_an_interrupted_evaluation_keeps_its_finished_episodes_and_resumes_with_the_others(tmp_path, monkeypatch):
    out = tmp_path / "eval.json"
    whole = evaluate(str(tmp_path / "whole.json"), None, ENV, episodes=4, num_envs=1, seed=7)
    with monkeypatch.context() as patch:
        _interrupt_after(patch, 2)
        with pytest.raises(_Stop):
            evaluate(str(out), None, ENV, episodes=4, num_envs=1, seed=7)
    partial = tmp_path / "eval.json.partial"
    saved = json.loads(partial.read_text())
    assert not out.exists() and sorted(saved["finished"]) == ["0", "1"]
    for i in (0, 1):  # one environment, the same draws: the first two episodes are the uninterrupted run's
        assert saved["finished"][str(i)] == [whole["returns"][i], whole["lengths"][i]]

    with pytest.raises(ConfigError, match="holds 2 finished episodes of an interrupted evaluation: pass --resume"):
        evaluate(str(out), None, ENV, episodes=4, num_envs=1, seed=7)
    with pytest.raises(ConfigError, match=r"other settings \(seed\)"):
        evaluate(str(out), None, ENV, episodes=4, num_envs=1, seed=8, resume=True)
    with pytest.raises(ConfigError, match="were not recorded"):
        evaluate(str(out), None, ENV, episodes=4, num_envs=1, seed=7, resume=True, record=str(tmp_path / "rec"))
    assert json.loads(partial.read_text()) == saved  # refusals change nothing

    played = []
    real_play = play_module.play

    def spy(*args, **kwargs):
        played.append(set(kwargs["skip"]))
        return real_play(*args, **kwargs)

    monkeypatch.setattr(play_module, "play", spy)
    result = evaluate(str(out), None, ENV, episodes=4, num_envs=1, seed=7, resume=True)
    assert played == [{0, 1}] and result["resumed_episodes"] == 2 and not partial.exists()
    # The policy's draws start from a seed of their own: from seed 7 again they would replay the first games' actions
    # (in Atari without sticky actions, where every episode starts alike, the resumed games would repeat them).
    assert whole["policy_seed"] == 7 and result["policy_seed"] not in (7, None)
    assert result["returns"][:2] == whole["returns"][:2] and len(result["returns"]) == 4
    assert json.loads(out.read_text())["returns"] == result["returns"]
    assert result["mean"] == pytest.approx(np.mean(result["returns"]))


def test_a_progress_file_that_is_not_one_is_refused(tmp_path):
    (tmp_path / "eval.json.partial").write_text("{not json")
    with pytest.raises(ConfigError, match="is not the progress file of an evaluation"):
        evaluate(str(tmp_path / "eval.json"), None, ENV, episodes=2, num_envs=1, resume=True)
    assert (tmp_path / "eval.json.partial").read_text() == "{not json"


def test_play_skips_the_given_episodes_and_seeds_the_others_by_their_index():
    starts = {}
    play(
        _Random(),
        ENV,
        5,
        2,
        seed=11,
        progress=False,
        record=lambda i, episode: starts.setdefault(i, episode.observations[0]),
        skip={1, 3},
    )
    assert sorted(starts) == [0, 2, 4]
    for i, frame in starts.items():
        np.testing.assert_array_equal(frame, make_env(ENV).reset(seed=11 + i)[0])


class _Random:
    """Box actions of the point mass, told which environments play (as a planner is)."""

    def __init__(self):
        self.policy, self.masks = None, []

    def act(self, frames, new, states=None, active=None):
        from iris_wm.data.collect import store_layout

        if self.policy is None:
            self.policy = RandomPolicy(store_layout(make_env(ENV))[0], 0)
        self.masks.append(np.array(active))
        return self.policy.act(frames, new)


def test_a_policy_that_takes_active_is_told_which_environments_play():
    policy = _Random()
    _, lengths = play(policy, ENV, 3, 2, seed=0, progress=False)
    masks = np.stack(policy.masks)
    assert int(masks.sum()) == sum(lengths)  # one active slot per real step
    assert not masks.all()  # the last episode plays alone
