"""The whole pipeline on a continuous-control task, at debug size: collect the point mass, fit the tokenizer and
encode, fit the world model (box actions, state tokens) and the agent (squashed Gaussian, reading the state) in its
imagination, then play the real task with the agent and with the random policy."""

import json

import numpy as np

from helpers.pipeline import collect_and_train
from iris_wm.agent.planning import PlannerConfig
from iris_wm.data.store import TokenStore
from iris_wm.envs.atari import EnvConfig
from iris_wm.evaluate.play import evaluate
from iris_wm.train.stages import run_agent_cli, stage_args


def test_collect_train_and_evaluate_on_the_point_mass(tmp_path):
    tokenizer, tokens, world_model = collect_and_train(
        tmp_path, 240, 120, "--env.suite", "point-mass", "--env.max_episode_steps", "20"
    )
    store = TokenStore.open(tokens)
    assert store.action_space.size == 2 and store.state.size == 4 and store.fps == 20
    run_agent_cli(
        stage_args(
            "fit",
            "agent",
            "debug",
            tokens,
            tmp_path / "agent",
            "--model.world_model",
            str(world_model),
            "--model.tokenizer",
            str(tokenizer),
        )
    )
    agent = tmp_path / "agent" / "checkpoints" / "last.ckpt"
    env = EnvConfig(suite="point-mass", max_episode_steps=15)
    played = evaluate(str(tmp_path / "agent.json"), str(agent), env, episodes=3, num_envs=2, seed=5)
    random = evaluate(str(tmp_path / "random.json"), None, env, episodes=3, num_envs=2, seed=5)
    for result in (played, random):
        assert result["game"] == "point-mass" and result["lengths"] == [15, 15, 15]
        assert result["human_normalized"] is None and np.isfinite(result["mean"])
    assert json.loads((tmp_path / "agent.json").read_text())["policy"] == str(agent)
    # Model-predictive control with the agent's world model, MPPI over the box (issue 18): actions in the box.
    plan = PlannerConfig(samples=16, elites=4, horizon=2, iterations=2)
    planned = evaluate(str(tmp_path / "mpc.json"), str(agent), env, episodes=2, num_envs=2, seed=5, planner=plan)
    assert planned["policy"] == f"mpc:{agent}" and planned["planner"]["samples"] == 16
    assert planned["lengths"] == [15, 15] and np.isfinite(planned["mean"])
