"""benchmarks/imagined_credit.py: its starts line up the real window, the recorded actions and the real return."""

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "imagined_credit.py"
spec = importlib.util.spec_from_file_location("imagined_credit", PATH)
credit = importlib.util.module_from_spec(spec)
spec.loader.exec_module(credit)


def episode(length: int, offset: int):
    steps = np.arange(length) + offset  # every column says which step it is
    return SimpleNamespace(
        observations=np.repeat(steps[:, None], 3, 1),
        states=np.repeat(steps[:, None], 2, 1).astype(np.float32),
        actions=np.repeat(steps[:, None], 2, 1).astype(np.float32),
        rewards=steps.astype(np.float32),
    )


def test_starts_line_up_the_window_the_recorded_actions_and_the_real_return():
    episodes = [episode(30, 0), episode(40, 1000), episode(5, 2000)]
    store = SimpleNamespace(num_episodes=3, episode=lambda e: episodes[e])
    tokens, states, actions, real = credit.starts(store, first=1, context=4, horizon=3, every=10)
    # Episode 1 only (the first is skipped, the last too short): starts at steps 4, 14, 24, 34 < 40 - 3.
    assert tokens[:, -1, 0].tolist() == [1004, 1014, 1024, 1034] and tokens.shape == (4, 4, 3)
    assert states[:, 0, 0].tolist() == [1001, 1011, 1021, 1031]
    assert actions.shape == (4, 4 - 1 + 3, 2) and actions[0, :, 0].tolist() == [1001, 1002, 1003, 1004, 1005, 1006]
    assert real.tolist() == [3 * 1004 + 3, 3 * 1014 + 3, 3 * 1024 + 3, 3 * 1034 + 3]
    with pytest.raises(SystemExit, match="No starts"):
        credit.starts(store, first=2, context=4, horizon=3, every=10)
