"""The whole method end to end: grid search at φ = 1 → scale → train → evaluate → weights + report.

1. Grid-search α, β, γ ≥ 1 with α·β²·γ² ≈ 2 on the baseline at the proxy budget (resumable study).
2. Scale the baseline by the best (α, β, γ) to the requested φ, or to the largest φ under a budget.
3. Train the scaled model (longer) with every seed of the proxy, evaluate it on the validation split,
   save its weights (effnet's safetensors format), its description and a Markdown report with the
   figure and tables.
4. Train the baseline (φ = 0 at the final resolution) with the same budget and seeds: the scaled
   model's gain over it, with its 95% interval and the one verdict rule of
   :func:`effnet.search.stats.decide`, is the method's claim on the user's data.

Each seed's run has its own folder: the first seed's in ``final/`` and ``baseline/`` (where the
weights are looked for), the others in ``final/seed-N/`` and ``baseline/seed-N/``; each resumes.

Defaults run on the built-in digits with the CPU-sized ``b0_mini`` baseline (B0 at width 0.25,
depth 0.34, 32 px): 4 grid points (step 0.1, spread evenly over the 21 that satisfy the constraint),
each trained with 3 seeds for 3 epochs at batch 32, then φ = 1 and the baseline each trained with the
same 3 seeds for 6 epochs. In that budget every point learns (3× chance is 30% on 10 digits) and the
final models' seeds agree within a few points, so the gain's interval can exclude 0; 3 seeds, because
a 2-seed t-interval is ±12.7 standard errors wide; 2 epochs at batch 32 left points near 30%.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from effnet.atomic import atomic_write_text
from effnet.describe.network import MAX_RESOLUTION, NetworkSpec
from effnet.errors import UserError, check_number, check_whole_number
from effnet.results import Result
from effnet.runs import claim_folder
from effnet.scale.compound import MAX_PHI, MIN_PHI, compound_coefficients, scale_compound
from effnet.search import stats
from effnet.search.grid import GridConfig, scaling_grid, search_scaling
from effnet.search.plan import Plan, plan
from effnet.search.proxy import Proxy, proxy_base
from effnet.search.storage import DEFAULT_HEARTBEAT, redact_url
from effnet.train.config import MAX_EPOCHS
from effnet.train.logs import TRAIN_MARKERS

DEFAULT_BASE = "b0_mini"
#: Every point learns in this budget on the digits (3 seeds: 34–93% top-1, chance 10%; 2 seeds of 4 epochs at
#: batch 64 left α = 2 at chance in one seed, and 2-seed t-intervals are ±12.7 standard errors wide).
DEFAULT_PROXY = Proxy(data="digits", resolution=32, epochs=3, batch_size=32, recipe="small", seeds=3)
DEFAULT_GRID = GridConfig(step=0.1, tolerance=0.1, max_points=4)


@dataclass(frozen=True)
class PipelineResult(Result):
    """The pipeline's summary (also ``report.json``): the coefficients found, φ (and the plan that
    chose it under a budget), the final model, its evaluation, the search and the files written."""

    base: str
    data: str
    coefficients: dict[str, float]
    phi: float
    plan: Plan | None
    model: dict[str, Any]
    evaluation: dict[str, Any]
    search: dict[str, Any]
    choice: dict[str, Any]
    files: dict[str, Any]
    seconds: dict[str, float]
    baseline: dict[str, Any] | None = None
    gain: dict[str, Any] | None = None


@dataclass(frozen=True)
class FinalConfig:
    """What the final model is scaled to and how long it trains."""

    phi: float | None = 1.0
    macs: float | None = None
    params: float | None = None
    latency_ms: float | None = None
    epochs: int = 6
    resolution: int | None = None  # the baseline's resolution for the final model (default: the proxy's)

    def __post_init__(self) -> None:
        check_whole_number("final_epochs", self.epochs, 1, high=MAX_EPOCHS)
        if self.phi is not None:  # below 0 scales the baseline down
            check_number("phi", self.phi, low=MIN_PHI, high=MAX_PHI)
        if self.resolution is not None:
            check_whole_number("final_resolution", self.resolution, 1, " of pixels", high=MAX_RESOLUTION)

    def budget(self) -> dict[str, float]:
        return {k: v for k, v in (("macs", self.macs), ("params", self.params), ("latency_ms", self.latency_ms)) if v}


#: What a pipeline writes in its output folder besides its study (replaced by ``overwrite``).
OWNED = ("final", "baseline", "report.json", "report.md", "search_scaling.png")


def run_pipeline(
    base: NetworkSpec,
    *,
    proxy: Proxy = DEFAULT_PROXY,
    grid: GridConfig = DEFAULT_GRID,
    final: FinalConfig | None = None,
    output: str | Path = "runs/pipeline",
    storage: str | Path | None = None,
    study_name: str = "pipeline",
    heartbeat: int = DEFAULT_HEARTBEAT,
    progress: bool = False,
    resume: bool = False,
    overwrite: bool = False,
) -> PipelineResult:
    """Run every step (each resumable) and return the summary also written to ``report.json``.

    The output folder holds one run (:func:`effnet.runs.claim_folder`): the same run again
    continues where it stopped, another run there is refused unless ``overwrite``; ``resume``
    insists on continuing one.
    """
    final = final or FinalConfig()
    if final.budget() and final.phi is not None:
        raise UserError("give either phi or one budget (macs, params, latency_ms), not both")
    if len(final.budget()) > 1:
        raise UserError("give one budget: macs, params or latency_ms")
    proxy_base(base, proxy)
    points = scaling_grid(grid)  # the inputs are checked before the output folder is claimed
    if final.phi is not None:  # φ must scale the final baseline whichever grid point wins
        final_base = base.with_(resolution=final.resolution or proxy.resolution)
        for alpha, beta, gamma in points:
            try:
                scale_compound(final_base, final.phi, alpha, beta, gamma)
            except UserError as err:
                raise UserError(
                    f"phi {final.phi:g} cannot scale the baseline with grid point α={alpha:g} β={beta:g} γ={gamma:g}: "
                    f"{err}",
                    field="phi",
                ) from None
    output = Path(output)
    run = {"command": "pipeline", "study": study_name, "storage": redact_url(str(storage)) if storage else "output"}
    owned = OWNED if storage else (*OWNED, "study.db", "study.db.lock")
    with claim_folder(output, run_files=owned, record=run, others=TRAIN_MARKERS, resume=resume, overwrite=overwrite):
        return _run(base, proxy, grid, final, output, storage, study_name, heartbeat, progress)


def _run(
    base: NetworkSpec,
    proxy: Proxy,
    grid: GridConfig,
    final: FinalConfig,
    output: Path,
    storage: str | Path | None,
    study_name: str,
    heartbeat: int,
    progress: bool,
) -> PipelineResult:
    started = time.perf_counter()
    timings: dict[str, float] = {}

    # 1. α, β, γ at φ = 1 on the proxy task.
    search = search_scaling(
        base,
        proxy=proxy,
        grid=grid,
        storage=storage,
        study_name=study_name,
        output=output,
        heartbeat=heartbeat,
        progress=progress,
        plot=output / "search_scaling.png",
    )
    timings["search"] = time.perf_counter() - started
    best = search.best
    if best is None:
        errors = {t.get("error") for t in search.trials if t.get("error")}
        raise UserError(f"no grid point finished training{': ' + errors.pop() if errors else ''}")
    alpha, beta, gamma = best["alpha"], best["beta"], best["gamma"]

    # 2. Scale: to φ, or to the largest φ under the budget.
    from effnet.data import load_splits

    num_classes = load_splits(proxy.data).num_classes
    final_base = base.with_(resolution=final.resolution or proxy.resolution)
    plan_record = None
    if final.budget():
        plan_record = plan(final_base, **final.budget(), alpha=alpha, beta=beta, gamma=gamma, num_classes=num_classes)
        phi = plan_record.phi
    else:
        phi = float(final.phi if final.phi is not None else 1.0)
    spec = scale_compound(final_base, phi, alpha, beta, gamma, name=f"{base.name}-phi{phi:.4g}")
    coeffs = compound_coefficients(phi, alpha, beta, gamma)

    # 3. Train and evaluate the scaled model with every seed; 4. the baseline with the same budget and seeds.
    step = time.perf_counter()
    final_dir = output / "final"
    scaled = _train_seeds(spec, proxy, final, final_dir, progress)
    timings["final"] = time.perf_counter() - step
    step = time.perf_counter()
    baseline_dir = output / "baseline"
    if phi == 0:  # the scaled model is the baseline: nothing to compare
        unscaled, baseline_dir = scaled, final_dir
    else:
        unscaled = _train_seeds(final_base, proxy, final, baseline_dir, progress)
        timings["baseline"] = time.perf_counter() - step
    timings["total"] = time.perf_counter() - started

    found = search.to_dict()
    summary = PipelineResult(
        base=base.name,
        data=proxy.data,
        coefficients={
            "alpha": alpha,
            "beta": beta,
            "gamma": gamma,
            "constraint": round(alpha * beta**2 * gamma**2, 6),
            "proxy_accuracy": best["accuracy"],
            "proxy_accuracy_ci95": best["accuracy_ci95"],
        },
        phi=phi,
        plan=plan_record,
        model={
            "name": spec.name,
            "depth": round(coeffs.depth, 6),
            "width": round(coeffs.width, 6),
            "resolution": spec.resolution,
            "params": int(scaled[0].params),
            "macs": int(scaled[0].macs),
            "blocks": spec.block_strings,
        },
        evaluation={**_evaluation(scaled), "epochs": final.epochs, "split": "validation"},
        baseline={
            "name": final_base.name,
            "phi": 0.0,
            "resolution": final_base.resolution,
            "params": int(unscaled[0].params),
            "macs": int(unscaled[0].macs),
            **_evaluation(unscaled),
            "weights": str(baseline_dir / "model.safetensors"),
        },
        gain=None if phi == 0 else gain_record(_top1s(scaled), _top1s(unscaled), phi),
        search={k: found[k] for k in ("trials", "best", "grid", "proxy", "study", "storage", "seeds", "budget")},
        choice=found["choice"],
        files={
            "weights": str(final_dir / "model.safetensors"),
            "description": str(final_dir / "description.json"),
            "baseline_weights": str(baseline_dir / "model.safetensors"),
            "seed_runs": {"final": _seed_dirs(final_dir, proxy), "baseline": _seed_dirs(baseline_dir, proxy)},
            "search_plot": search.plot,
            "report": str(output / "report.md"),
            "summary": str(output / "report.json"),
        },
        seconds={k: round(v, 1) for k, v in timings.items()},
    )
    data = summary.to_dict()
    atomic_write_text(output / "report.json", json.dumps(data, indent=2, default=str) + "\n")
    atomic_write_text(output / "report.md", markdown_report(data))
    return summary


def _seed_dirs(folder: Path, proxy: Proxy) -> list[str]:
    """Each seed's run folder: the first seed's is ``folder`` itself, the others ``folder/seed-N``."""
    seeds = proxy.seed_values
    return [str(folder if i == 0 else folder / f"seed-{seed}") for i, seed in enumerate(seeds)]


def _train_seeds(spec: NetworkSpec, proxy: Proxy, final: FinalConfig, folder: Path, progress: bool) -> list[Any]:
    """``spec`` trained for the final budget once per seed of the proxy, each run in its own folder
    (:func:`_seed_dirs`); a run with a checkpoint continues (a finished one is not retrained), a run
    without one starts again (what its folder holds is a killed start)."""
    from effnet.train import train_model

    reports = []
    for seed, where in zip(proxy.seed_values, _seed_dirs(folder, proxy)):
        resume = (Path(where) / "checkpoints" / "last.pt").exists()
        reports.append(
            train_model(
                spec,
                proxy.data,
                epochs=final.epochs,
                batch_size=proxy.batch_size,
                seed=seed,
                recipe=proxy.recipe,
                output=where,
                resume=resume,
                overwrite=not resume,
                progress=progress,
            )
        )
    return reports


def _top1s(reports: list[Any]) -> list[float]:
    return [float(r.top1) for r in reports]


def _evaluation(reports: list[Any]) -> dict[str, Any]:
    """Top-1 (mean over the seeds, its 95% half-width, each seed's), top-5 and loss (means) of ``reports``."""

    def mean(name: str) -> float:
        return sum(float(getattr(r, name)) for r in reports) / len(reports)

    return {**top1_summary(_top1s(reports), [int(r.seed) for r in reports]), "top5": mean("top5"), "loss": mean("loss")}


def top1_summary(top1s: list[float], seeds: list[int] | None = None) -> dict[str, Any]:
    """Top-1 over the seeds: the mean, its 95% half-width (None with one seed), each seed's and the seeds."""
    top1 = stats.estimate(top1s)
    if top1 is None:
        raise UserError("no final training finished")
    return {
        "top1": top1.mean,
        "top1_ci95": top1.ci95,
        "top1s": list(top1s),
        "seeds": list(range(len(top1s))) if seeds is None else seeds,
    }


def gain_record(scaled: list[float], baseline: list[float], phi: float) -> dict[str, Any]:
    """The scaled model's top-1 minus the baseline's over the seeds (Welch's 95% interval), the verdict of
    :func:`effnet.search.stats.decide` and its sentence."""
    scaled_e, baseline_e = stats.estimate(scaled), stats.estimate(baseline)
    if scaled_e is None or baseline_e is None:
        raise UserError("gain: both models need at least one finished training")
    gain = stats.difference(scaled_e, baseline_e)
    return {
        "mean": gain.mean,
        "ci95": gain.ci95,
        "low": gain.low,
        "high": gain.high,
        "decision": stats.decide(gain),
        "verdict": stats.judge(gain, f"the scaled model (φ = {phi:.4g})", "the baseline (φ = 0)"),
    }


def _pct(value: float | None) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f}%"


