"""Figures of searches and studies: accuracy against multiply-adds (PNG, matplotlib's Agg backend).

The grid search (:func:`plot_search`), the scaling study (:func:`plot_study`) and its fitted laws
(:func:`plot_fit`), and NAS (:func:`plot_pareto`); every figure is written atomically."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from effnet.atomic import atomic_write


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | Path, **options: Any) -> Path:
    """Write the figure as PNG at 120 dpi (``options`` go to ``savefig``) and close it."""
    try:
        return atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=120, **options), mkdir=True)
    finally:
        _pyplot().close(fig)


def _errors(rows: Sequence[dict[str, Any]], scale: float = 100.0) -> list[list[float]]:
    """Each row's 95% half-width below and above its mean (0 where unknown: one seed), drawn within
    the possible accuracies 0–1 (a t-interval of few seeds may reach beyond them), times ``scale``."""
    half = [r.get("accuracy_ci95") or 0.0 for r in rows]
    return [
        [scale * min(h, r["accuracy"]) for h, r in zip(half, rows)],
        [scale * min(h, 1.0 - r["accuracy"]) for h, r in zip(half, rows)],
    ]


def plot_search(
    rows: Sequence[dict[str, Any]],
    path: str | Path,
    *,
    title: str = "grid search",
    best: dict[str, Any] | None = None,
) -> Path:
    """Scatter of the grid points: mean accuracy vs multiply-adds with 95% intervals (error bars, where
    a point has two or more seeds), ``best`` (default: the most accurate) marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    done = [r for r in rows if r.get("accuracy") is not None and r.get("macs")]
    if done:
        macs = [r["macs"] / 1e6 for r in done]
        acc = [100 * r["accuracy"] for r in done]
        ax.errorbar(macs, acc, yerr=_errors(done), fmt="none", ecolor="gray", elinewidth=0.8, capsize=2, zorder=1)
        shade = [r.get("alpha", 1.0) for r in done]
        points = ax.scatter(macs, acc, c=shade, cmap="viridis", s=36, edgecolors="black", linewidths=0.4, zorder=2)
        fig.colorbar(points, ax=ax, label="α (depth)")
        best = best or max(done, key=lambda r: (r["accuracy"], -r["macs"]))
        ax.scatter([best["macs"] / 1e6], [100 * best["accuracy"]], marker="*", s=260, c="red", zorder=3)
        ax.annotate(
            f"α={best['alpha']:g} β={best['beta']:g} γ={best['gamma']:g}",
            (best["macs"] / 1e6, 100 * best["accuracy"]),
            textcoords="offset points",
            xytext=(8, -12),
            fontsize=8,
        )
    else:
        ax.text(0.5, 0.5, "no finished trial yet", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("multiply-adds (millions)")
    ax.set_ylabel("validation top-1 accuracy (%), mean and 95% interval")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return _save(fig, path, bbox_inches="tight")


#: The x axes of the scaling study's figure.
AXES = {
    "macs": "multiply-adds (millions, log scale)",
    "params": "parameters (millions, log scale)",
    "train_seconds": "measured training time (seconds, log scale)",
    "activations": "activations (millions, log scale)",
}

#: Curve styles of the scaling study, in drawing order.
FAMILY_STYLES = {
    "width": ("tab:blue", "o", "width w"),
    "depth": ("tab:orange", "s", "depth d"),
    "resolution": ("tab:green", "^", "resolution r"),
    "compound": ("tab:red", "*", "compound φ"),
}


def plot_study(
    curves: dict[str, list[dict[str, Any]]],
    path: str | Path,
    *,
    title: str = "scaling study",
    x: str = "macs",
) -> Path:
    """One curve per scaling family: mean accuracy (with 95% intervals as error bars where points have
    two or more seeds) against ``x`` (``macs``, ``params`` or ``train_seconds``), each point labelled
    by its multiplier."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for family, rows in curves.items():
        color, marker, label = FAMILY_STYLES.get(family, ("gray", "x", family))
        done = sorted((r for r in rows if r.get("accuracy") is not None and r.get(x)), key=lambda r: r[x])
        if not done:
            continue
        xs = [r[x] / (1 if x == "train_seconds" else 1e6) for r in done]
        ys = [100 * r["accuracy"] for r in done]
        size = 9 if marker == "*" else 6
        ax.errorbar(xs, ys, yerr=_errors(done), color=color, marker=marker, markersize=size, capsize=3, label=label)
        for r, at, y in zip(done, xs, ys):
            ax.annotate(f"{r['value']:g}", (at, y), textcoords="offset points", xytext=(4, 4), fontsize=7, color=color)
    ax.set_xscale("log")
    ax.set_xlabel(AXES[x])
    ax.set_ylabel("validation top-1 accuracy (%), mean and 95% interval")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    return _save(fig, path, bbox_inches="tight")


def plot_fit(drawing: dict[str, Any], path: str | Path, *, title: str = "fitted scaling laws", x: str = "macs") -> Path:
    """The fitted laws of a study (``drawing`` from :func:`effnet.search.laws.fit_study`): each curve's
    measured points with their seed 95% intervals (hollow: left out of the fit, or on a curve no law
    could be fitted to), its fitted law with the bootstrap 95% band, solid over the measured costs and
    dashed beyond the largest, and the target cost as a vertical line."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5))
    scale = 1 if x == "train_seconds" else 1e6
    for family, curve in drawing["curves"].items():
        color, marker, label = FAMILY_STYLES.get(family, ("gray", "x", family))
        for fitted in (True, False):
            shown = [p for p in curve["points"] if p["fitted"] is fitted]
            if not shown:
                continue
            ax.errorbar(
                [p["cost"] / scale for p in shown],
                [100 * p["accuracy"] for p in shown],
                yerr=_errors(shown),
                fmt=marker,
                color=color,
                mfc=color if fitted else "none",
                markersize=9 if marker == "*" else 6,
                capsize=3,
                label=label if fitted or "cost" not in curve else None,
            )
        if "cost" not in curve:  # no law on this curve: its points only
            continue
        xs = [c / scale for c in curve["cost"]]
        inside = [c <= curve["max_cost"] * 1.0001 for c in curve["cost"]]
        near = [x for x, i in zip(xs, inside) if i]
        far = [x for x, i in zip(xs, inside) if not i]
        ys = [100 * a for a in curve["accuracy"]]
        ax.plot(near, ys[: len(near)], color=color, lw=1.5)
        if far:
            ax.plot([near[-1], *far], ys[len(near) - 1 :], color=color, lw=1.5, ls="--")
        ax.fill_between(xs, [100 * a for a in curve["low"]], [100 * a for a in curve["high"]], color=color, alpha=0.15)
    if drawing.get("target"):
        ax.axvline(drawing["target"] / scale, color="black", ls=":", lw=1, label="target")
    ax.set_xscale("log")
    ax.set_xlabel(AXES[x])
    ax.set_ylabel("validation top-1 accuracy (%): seed means, fitted law and 95% band")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _save(fig, path, bbox_inches="tight")


def plot_pareto(
    trials: Sequence[dict[str, Any]],
    front: Sequence[dict[str, Any]],
    best: dict[str, Any] | None,
    path: str | Path,
    *,
    xlabel: str,
    title: str,
    target: float | None = None,
) -> Path:
    """Accuracy against multiply-adds for every completed trial (with its 95% interval where it has
    several seeds), the Pareto ``front`` joined, the ``best`` ringed and the multiply-adds ``target``
    (if any) as a dashed line."""
    plt = _pyplot()
    done = [r for r in trials if r["state"] == "COMPLETE" and r.get("accuracy") is not None]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter([r["macs"] / 1e6 for r in done], [r["accuracy"] for r in done], s=18, alpha=0.5, label="architectures")
    spread = [r for r in done if r.get("accuracy_ci95")]  # several seeds: the mean's 95% interval
    if spread:
        xs, ys = [r["macs"] / 1e6 for r in spread], [r["accuracy"] for r in spread]
        ax.errorbar(xs, ys, yerr=_errors(spread, scale=1.0), fmt="none", ecolor="gray", elinewidth=0.6)
    ax.plot([r["macs"] / 1e6 for r in front], [r["accuracy"] for r in front], "o-", color="C1", label="Pareto front")
    if best:
        ax.scatter(
            [best["macs"] / 1e6],
            [best["accuracy"]],
            s=160,
            facecolors="none",
            edgecolors="C3",
            linewidths=2,
            label="best reward",
        )
    if target is not None:
        ax.axvline(target / 1e6, color="gray", ls="--", lw=1, label="target T")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("proxy accuracy (top-1)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_confusion(matrix: Sequence[Sequence[int]], classes: Sequence[str], path: str | Path, *, title: str) -> Path:
    """The confusion matrix (rows: true class, columns: predicted), each row shaded by its share of the row's
    images and, up to 30 classes, labelled with its count."""
    import numpy as np

    plt = _pyplot()
    counts = np.asarray(matrix, dtype=np.int64).reshape(len(classes), len(classes))
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = min(12.0, 3.0 + 0.35 * len(classes))
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, label="share of the true class's images")
    if len(classes) <= 30:
        ticks = range(len(classes))
        ax.set_xticks(ticks, [str(c) for c in classes], rotation=90, fontsize=7)
        ax.set_yticks(ticks, [str(c) for c in classes], fontsize=7)
        for i in ticks:
            for j in ticks:
                if counts[i, j]:
                    color = "white" if shares[i, j] > 0.5 else "black"
                    ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=7, color=color)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    return _save(fig, path, bbox_inches="tight")


def plot_reliability(bins: Sequence[dict[str, Any]], path: str | Path, *, ece: float, title: str) -> Path:
    """The reliability diagram: accuracy against mean confidence per confidence bin (bars, their width the
    bin's), the diagonal of perfect calibration, and the images per bin below."""
    plt = _pyplot()
    fig, (ax, below) = plt.subplots(2, 1, figsize=(6, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    filled = [b for b in bins if b["count"]]
    lows = [b["low"] for b in filled]
    widths = [b["high"] - b["low"] for b in filled]
    ax.bar(lows, [b["accuracy"] for b in filled], width=widths, align="edge", edgecolor="black", label="accuracy")
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    ax.scatter([b["confidence"] for b in filled], [b["accuracy"] for b in filled], color="C3", s=12, zorder=3,
               label="mean confidence")  # fmt: skip
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(f"{title}\nexpected calibration error {ece:.4f}")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    below.bar(lows, [b["count"] for b in filled], width=widths, align="edge", color="gray", edgecolor="black")
    below.set_xlabel("confidence (top-1 probability)")
    below.set_ylabel("images")
    below.set_xlim(0, 1)
    return _save(fig, path, bbox_inches="tight")
