"""The paper's Observations 1 and 2 on the user's data: scale one dimension, or all three.

The baseline is scaled by width only, depth only, resolution only (the paper's sweeps) and by
compound φ; every point trains with the same proxy budget. The four curves of accuracy against
multiply-adds go in one figure and one CSV. The baseline itself is trained once and starts every
curve. Same storage and resumability as the grid search.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from effnet.atomic import atomic_write_text
from effnet.describe.network import NetworkSpec
from effnet.errors import UserError, check_number, check_whole_number
from effnet.results import Result
from effnet.scale.compound import ALPHA, BETA, GAMMA
from effnet.search.grid import reporting_callback
from effnet.search.proxy import Proxy, proxy_base, scale_at_proxy, train_proxy
from effnet.search.queue import Point, train_points
from effnet.search.record import TrialRecord
from effnet.search.storage import DEFAULT_HEARTBEAT, check_settings, open_study, study_url

#: The paper's single-dimension sweeps (Figure 3) and a compound sweep.
PAPER_WIDTHS = (1.0, 1.4, 1.8, 2.6, 3.8, 5.0)
PAPER_DEPTHS = (1.0, 2.0, 3.0, 4.0, 6.0, 8.0)
PAPER_RESOLUTIONS = (1.0, 1.3, 1.5, 1.7, 1.9, 2.2, 2.5)
DEFAULT_PHIS = (0.0, 1.0, 2.0, 3.0, 4.0)
FAMILIES = ("width", "depth", "resolution", "compound")
CSV_COLUMNS = (
    "family",
    "value",
    "depth",
    "width",
    "resolution_multiplier",
    "resolution",
    "params",
    "macs",
    "accuracy",
    "seconds",
    "state",
)


@dataclass(frozen=True)
class Sweeps:
    """The multipliers of each curve; ``limit`` keeps the first N of each, ``max_macs_ratio``
    drops points whose multiply-adds exceed that many times the baseline's."""

    widths: tuple[float, ...] = PAPER_WIDTHS
    depths: tuple[float, ...] = PAPER_DEPTHS
    resolutions: tuple[float, ...] = PAPER_RESOLUTIONS
    phis: tuple[float, ...] = DEFAULT_PHIS
    alpha: float = ALPHA
    beta: float = BETA
    gamma: float = GAMMA
    limit: int | None = None
    max_macs_ratio: float | None = None
    families: tuple[str, ...] = FAMILIES

    def __post_init__(self) -> None:
        unknown = set(self.families) - set(FAMILIES)
        if unknown or not self.families:
            raise UserError(
                f"families holds unknown {', '.join(sorted(unknown)) or 'nothing'} (known: {', '.join(FAMILIES)})",
                field="families",
            )
        for name in ("widths", "depths", "resolutions"):
            if any(not math.isfinite(v) or v <= 0 for v in getattr(self, name)):
                raise UserError(f"{name} must be positive numbers", field=name)
        if any(not math.isfinite(v) or v < 0 for v in self.phis):
            raise UserError("phis must be numbers ≥ 0", field="phis")
        if self.limit is not None:
            check_whole_number("limit", self.limit, 1)
        if self.max_macs_ratio is not None:
            check_number("max_macs_ratio", self.max_macs_ratio, low=0, strict_low=True)

    def values(self, family: str) -> list[float]:
        raw = {"width": self.widths, "depth": self.depths, "resolution": self.resolutions, "compound": self.phis}
        values = sorted(set(raw[family]))
        return values[: self.limit] if self.limit else values

    def multipliers(self, family: str, value: float) -> tuple[float, float, float]:
        """(depth, width, resolution) multipliers of one point."""
        if family == "width":
            return 1.0, value, 1.0
        if family == "depth":
            return value, 1.0, 1.0
        if family == "resolution":
            return 1.0, 1.0, value
        return self.alpha**value, self.beta**value, self.gamma**value


def _is_base(family: str, value: float) -> bool:
    return value == (0.0 if family == "compound" else 1.0)


def study_points(base: NetworkSpec, proxy: Proxy, sweeps: Sweeps, base_macs: int) -> tuple[list[Point], dict]:
    """The points to train (the baseline once) and, per family, the keys of its curve in order."""
    from effnet.models.profile import profile

    points: dict[str, Point] = {}
    curves: dict[str, list[tuple[str, float]]] = {}
    for family in sweeps.families:
        curve = []
        for value in sweeps.values(family):
            key = "base" if _is_base(family, value) else f"{family}={value:g}"
            if key not in points:
                d, w, r = sweeps.multipliers(family, value)
                if sweeps.max_macs_ratio is not None and key != "base":
                    spec = scale_at_proxy(base, proxy, depth=d, width=w, resolution=r)
                    if profile(spec, num_classes=10).macs > sweeps.max_macs_ratio * base_macs:
                        continue
                points[key] = Point(key, {"family": "base" if key == "base" else family, "value": value})
            curve.append((key, value))
        curves[family] = curve
    return list(points.values()), curves


