"""PNG plots of a fitted sweep (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

from scaling.estimators import FlopsPerToken  # noqa: E402
from scaling.laws import ParametricLaw, fit_power_law  # noqa: E402

# Published exponents of N_opt ~ C^a to draw beside ours.
REFERENCE_SLOPES = {
    "Chinchilla 0.50": 0.50,
    "Pearce 256 tok/img 0.49": 0.49,
    "Pearce 540 tok/img 0.62": 0.62,
    "Kaplan 0.73": 0.73,
}


def _law(fit) -> ParametricLaw:
    return ParametricLaw(**{k: fit["parametric_law"][k]["estimate"] for k in ("E", "A", "B", "alpha", "beta")})


def _finish(fig, axes, path: Path) -> None:
    """Legends, no minor labels on the FLOPs / parameters axis (they overlapped), save, close."""
    for ax in np.atleast_1d(axes):
        ax.legend(fontsize=7)
        ax.xaxis.set_minor_formatter(NullFormatter())
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _sizes(records):
    labels = sorted({r["size"] for r in records}, key=lambda s: min(r["params"] for r in records if r["size"] == s))
    colours = plt.cm.viridis(np.linspace(0, 0.9, len(labels)))
    return labels, dict(zip(labels, colours, strict=True))


def loss_vs_compute(records, fit, path: Path, title: str) -> None:
    fits = [r for r in records if r["role"] == "fit"]
    labels, colour = _sizes(fits)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label in labels:
        mine = sorted((r for r in fits if r["size"] == label), key=lambda r: r["flops"])
        ax.plot(
            [r["flops"] for r in mine], [r["val_obs_ce"] for r in mine], "o-", color=colour[label], label=label, ms=4
        )
    front = fit["estimators"]["frontier"]
    if len(front["budgets"]) >= 2:
        law = fit_power_law(front["budgets"], front["loss"])
        grid = np.geomspace(min(front["budgets"]), max(r["flops"] for r in records) * 1.2, 50)
        ax.plot(grid, law(grid), "k--", lw=1, label=f"frontier, L ~ C^{law.exponent:.3f}")
    for h in fit["holdout"]:
        lo, hi = h["prediction_interval"]["ci95"] or (h["predicted"], h["predicted"])
        ax.errorbar(
            [h["flops"]],
            [h["predicted"]],
            yerr=[[h["predicted"] - lo], [hi - h["predicted"]]],
            fmt="s",
            color="tab:red",
            capsize=4,
            label="held-out: predicted (95% PI)",
        )
        ax.plot([h["flops"]], [h["observed"]], "*", color="gold", mec="k", ms=14, label="held-out: observed")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="training FLOPs (exact count)",
        ylabel="held-out CE (nats/token)",
        title=title,
    )
    _finish(fig, ax, path)


def isoflop_curves(records, fit, path: Path, title: str) -> None:
    fits = [r for r in records if r["role"] == "fit"]
    budgets = sorted({r["budget"] for r in fits})
    colours = plt.cm.plasma(np.linspace(0, 0.85, len(budgets)))
    parabolas = fit["estimators"]["isoflop"].get("parabolas", {})
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for c, col in zip(budgets, colours, strict=True):
        mine = sorted((r for r in fits if r["budget"] == c), key=lambda r: r["params"])
        n = np.array([r["params"] for r in mine])
        ax.plot(n, [r["val_obs_ce"] for r in mine], "o", color=col, label=f"C = {c:.2g}")
        p = parabolas.get(f"{c:.6g}")
        if p:
            x = np.linspace(np.log(n.min()) - 0.2, np.log(n.max()) + 0.2, 100)
            ax.plot(np.exp(x), np.exp(np.polyval(p, x)), "-", color=col, lw=1)
    iso = fit["estimators"]["isoflop"]
    ax.plot(iso["n_opt"], iso["loss"], "kx", ms=9, mew=2, label="interior minima")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="parameters N",
        ylabel="held-out CE (nats/token)",
        title=f"{title}: isoFLOP curves (parabolas in log-log)",
    )
    _finish(fig, ax, path)


def optimal_allocation(fit, path: Path, title: str) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    markers = {"frontier": "o", "isoflop": "s", "parametric": "^"}
    for name, est in fit["estimators"].items():
        if not est["budgets"]:
            continue
        a, b = est["a"]["estimate"], est["b"]["estimate"]
        lab_a = f"{name}: a = {a:.3f}" if a is not None else name
        lab_b = f"{name}: b = {b:.3f}" if b is not None else name
        axes[0].plot(est["budgets"], est["n_opt"], markers[name] + "-", label=lab_a)
        axes[1].plot(est["budgets"], est["d_opt"], markers[name] + "-", label=lab_b)
    rec = fit["recommendations"]
    c = [r["budget"] for r in rec]
    band = [r["n_opt"]["ci95"] for r in rec]
    if all(band):
        axes[0].fill_between(c, [b[0] for b in band], [b[1] for b in band], alpha=0.2, label="parametric 95% CI")
    dband = [r["d_opt"]["ci95"] for r in rec]
    if all(dband):
        axes[1].fill_between(c, [b[0] for b in dband], [b[1] for b in dband], alpha=0.2, label="parametric 95% CI")
    anchor_c, anchor_n = c[0], rec[0]["n_opt"]["estimate"]
    grid = np.geomspace(min(c), max(c), 10)
    for label, slope in REFERENCE_SLOPES.items():
        axes[0].plot(grid, anchor_n * (grid / anchor_c) ** slope, ":", lw=1, label=f"slope {label}")
    axes[0].set(xscale="log", yscale="log", xlabel="training FLOPs", ylabel="N_opt", title=title)
    axes[1].set(xscale="log", yscale="log", xlabel="training FLOPs", ylabel="D_opt (tokens)")
    for ax in axes:
        _finish(fig, ax, path)


def contours(records, fit, path: Path, title: str) -> None:
    fits = [r for r in records if r["role"] == "fit"]
    law = _law(fit)
    n = np.array([r["params"] for r in records])
    d = np.array([r["tokens"] for r in records])
    gn = np.geomspace(n.min() / 2, n.max() * 2, 120)
    gd = np.geomspace(d.min() / 2, d.max() * 2, 120)
    NN, DD = np.meshgrid(gn, gd)
    fig, ax = plt.subplots(figsize=(7, 5))
    cs = ax.contour(NN, DD, law(NN, DD), levels=14, cmap="viridis")
    ax.clabel(cs, fontsize=6, fmt="%.3f")
    flops = FlopsPerToken([r["params"] for r in fits], [r["flops_per_token"] for r in fits])
    for c in sorted({r["budget"] for r in fits}):
        ax.plot(gn, c / flops(gn), "k:", lw=0.8)
    ax.scatter([r["params"] for r in fits], [r["tokens"] for r in fits], c="k", s=12, label="fit points")
    for h in fit["holdout"]:
        ax.plot([h["params"]], [h["tokens"]], "*", color="gold", mec="k", ms=14, label="held-out run")
    par = fit["estimators"]["parametric"]
    ax.plot(par["n_opt"], par["d_opt"], "r^-", label="compute-optimal (parametric)")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="parameters N",
        ylabel="training tokens D",
        title=f"{title}: fitted L(N, D), isoFLOP lines dotted",
    )
    _finish(fig, ax, path)


def residuals(records, fit, path: Path, title: str) -> None:
    fits = [r for r in records if r["role"] == "fit"]
    law = _law(fit)
    labels, colour = _sizes(fits)
    fig, ax = plt.subplots(figsize=(7, 4))
    for label in labels:
        mine = [r for r in fits if r["size"] == label]
        res = [np.log(r["val_obs_ce"]) - np.log(law(r["params"], r["tokens"])) for r in mine]
        ax.plot([r["flops"] for r in mine], res, "o", color=colour[label], label=label)
    ax.axhline(0, color="k", lw=0.8)
    ax.set(xscale="log", xlabel="training FLOPs", ylabel="log L - log L_fit", title=f"{title}: residuals")
    _finish(fig, ax, path)


PLOTS = {
    "loss_vs_compute": loss_vs_compute,
    "isoflop": isoflop_curves,
    "optimal_allocation": optimal_allocation,
    "contours": contours,
    "residuals": residuals,
}


def plot_all(records: list[dict], fits: dict, out: Path) -> dict[str, list[Path]]:
    """Every plot for every series; returns the files written per series."""
    written = {}
    for series, fit in fits["series"].items():
        mine = [r for r in records if r["series"] == series]
        paths = []
        for name, draw in PLOTS.items():
            path = Path(out) / f"{series}_{name}.png"
            if name == "optimal_allocation":
                draw(fit, path, series)
            else:
                draw(mine, fit, path, series)
            paths.append(path)
        written[series] = paths
    return written
