"""Checking a policy's safety in imagination before it runs (issue 18, part 3; `iris-wm safety-check`).

From each real start context (``burn_in`` steps of a token store: the world model is primed with them and the
actor-critic reads them), the policy acts ``rollouts`` times for ``horizon`` imagined steps, every outcome sampled
(IRIS's imagination). A rollout is unsafe if, within the horizon, the unsafe predicate holds at a step:

- ``end``: the world model predicts the episode's end (a lost life on Atari, as the world model learns ends);
- ``reward_below:X``: a predicted reward below ``X``;
- ``package.module:function``: a Python callable given by import path, called at every imagined step as
  ``function(frames=uint8 (B, 3, H, W), tokens=(B, K), state=(B, S) or None)`` and returning a bool ``(B,)``.

With ``end`` (and ``expected_ends``, the default) a rollout is scored by its chance of an end along its imagined
trajectory, ``1 - prod_t (1 - p_end_t)``, rather than by whether a sampled end happened: the trajectory (tokens,
actions) never depends on the sampled ends, so this is the sampled indicator's expectation given the trajectory, an
unbiased estimate of the same probability with less spread (Rao-Blackwell; where the imagination takes the likelier
outcome instead of sampling ends, the indicator is a threshold at 1/2 and this the chance it stands for).

Per start the estimated probability of an unsafe outcome (the mean over its rollouts) comes with its Wilson 95%
interval (Wilson 1927; the rollouts of a start are independent draws, and a mean of values in [0, 1] has a variance
at most p (1 - p) / R, so the interval holds for expected scores as for counts); overall, the mean over starts with
a bootstrap interval over starts.
Where the world model is an ensemble, each rollout's disagreement (the largest token disagreement along it) is
compared with the ``unknown_quantile`` of the same figure on held-out windows of the training data: a start whose
median rollout lies above it is reported as ``unknown`` rather than given a probability the model cannot back.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from iris_wm.agent.actor_critic import ActorCritic
from iris_wm.agent.rollout import burn_in
from iris_wm.envs.imagination import ImaginationConfig, ImaginationEnv
from iris_wm.runtime.checks import at_least, within
from iris_wm.runtime.errors import ConfigError


@dataclass
class SafetyConfig:
    horizon: int = 30
    """Imagined steps of each rollout (the issue: 20-50)."""
    rollouts: int = 16
    """Rollouts of the policy from each start."""
    unsafe: str = "end"
    """``end``, ``reward_below:X``, or ``package.module:function`` (see the module's docstring)."""
    burn_in: int = 4
    """Real steps of each start context."""
    temperature: float = 1.0
    """The policy's sampling temperature."""
    unknown_quantile: float = 0.99
    """Quantile of the held-out rollouts' disagreement above which a start is unknown (ensembles only)."""
    imagination: ImaginationConfig = field(default_factory=ImaginationConfig.iris)
    """How the outcomes are drawn (default: IRIS's, every outcome sampled)."""
    expected_ends: bool = True
    """With ``unsafe: end``: score a rollout by its chance of an end along its trajectory, not by a sampled end."""
    batch: int = 2048
    """The most rollouts imagined at once (whole starts at a time): it bounds the KV caches' memory."""

    def __post_init__(self):
        if isinstance(self.imagination, dict):
            self.imagination = ImaginationConfig(**self.imagination)
        at_least(1, "safety", horizon=self.horizon, rollouts=self.rollouts, burn_in=self.burn_in, batch=self.batch)
        at_least(0, "safety", temperature=self.temperature)
        within(0, 1, "safety", unknown_quantile=self.unknown_quantile)
        unsafe_predicate(self.unsafe)  # refused here, before anything runs


def unsafe_predicate(spec: str):
    """The predicate ``(step, frames) -> bool (B,)`` of ``spec``, and whether it reads decoded frames."""
    if spec == "end":
        return (lambda step, frames: step.terminated), False
    if spec.startswith("reward_below:"):
        try:
            threshold = float(spec.split(":", 1)[1])
        except ValueError:
            raise ConfigError(
                f"unsafe {spec!r}: write reward_below:X with X a number, e.g. reward_below:-0.5."
            ) from None
        return (lambda step, frames: step.reward < threshold), False
    module, _, name = spec.partition(":")
    if not module or not name:
        raise ConfigError(
            f"unsafe {spec!r} is not 'end', 'reward_below:X' or an import path 'package.module:function'."
        )
    try:
        function = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as error:
        raise ConfigError(f"unsafe {spec!r}: cannot import {name} from {module} ({error}).") from error
    return (lambda step, frames: function(frames=frames, tokens=step.tokens, state=step.state).bool()), True


def wilson(unsafe: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion ``unsafe / n`` (``unsafe`` may be a sum of scores in [0, 1])."""
    p = unsafe / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class Rollouts:
    """``(S, R)`` per start and rollout: unsafe (sampled), the first unsafe step (-1: none), the largest token
    disagreement (NaN without an ensemble); the imagined tokens ``(S, R, H, K)``; the rollout's score, its chance of
    being unsafe (the expected-end estimate, or the sampled indicator: see the module's docstring)."""

    unsafe: np.ndarray
    first_unsafe: np.ndarray
    disagreement: np.ndarray
    tokens: torch.Tensor
    probability: np.ndarray | None = None  # None: the sampled indicator

    def __post_init__(self):
        if self.probability is None:
            self.probability = self.unsafe.astype(float)


@torch.no_grad()
def imagined_rollouts(
    actor_critic: ActorCritic,
    world_model,
    tokenizer,
    tokens: torch.Tensor,
    actions: torch.Tensor,
    config: SafetyConfig,
    states: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Rollouts:
    """The policy's rollouts from ``S`` start contexts ``tokens (S, C, K)`` (and the ``actions (S, C - 1)``
    between; ``states (S, C, S)`` where modelled), ``config.rollouts`` each, in batched imaginations of at most
    ``config.batch`` rollouts (at least one start each)."""
    per = max(1, config.batch // config.rollouts)
    if tokens.shape[0] > per:
        parts = [
            imagined_rollouts(
                actor_critic,
                world_model,
                tokenizer,
                tokens[i : i + per],
                actions[i : i + per],
                config,
                None if states is None else states[i : i + per],
                generator,
            )
            for i in range(0, tokens.shape[0], per)
        ]
        return Rollouts(
            *(np.concatenate([getattr(p, f) for p in parts]) for f in ("unsafe", "first_unsafe", "disagreement")),
            torch.cat([p.tokens for p in parts]),
            np.concatenate([p.probability for p in parts]),
        )
    predicate, reads_frames = unsafe_predicate(config.unsafe)
    S, R, H = tokens.shape[0], config.rollouts, config.horizon
    env = ImaginationEnv(world_model, tokenizer, config.imagination, generator)
    repeat = lambda x: None if x is None else x.repeat_interleave(R, 0).to(env.device)  # noqa: E731
    context, between, proprio = repeat(tokens), repeat(actions), repeat(states)
    # The actor-critic reads the real steps before the current one.
    state = burn_in(actor_critic, context[:, :-1], None if proprio is None else proprio[:, :-1], env.frames)
    current = env.reset(context, between, proprio)
    now = env.current_state()
    unsafe = torch.zeros(S * R, dtype=torch.bool, device=env.device)
    first = torch.full((S * R,), -1, dtype=torch.long, device=env.device)
    spread = torch.full((S * R,), float("nan"), device=env.device)
    expected = config.unsafe == "end" and config.expected_ends
    safe = torch.ones(S * R, device=env.device)  # the chance of no end so far along each trajectory
    imagined = []
    for t in range(H):
        read = current if actor_critic.reads_tokens else env.frames(current)
        out = actor_critic(read, state, now if actor_critic.reads_state else None)
        policy = actor_critic.policy(out.logits)
        step = env.step(policy.to_env(policy.sample(generator, config.temperature)))
        hit = predicate(step, env.frames(step.tokens) if reads_frames else None).to(env.device) & ~unsafe
        first = torch.where(hit, t, first)
        unsafe |= hit
        if expected:
            safe = safe * (1 - step.end_probability.to(env.device))
        if step.disagreement is not None:
            spread = torch.fmax(spread, step.disagreement.tokens.float())
        state, current, now = out.state, step.tokens, step.state
        imagined.append(current)
    shape = (S, R)
    return Rollouts(
        unsafe.view(shape).cpu().numpy(),
        first.view(shape).cpu().numpy(),
        spread.view(shape).cpu().numpy(),
        torch.stack(imagined, 1).view(S, R, H, -1).cpu(),
        (1 - safe).view(shape).double().cpu().numpy() if expected else None,
    )


def summarize_starts(rollouts: Rollouts, threshold: float | None, seed: int = 0, draws: int = 1000) -> dict:
    """Per start: probability, Wilson interval, unknown; overall: the mean with a bootstrap over starts, with and
    without the unknown starts."""
    S, R = rollouts.unsafe.shape
    counts = rollouts.unsafe.sum(1)
    rates = rollouts.probability.mean(1)
    medians = None if threshold is None else np.nanmedian(rollouts.disagreement, axis=1)
    unknown = np.zeros(S, bool) if medians is None else medians > threshold
    starts = []
    for s in range(S):
        low, high = wilson(float(rates[s]) * R, R)
        hits = rollouts.first_unsafe[s][rollouts.first_unsafe[s] >= 0]
        starts.append(
            {
                "start": s,
                "unsafe_probability": None if unknown[s] else float(rates[s]),
                "wilson_95": None if unknown[s] else [low, high],
                "estimate_if_known": float(rates[s]),
                "unsafe_rollouts": int(counts[s]),
                "unknown": bool(unknown[s]),
                "mean_first_unsafe_step": float(hits.mean()) if len(hits) else None,
                "disagreement_median": None if medians is None else float(medians[s]),
            }
        )
    rng = np.random.default_rng(seed)

    def overall(mask: np.ndarray) -> dict:
        chosen = rates[mask]
        if len(chosen) == 0:
            return {"starts": 0, "rate": None, "bootstrap_95": None}
        means = chosen[rng.integers(0, len(chosen), (draws, len(chosen)))].mean(1)
        return {
            "starts": int(len(chosen)),
            "rate": float(chosen.mean()),
            "bootstrap_95": [float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))],
        }

    return {
        "starts": starts,
        "overall": overall(np.ones(S, bool)),
        "overall_known": overall(~unknown),
        "unknown_starts": int(unknown.sum()),
        "unknown_threshold": threshold,
    }


def unknown_threshold(
    actor_critic, world_model, tokenizer, store, check: SafetyConfig, windows: int, seed: int, generator=None
) -> float:
    """The ``unknown_quantile`` of the largest disagreement along the policy's rollouts from ``windows`` held-out
    windows of ``store`` (the training data's): what an ensemble's disagreement is where the data was seen."""
    from iris_wm.evaluate.uncertainty import window_rows

    held_out = window_contexts(store, window_rows(store, check.burn_in, windows, True, seed))
    seen = imagined_rollouts(actor_critic, world_model, tokenizer, *held_out[:2], check, held_out[2], generator)
    return float(np.quantile(seen.disagreement, check.unknown_quantile))


def window_contexts(store, rows: np.ndarray):
    """The tokens ``(N, C, K)`` of the store's ``rows (N, C)``, the actions between them ``(N, C - 1)`` and their
    states ``(N, C, S)`` (None without a state column)."""
    tokens = torch.from_numpy(np.stack([store.observations(r) for r in rows])).long()
    columns = store.columns
    actions = torch.from_numpy(np.asarray(columns.action[rows[:, :-1]]))
    states = None if store.state is None else torch.from_numpy(np.asarray(columns.state[rows])).float()
    return tokens, actions, states


def _gif(path, frames: torch.Tensor) -> None:
    from PIL import Image

    pages = [Image.fromarray(frame.permute(1, 2, 0).numpy()) for frame in frames]
    pages = [p.resize((p.width * 3, p.height * 3), Image.NEAREST) for p in pages]
    pages[0].save(path, save_all=True, append_images=pages[1:], duration=150, loop=0)


def _markdown(report: dict) -> str:
    cfg, overall, known = report["config"], report["overall"], report["overall_known"]

    def rate(row):
        return (
            "n/a"
            if row["rate"] is None
            else f"{row['rate']:.3f} [{row['bootstrap_95'][0]:.3f}, {row['bootstrap_95'][1]:.3f}]"
        )

    lines = [
        f"# Safety check of {report['agent']}",
        "",
        f"Unsafe: `{cfg['unsafe']}` within {cfg['horizon']} imagined steps; {cfg['rollouts']} rollouts from each of "
        f"{len(report['starts'])} real starts of {report['tokens']} ({cfg['burn_in']} real steps each); "
        + (
            "each rollout scored by its chance of an end along its imagined trajectory."
            if cfg["unsafe"] == "end" and cfg["expected_ends"]
            else "each rollout scored by its sampled outcome."
        ),
        "",
        f"- Unsafe outcome, mean over starts (bootstrap 95% over starts): **{rate(overall)}**",
        f"- Starts reported unknown (ensemble disagreement above the held-out {cfg['unknown_quantile']} quantile): "
        f"{report['unknown_starts']}; over the known starts: {rate(known)}",
        "",
        "| start (store row) | P(unsafe) | Wilson 95% | first unsafe step (mean) | unknown |",
        "|---|---|---|---|---|",
    ]
    for row in sorted(report["starts"], key=lambda r: -r["estimate_if_known"])[:20]:
        p = "unknown" if row["unknown"] else f"{row['unsafe_probability']:.3f}"
        w = "" if row["wilson_95"] is None else f"[{row['wilson_95'][0]:.3f}, {row['wilson_95'][1]:.3f}]"
        step = "" if row["mean_first_unsafe_step"] is None else f"{row['mean_first_unsafe_step']:.1f}"
        lines.append(f"| {row['row']} | {p} | {w} | {step} | {row['unknown']} |")
    lines += ["", *[f"![worst {i}]({name})" for i, name in enumerate(report["gifs"])]]
    return "\n".join(lines) + "\n"


def safety_check(
    agent: str,
    tokens: str,
    out: str,
    check: SafetyConfig = SafetyConfig(),  # noqa: B008  (never mutated)
    starts: int = 64,
    calibration: str | None = None,
    world_model: str | None = None,
    gifs: int = 4,
    seed: int = 0,
) -> dict:
    """Estimate, in imagination, the chance that the agent's policy reaches an unsafe outcome within the horizon.

    Args:
        agent: the agent (a checkpoint of the agent stage, an agent folder, a Hub id).
        tokens: token store whose steps are the real start contexts (encoded by the agent's tokenizer).
        out: folder for report.json, report.md and GIFs of the worst rollouts.
        check: horizon, rollouts, the unsafe predicate, burn-in, the policy's temperature, the unknown gate.
        starts: start contexts drawn from the store.
        calibration: token store whose held-out windows calibrate the unknown gate (default: ``tokens``'s held-out
            episodes); used where the world model is an ensemble.
        world_model: imagine in this world model (an ensemble folder from ``iris-wm ensemble build``) instead of the
            agent's own.
        gifs: GIFs of the starts with the highest estimated probability (real context, then an unsafe rollout).
        seed: draws the starts and seeds the rollouts.
    """
    from iris_wm.data.store import TokenStore
    from iris_wm.data.tokens import check_tokenizer
    from iris_wm.evaluate.uncertainty import window_rows
    from iris_wm.hub.checkpoints import load_agent, load_model

    at_least(1, "safety-check", starts=starts)
    at_least(0, "safety-check", gifs=gifs)
    loaded = load_agent(agent)
    model = load_model(world_model, "world_model") if world_model is not None else loaded.world_model
    if model is None or loaded.actor_critic is None:
        raise ConfigError(f"A safety check needs the agent's actor-critic and a world model; {agent} lacks one.")
    store = TokenStore.open(tokens)
    check_tokenizer(store, loaded.tokenizer)
    generator = torch.Generator().manual_seed(seed)
    rows = window_rows(store, check.burn_in, starts, False, seed)
    context = window_contexts(store, rows)
    rollouts = imagined_rollouts(
        loaded.actor_critic, model, loaded.tokenizer, *context[:2], check, context[2], generator
    )
    threshold = None
    if hasattr(model, "members"):
        reference = TokenStore.open(calibration) if calibration is not None else store
        threshold = unknown_threshold(
            loaded.actor_critic, model, loaded.tokenizer, reference, check, starts, seed + 1, generator
        )
    report = summarize_starts(rollouts, threshold, seed)
    for row, start in zip(rows[:, -1].tolist(), report["starts"], strict=True):
        start["row"] = int(row)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    report["gifs"] = []
    worst = sorted(range(len(rows)), key=lambda s: -report["starts"][s]["estimate_if_known"])[:gifs]
    decode = torch.no_grad()(loaded.tokenizer.decode)
    for rank, s in enumerate(worst):
        pick = int(np.argmax(rollouts.unsafe[s] + rollouts.probability[s]))  # an unsafe one, the likeliest
        frames = decode(torch.cat([context[0][s], rollouts.tokens[s, pick]]))
        name = f"worst_{rank}_row{report['starts'][s]['row']}.gif"
        _gif(folder / name, frames)
        report["gifs"].append(name)
    report.update(
        agent=agent, tokens=tokens, world_model=world_model or "the agent's", config=_config_dict(check), seed=seed
    )
    (folder / "report.json").write_text(json.dumps(report, indent=1))
    (folder / "report.md").write_text(_markdown(report))
    return report


def _config_dict(config: SafetyConfig) -> dict:
    return dataclasses.asdict(config)
