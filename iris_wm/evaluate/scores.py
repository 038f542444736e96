"""Human-normalised scores and their aggregation across games and seeds.

The random and human scores of the 26 Atari 100k games are the published ones (Mnih et al. 2015 and the
Atari 100k literature, as IRIS reports them): ``HNS = (score - random) / (human - random)``. Aggregates follow
Agarwal et al. 2021 ("Deep RL at the edge of the statistical precipice"): mean, median and interquartile
mean of the per-run normalised scores, with percentile intervals from a stratified bootstrap over runs.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Annotated

import numpy as np
from pydantic import ConfigDict, Field, RootModel, ValidationError

from iris_wm.runtime.errors import ConfigError
from iris_wm.runtime.schema import Schema, SchemaError, describe, read, read_json

# game: (random score, human score)
REFERENCE_SCORES: dict[str, tuple[float, float]] = {
    "Alien": (227.8, 7127.7),
    "Amidar": (5.8, 1719.5),
    "Assault": (222.4, 742.0),
    "Asterix": (210.0, 8503.3),
    "BankHeist": (14.2, 753.1),
    "BattleZone": (2360.0, 37187.5),
    "Boxing": (0.1, 12.1),
    "Breakout": (1.7, 30.5),
    "ChopperCommand": (811.0, 7387.8),
    "CrazyClimber": (10780.5, 35829.4),
    "DemonAttack": (152.1, 1971.0),
    "Freeway": (0.0, 29.6),
    "Frostbite": (65.2, 4334.7),
    "Gopher": (257.6, 2412.5),
    "Hero": (1027.0, 30826.4),
    "Jamesbond": (29.0, 302.8),
    "Kangaroo": (52.0, 3035.0),
    "Krull": (1598.0, 2665.5),
    "KungFuMaster": (258.5, 22736.3),
    "MsPacman": (307.3, 6951.6),
    "Pong": (-20.7, 14.6),
    "PrivateEye": (24.9, 69571.3),
    "Qbert": (163.9, 13455.0),
    "RoadRunner": (11.5, 7845.0),
    "Seaquest": (68.4, 42054.7),
    "UpNDown": (533.4, 11693.2),
}


def margin_over_random(agent: dict, random: dict) -> tuple[float, float]:
    """The agent's mean return minus the random policy's, and the combined standard error of the two means (each a
    result with ``mean`` and ``stderr``, as :func:`iris_wm.evaluate.play.evaluate` returns)."""
    return agent["mean"] - random["mean"], math.hypot(agent["stderr"], random["stderr"])


def game_name(game: str) -> str:
    """``ALE/Breakout-v5`` or ``Breakout`` -> ``Breakout``."""
    return game.removeprefix("ALE/").split("-v")[0]


def human_normalized(game: str, score: float) -> float | None:
    """The human-normalised score, or None for a game outside the Atari 100k set."""
    reference = REFERENCE_SCORES.get(game_name(game))
    if reference is None:
        return None
    random, human = reference
    return (score - random) / (human - random)


def interquartile_mean(values: np.ndarray) -> float:
    """Mean of the middle 50% of the values (a quarter trimmed at each end, fractionally at the cut points)."""
    x = np.sort(np.asarray(values, dtype=np.float64).ravel())
    n = len(x)
    if n == 0:
        raise ValueError("The interquartile mean of no values is undefined.")
    # Weight each sorted value by how much of it lies within [n/4, 3n/4] in rank space.
    lower, upper = n / 4, 3 * n / 4
    ranks = np.arange(n)
    weights = np.clip(np.minimum(ranks + 1, upper) - np.maximum(ranks, lower), 0.0, 1.0)
    return float((weights * x).sum() / weights.sum())


AGGREGATES = {"mean": np.mean, "median": np.median, "iqm": interquartile_mean}


def aggregate(scores: dict[str, list[float]], draws: int = 2000, seed: int = 0, confidence: float = 0.95) -> dict:
    """Aggregate normalised scores ``{game: [one per seed]}`` with stratified bootstrap intervals.

    Each draw resamples the seeds of every game with replacement (games are the strata), then recomputes
    mean, median and IQM over all (game, seed) runs.
    """
    if not scores or any(len(v) == 0 for v in scores.values()):
        raise ValueError("Give at least one score for every game.")
    games = sorted(scores)
    runs = [np.asarray(scores[g], dtype=np.float64) for g in games]
    rng = np.random.default_rng(seed)
    result = {"games": games, "runs": int(sum(len(r) for r in runs)), "draws": draws, "confidence": confidence}
    samples = {name: np.empty(draws) for name in AGGREGATES}
    for i in range(draws):
        pooled = np.concatenate([r[rng.integers(0, len(r), len(r))] for r in runs])
        for name, fn in AGGREGATES.items():
            samples[name][i] = fn(pooled)
    pooled = np.concatenate(runs)
    tail = (1 - confidence) / 2 * 100
    for name, fn in AGGREGATES.items():
        low, high = np.percentile(samples[name], [tail, 100 - tail])
        result[name] = {"value": float(fn(pooled)), "low": float(low), "high": float(high)}
    return result


def summarize(game: str, returns: list[float]) -> dict:
    """Mean, standard error of the mean, and the human-normalised mean of per-episode returns."""
    n = len(returns)
    mean = float(np.mean(returns))
    stderr = float(np.std(returns, ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    return {"mean": mean, "stderr": stderr, "human_normalized": human_normalized(game, mean)}


class Result(Schema):
    """The JSON file :func:`iris_wm.evaluate.play.evaluate` writes."""

    model_config = ConfigDict(extra="allow")  # later fields (seconds, env, provenance) are not read here
    game: str
    policy: str
    episodes: Annotated[int, Field(ge=1)]
    returns: list[float]
    mean: float
    stderr: float | None
    human_normalized: float | None


def read_result(path: str | Path) -> Result:
    """An evaluation result, checked (a file of another kind, or a damaged one, is refused with its name)."""
    result = read(path, Result, "evaluation result", "Give a JSON file written by the evaluation (iris-wm evaluate).")
    if len(result.returns) != result.episodes:
        raise SchemaError(f"{path} lists {len(result.returns)} returns for {result.episodes} episodes: it was edited.")
    return result


def result_figures(paths: list[str | Path]) -> tuple[dict[str, float], str | None]:
    """``(figures, game)`` of evaluation results, for a model card: mean return, standard error and human-normalised
    score of the agent and of the random policy."""
    figures, game = {}, None
    for path in paths:
        result = read_result(path)
        label = "random policy" if result.policy == "random" else "agent"
        figures[f"{label}: mean return ({result.episodes} episodes)"] = result.mean
        if result.stderr is not None:
            figures[f"{label}: standard error"] = result.stderr
        if result.human_normalized is not None:
            figures[f"{label}: human-normalised score"] = result.human_normalized
        game = game or result.game
    return figures, game


class Figures(RootModel[dict[str, float]]):
    """A JSON file of more figures for a card: ``{"figure": number, ...}``."""


def read_figures(path: str | Path) -> dict[str, float]:
    fix = 'Give one JSON object of figure names to numbers, e.g. {"held-out PSNR (dB)": 32.4}.'
    data = read_json(path, "figures file", fix)
    try:
        return Figures.model_validate(data).root
    except ValidationError as err:
        raise SchemaError(f"{path} is not a figures file ({describe(err)}). {fix}") from err


def aggregate_results(paths: list[str | Path], draws: int = 2000) -> dict:
    """:func:`aggregate` of the human-normalised scores of evaluation results (one JSON file per game and seed,
    as :func:`iris_wm.evaluate.play.evaluate` writes them)."""
    scores: dict[str, list[float]] = defaultdict(list)
    for path in paths:
        result = read_result(path)
        hns = human_normalized(result.game, result.mean)
        if hns is None:
            raise ConfigError(
                f"{path} is a {result.game} result; human-normalised scores exist for the 26 Atari 100k games only."
            )
        scores[result.game].append(hns)
    return aggregate(dict(scores), draws=draws)
