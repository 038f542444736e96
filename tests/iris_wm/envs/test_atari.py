"""The wrapper stack against ale-py directly, and the IRIS protocol pieces one by one."""

import cv2
import numpy as np
import pytest

from iris_wm.envs.atari import EnvConfig, make_env, make_raw_env, resolve_game_id


def test_wrapper_stack_matches_ale_directly():
    # No no-op starts, no life-loss episodes, no cap: what is left is frame skip, max-pool and resize.
    cfg = EnvConfig(noop_max=0, life_loss_terminates=False, max_episode_steps=None)
    env = make_env(cfg)
    obs, _ = env.reset(seed=3)
    raw = make_raw_env(cfg)
    raw.reset(seed=3)
    ale, action_set = raw.unwrapped.ale, raw.unwrapped._action_set
    rng = np.random.default_rng(0)
    total_reward = 0.0
    for _ in range(300):
        action = int(rng.integers(len(action_set)))
        obs, reward, terminated, truncated, _ = env.step(action)
        frames, expected_reward = [], 0
        for _ in range(cfg.frame_skip):
            expected_reward += ale.act(action_set[action])
            frames.append(ale.getScreenRGB())
            if ale.game_over():
                break
        pooled = np.maximum(frames[-2], frames[-1]) if len(frames) >= 2 else frames[-1]
        expected = cv2.resize(pooled, (64, 64), interpolation=cv2.INTER_LINEAR).transpose(2, 0, 1)
        assert obs.dtype == np.uint8 and obs.shape == (3, 64, 64)
        np.testing.assert_array_equal(obs, expected)
        assert reward == expected_reward
        assert terminated == ale.game_over() and not truncated
        total_reward += reward
        if terminated:
            break
    assert total_reward >= 0


def test_life_loss_ends_the_training_episode_but_not_the_game():
    env = make_env(EnvConfig(noop_max=0, max_episode_steps=None))
    env.reset(seed=0)
    ale = env.unwrapped.ale
    lives_at_start = ale.lives()
    for _ in range(2000):
        _, _, terminated, truncated, info = env.step(env.action_space.sample())
        if terminated:
            break
    assert terminated and info["life_loss"], "a random policy loses a life in Breakout within 2000 steps"
    assert ale.lives() == lives_at_start - 1
    frame_before = ale.getEpisodeFrameNumber()
    env.reset()
    assert ale.getEpisodeFrameNumber() > frame_before, "reset after a life loss must continue the same game"
    assert ale.lives() == lives_at_start - 1


def test_step_cap_is_truncation_not_termination():
    env = make_env(EnvConfig(noop_max=0, max_episode_steps=5))
    env.reset(seed=0)
    for _ in range(5):
        _, _, terminated, truncated, _ = env.step(0)
    assert truncated and not terminated


def test_noop_starts_take_1_to_noop_max_emulator_frames():
    # As in IRIS, the no-ops act on the raw emulator (before frame skip): one frame each.
    env = make_env(EnvConfig(noop_max=30))
    counts = []
    for seed in range(12):
        env.reset(seed=seed)
        counts.append(env.unwrapped.ale.getEpisodeFrameNumber())
    assert all(1 <= c <= 30 for c in counts) and len(set(counts)) > 3


def test_sticky_actions_option_reaches_ale():
    env = make_env(EnvConfig(sticky_action_prob=0.25))
    assert env.unwrapped.ale.getFloat("repeat_action_probability") == pytest.approx(0.25)
    assert make_env(EnvConfig()).unwrapped.ale.getFloat("repeat_action_probability") == 0.0


def test_game_names_resolve_and_unknown_ids_get_suggestions():
    assert resolve_game_id("Breakout") == "ALE/Breakout-v5"
    assert resolve_game_id("ALE/Pong-v5") == "ALE/Pong-v5"
    with pytest.raises(ValueError, match="Unknown Atari game id 'Breakot'.*ALE/Breakout-v5"):
        make_env(EnvConfig(game="Breakot"))


def test_snapshot_and_restore_continue_an_episode_exactly():
    import io

    import torch

    from iris_wm.envs.atari import env_snapshot, restore_env

    config = EnvConfig(max_episode_steps=500)
    env = make_env(config, seed=3)
    rng = np.random.default_rng(0)
    for _ in range(37):
        env.step(int(rng.integers(4)))
    buffer = io.BytesIO()
    torch.save(env_snapshot(env), buffer)  # survives a weights_only checkpoint
    actions = rng.integers(0, 4, 300)

    def play(e):
        out = []
        for a in actions:
            obs, reward, terminated, truncated, _ = e.step(int(a))
            out.append((obs.copy(), reward, terminated, truncated))
            if terminated or truncated:
                obs, _ = e.reset()
                out.append((obs.copy(),))
        return out

    expected = play(env)
    fresh = make_env(config, seed=99)
    buffer.seek(0)
    restore_env(fresh, torch.load(buffer, weights_only=True))
    got = play(fresh)
    assert len(got) == len(expected) and any(len(x) == 1 for x in expected), "the replay crosses a reset"
    for a, b in zip(got, expected, strict=True):
        assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