def _m(value: int | None) -> str:
    return "—" if value is None else f"{value / 1e6:.3g}M"


def _accuracy(row: dict[str, Any]) -> str:
    """Mean accuracy ± 95% half-width (the half-width where known), the seeds' count."""
    if row.get("accuracy") is None:
        return "—"
    half = row.get("accuracy_ci95")
    return _pct(row["accuracy"]) + (f" ± {100 * half:.2f}" if half is not None else "")


def _seeds(ev: dict[str, Any]) -> str:
    return ", ".join(str(s) for s in ev.get("seeds", ()))


def _top1(ev: dict[str, Any]) -> str:
    return _accuracy({"accuracy": ev["top1"], "accuracy_ci95": ev.get("top1_ci95")})


def _each(ev: dict[str, Any]) -> str:
    return ", ".join(_pct(v) for v in ev.get("top1s", ()))


def _baseline_section(summary: dict[str, Any]) -> list[str]:
    """Section 4: the baseline under the same budget and seeds, and the scaled model's gain over it."""
    baseline, gain, ev, model = summary.get("baseline"), summary.get("gain"), summary["evaluation"], summary["model"]
    if not baseline:
        return []
    lines = ["## 4. Does scaling pay? The baseline under the same budget", ""]
    if gain is None:
        return [*lines, "φ = 0: the scaled model is the baseline itself; there is nothing to compare.", ""]
    lines += [
        f"The baseline (φ = 0, {baseline['resolution']} px) trained exactly like the scaled model: {ev['epochs']} "
        f"epochs, the same seeds ({_seeds(baseline)}), recipe and batch.",
        "",
        "| model | φ | resolution | params | multiply-adds | top-1 (mean ± 95%) | each seed |",
        "|---|---|---|---|---|---|---|",
        f"| scaled | {summary['phi']:.4g} | {model['resolution']} | {_m(model['params'])} | {_m(model['macs'])} "
        f"| {_top1(ev)} | {_each(ev)} |",
        f"| baseline | 0 | {baseline['resolution']} | {_m(baseline['params'])} | {_m(baseline['macs'])} "
        f"| {_top1(baseline)} | {_each(baseline)} |",
        "",
    ]
    shown = stats.Estimate(mean=gain["mean"], n=len(ev.get("top1s") or [0]), ci95=gain["ci95"])
    interval = "" if gain["ci95"] is None else f" (95% interval {100 * gain['low']:+.1f} to {100 * gain['high']:+.1f})"
    lines += [
        f"Gain of the scaled model over the baseline: **{stats.show(shown, ' points')}**{interval}; by the rule "
        f"above: {gain['verdict']}.",
        "",
        f"- baseline weights: `{baseline['weights']}`",
        "",
    ]
    return lines


