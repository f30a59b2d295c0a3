"""Figures of searches and studies: accuracy against multiply-adds (PNG, matplotlib's Agg backend)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def plot_search(rows: Sequence[dict[str, Any]], path: str | Path, *, title: str = "grid search") -> Path:
    """Scatter of the grid-search trials: accuracy vs multiply-adds, the best one marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    done = [r for r in rows if r.get("accuracy") is not None and r.get("macs")]
    if done:
        macs = [r["macs"] / 1e6 for r in done]
        acc = [100 * r["accuracy"] for r in done]
        shade = [r.get("alpha", 1.0) for r in done]
        points = ax.scatter(macs, acc, c=shade, cmap="viridis", s=36, edgecolors="black", linewidths=0.4)
        fig.colorbar(points, ax=ax, label="α (depth)")
        best = max(done, key=lambda r: (r["accuracy"], -r["macs"]))
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
    ax.set_ylabel("validation top-1 accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return _save(fig, path)


#: Curve styles of the scaling study, in drawing order.
FAMILY_STYLES = {
    "width": ("tab:blue", "o", "width w"),
    "depth": ("tab:orange", "s", "depth d"),
    "resolution": ("tab:green", "^", "resolution r"),
    "compound": ("tab:red", "*", "compound φ"),
}


def plot_study(curves: dict[str, list[dict[str, Any]]], path: str | Path, *, title: str = "scaling study") -> Path:
    """One curve per scaling family: accuracy vs multiply-adds, each point labelled by its multiplier."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for family, rows in curves.items():
        color, marker, label = FAMILY_STYLES.get(family, ("gray", "x", family))
        done = sorted((r for r in rows if r.get("accuracy") is not None and r.get("macs")), key=lambda r: r["macs"])
        if not done:
            continue
        xs = [r["macs"] / 1e6 for r in done]
        ys = [100 * r["accuracy"] for r in done]
        ax.plot(xs, ys, color=color, marker=marker, markersize=9 if marker == "*" else 6, label=label)
        for r, x, y in zip(done, xs, ys):
            ax.annotate(f"{r['value']:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7, color=color)
    ax.set_xscale("log")
    ax.set_xlabel("multiply-adds (millions, log scale)")
    ax.set_ylabel("validation top-1 accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    return _save(fig, path)