def compare_at_equal_macs(curves: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """For each single-dimension curve: compound's accuracy at the same multiply-adds (interpolated
    on log MACs between compound points), the mean gain and how often compound is ahead."""
    compound = sorted(
        ((r["macs"], r["accuracy"]) for r in curves.get("compound", []) if r.get("accuracy") is not None),
        key=lambda x: x[0],
    )
    out: dict[str, dict[str, Any]] = {}
    if len(compound) < 2:
        return out
    logs = [math.log(m) for m, _ in compound]
    for family in ("width", "depth", "resolution"):
        gains = []
        for row in curves.get(family, []):
            if row.get("accuracy") is None or row["family"] == "base":
                continue
            x = math.log(row["macs"])
            if not logs[0] <= x <= logs[-1]:
                continue
            i = max(j for j in range(len(logs) - 1) if logs[j] <= x)
            t = 0.0 if logs[i + 1] == logs[i] else (x - logs[i]) / (logs[i + 1] - logs[i])
            at = compound[i][1] + t * (compound[i + 1][1] - compound[i][1])
            gains.append(at - row["accuracy"])
        if gains:
            out[family] = {
                "points": len(gains),
                "compound_ahead": sum(g > 0 for g in gains),
                "mean_gain": round(sum(gains) / len(gains), 4),
            }
    return out


@dataclass(frozen=True)
class StudyResult(Result):
    """What :func:`study_scaling` found: each family's curve of rows, compound against each single
    dimension at equal multiply-adds, where the study lives and the files written."""

    curves: dict[str, list[dict[str, Any]]]
    comparison: dict[str, dict[str, Any]]
    study: str
    storage: str
    base: str
    proxy: dict[str, Any]
    coefficients: dict[str, float]
    points: int
    csv: str | None = None
    plot: str | None = None


def study_scaling(
    base: NetworkSpec,
    *,
    proxy: Proxy | None = None,
    sweeps: Sweeps | None = None,
    storage: str | Path | None = None,
    study_name: str = "study-scaling",
    output: str | Path = "runs/study-scaling",
    n_trials: int | None = None,
    heartbeat: int = DEFAULT_HEARTBEAT,
    progress: bool = False,
    plot: str | Path | None = "",
    csv_path: str | Path | None = "",
) -> StudyResult:
    """Train (or resume) the four sweeps; ``plot`` and ``csv_path`` are file paths ("" for the
    default in ``output``, None for none)."""
    from effnet.models.profile import profile

    proxy = proxy or Proxy()
    sweeps = sweeps or Sweeps()
    output = Path(output)
    start = proxy_base(base, proxy)
    base_macs = profile(start, num_classes=10).macs
    points, curve_keys = study_points(base, proxy, sweeps, base_macs)
    study = open_study(storage, study_name, output=output, heartbeat=heartbeat, pruner=optuna.pruners.NopPruner())
    check_settings(
        study,
        # The sweeps are not part of it (longer or truncated sweeps reuse trained points); the
        # compound coefficients are, since they give "compound=φ" its meaning.
        {
            "kind": "study-scaling",
            "base": base.to_dict(),
            "proxy": proxy.settings(),
            "compound": [sweeps.alpha, sweeps.beta, sweeps.gamma],
        },
    )

    def objective(trial: optuna.Trial, point: Point) -> tuple[float, dict[str, Any]]:
        family, value = point.params["family"], point.params["value"]
        d, w, r = (1.0, 1.0, 1.0) if family == "base" else sweeps.multipliers(family, value)
        spec = scale_at_proxy(base, proxy, depth=d, width=w, resolution=r, name=f"{base.name}-{point.key}")
        result = train_proxy(spec, proxy, on_epoch_end=reporting_callback(trial))
        result.update(depth=round(d, 6), width=round(w, 6), resolution_multiplier=round(r, 6))
        return result["accuracy"], result

    standing = train_points(study, points, objective, desc="study-scaling", n_trials=n_trials, progress=progress)
    curves: dict[str, list[dict[str, Any]]] = {}
    for family, keys in curve_keys.items():
        rows = []
        for key, value in keys:
            if key not in standing:
                continue
            d, w, r = sweeps.multipliers(family, value)
            lead = {
                "family": "base" if key == "base" else family,
                "value": value,
                "depth": round(d, 6),
                "width": round(w, 6),
                "resolution_multiplier": round(r, 6),
            }
            rows.append(TrialRecord.of(standing[key], always=("resolution",)).row(lead, number=None))
        curves[family] = rows
    csv_file = plot_file = None
    if csv_path is not None:
        csv_file = str(write_csv(curves, Path(csv_path) if csv_path else output / "scaling_study.csv"))
    if plot is not None:
        from effnet.plots import plot_study

        path = Path(plot) if plot else output / "scaling_study.png"
        title = f"scaling {base.name}: one dimension vs compound (α={sweeps.alpha:g}, β={sweeps.beta:g}, γ={sweeps.gamma:g})"
        plot_file = str(plot_study(curves, path, title=title))
    return StudyResult(
        curves=curves,
        comparison=compare_at_equal_macs(curves),
        study=study_name,
        storage=study_url(study),
        base=base.name,
        proxy=proxy.settings(),
        coefficients={"alpha": sweeps.alpha, "beta": sweeps.beta, "gamma": sweeps.gamma},
        points=len(points),
        csv=csv_file,
        plot=plot_file,
    )


def write_csv(curves: dict[str, Sequence[dict[str, Any]]], path: Path) -> Path:
    """One row per (curve, point); the baseline appears at the start of every curve."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for family, rows in curves.items():
        for row in rows:
            writer.writerow({**row, "family": family})
    return atomic_write_text(path, buffer.getvalue(), mkdir=True)