def markdown_report(summary: dict[str, Any]) -> str:
    """The pipeline's report: the method's steps, the grid table, the figure, the final model, and the
    baseline under the same budget with the scaled model's gain over it."""
    c, model, ev, search = summary["coefficients"], summary["model"], summary["evaluation"], summary["search"]
    proxy, grid, choice = search["proxy"], search["grid"], summary["choice"]
    seeds = search.get("seeds", 1)
    left_out = set(choice.get("not_learned") or ())
    lines = [
        f"# Compound scaling of `{summary['base']}` on `{summary['data']}`",
        "",
        "The method of Tan & Le (2019): fix φ = 1, grid-search α (depth), β (width), γ (resolution) ≥ 1 "
        f"under α·β²·γ² ≈ {grid['target']:g}, then scale the baseline by α^φ, β^φ, γ^φ.",
        "",
        "## 1. Grid search at φ = 1",
        "",
        f"{grid['points']} grid points (step {grid['step']:g}, |α·β²·γ² − {grid['target']:g}| ≤ {grid['tolerance']:g}"
        + (f", at most {grid['max_points']} spread over the grid" if grid.get("max_points") else "")
        + f"), each trained with {seeds} seed(s) (from {proxy['seed']}) at {proxy['resolution']} px "
        f"(recipe `{proxy['recipe']}`, batch {proxy['batch_size']}); budget: {search.get('budget', '')}. "
        f"Study `{search['study']}` in `{search['storage']}`.",
        "",
        "Accuracy is the mean over the seeds ± the half-width of its 95% t-interval (no interval with one seed).",
        "",
        "| α | β | γ | α·β²·γ² | resolution | accuracy | multiply-adds | params | seconds | state |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in search["trials"]:
        mark = " **(best)**" if search["best"] and t.get("trial") == search["best"].get("trial") else ""
        mark += " (did not learn)" if t.get("point") in left_out else ""
        lines.append(
            f"| {t['alpha']:g} | {t['beta']:g} | {t['gamma']:g} | {t.get('constraint', float('nan')):.3f} "
            f"| {t.get('resolution') or '—'} | {_accuracy(t)}{mark} | {_m(t['macs'])} | {_m(t['params'])} "
            f"| {t['seconds'] if t['seconds'] is not None else '—'} | {t['state']} |"
        )
    lines += [
        "",
        "![accuracy vs multiply-adds of the grid points](search_scaling.png)",
        "",
        f"Best: **α = {c['alpha']:g}, β = {c['beta']:g}, γ = {c['gamma']:g}** (α·β²·γ² = {c['constraint']:.3f}, "
        f"proxy accuracy {_accuracy({'accuracy': c['proxy_accuracy'], 'accuracy_ci95': c.get('proxy_accuracy_ci95')})}). "
        "The paper found α = 1.2, β = 1.1, γ = 1.15 on ImageNet.",
        "",
        f"How sure (a difference whose 95% interval contains 0 is a tie): {choice['verdict']}.",
        "",
        "## 2. Scaling",
        "",
    ]
    planned = summary.get("plan")
    if planned:
        metric, value = planned["budget"]["metric"], planned["budget"]["value"]
        lines.append(f"Budget {metric} ≤ {value:,.6g}: the largest φ under it is **φ = {summary['phi']:.4f}**.")
    else:
        lines.append(f"φ = **{summary['phi']:g}**.")
    lines += [
        "",
        f"Depth × {model['depth']:.3f}, width × {model['width']:.3f}, resolution {model['resolution']} px: "
        f"{_m(model['params'])} parameters, {_m(model['macs'])} multiply-adds.",
        "",
        "```",
        *model["blocks"],
        "```",
        "",
        "## 3. The scaled model, trained and evaluated",
        "",
        f"{ev['epochs']} epochs on `{summary['data']}` with each seed ({_seeds(ev)}): top-1 **{_top1(ev)}** "
        f"(each seed: {_each(ev)}), top-5 {_pct(ev['top5'])} on the {ev['split']} split (loss {ev['loss']:.4f}; "
        "means over the seeds).",
        "",
        f"- weights: `{summary['files']['weights']}` (safetensors, with its description and preprocessing; the "
        "first seed's run; the other seeds' runs are in its `seed-N/` folders)",
        f"- description: `{summary['files']['description']}`",
        f"- summary: `{summary['files']['summary']}`",
        "",
        *_baseline_section(summary),
        "Time: " + ", ".join(f"{k} {v:.0f} s" for k, v in summary["seconds"].items()) + ".",
        "",
    ]
    return "\n".join(lines)
