"""A world model of continuous actions learns to use them: on the built-in point mass, whose frames draw its position,
held-out cross-entropy with the true actions is at least 5% below that with actions permuted across windows, and the
paired interval excludes 0 (issue 19's acceptance test)."""

import numpy as np
import pytest

from helpers.control import SIZE, conditioning_after_training, point_mass_tokens
from iris_wm.envs.point_mass import PointMass


def test_the_point_mass_draws_its_position_and_reports_its_state():
    env = PointMass(size=SIZE, dot=1)
    frame, info = env.reset(seed=0)
    x, y = info["state"][:2]
    assert frame[0, min(int(y * SIZE), SIZE - 1), min(int(x * SIZE), SIZE - 1)] == 255
    frame, _, terminated, _, info = env.step(np.array([1.0, 0.0]))
    assert info["state"][2] > 0 and info["state"][0] > x and not terminated  # pushed right, it moves right
    with pytest.raises(ValueError, match="finite force"):
        env.step(np.array([np.nan, 0.0]))


def test_a_world_model_of_continuous_actions_learns_to_use_them(tmp_path):
    figures = conditioning_after_training(point_mass_tokens(tmp_path, episodes=240, length=16))
    assert figures["windows"] >= 128
    assert figures["reduction"] >= 0.05, figures
    assert figures["difference_ci"][0] > 0, figures
