"""Scaling study on CIFAR-10 with fitted laws: each curve's law of error against cost, checked on a held-out point.

1. A class-balanced subsample of CIFAR-10 (symlinks): ``--train-per-class`` images of each class from
   CIFAR's train set for training, ``--test-per-class`` from CIFAR's test set for the reported accuracy
   (all of them with ``--train-per-class 0``).
2. ``effnet study-scaling`` (:func:`effnet.search.study.study_scaling`): the baseline (``--base`` scaled by
   ``--base-width`` and ``--base-depth``) scaled by width only, depth only, resolution only and compound φ
   (α=1.2, β=1.1, γ=1.15); every point trained with ``--seeds`` seeds under the same budget; points costing
   more than ``--max-macs-ratio`` × the baseline are skipped. ``--workers`` processes share the study.
3. ``effnet fit-scaling --holdout --at-phi`` (:func:`effnet.search.laws.fit_scaling`): each curve's law
   err = e∞ + k·(C/C₀)^(−a) over every seed, intervals from a bootstrap over seeds (``--resamples``); each
   curve's largest point left out, predicted from the rest and compared with its measurement; every curve's
   prediction at compound φ = ``--at-phi``; and the joint law's α, β, γ at that φ
   (:func:`effnet.search.joint.choose_at_phi`) beside the paper's.
4. Prints every point, the holdout table, the laws and the α, β, γ choice; writes the figures (points with
   error bars; fitted laws with bands), the CSV, ``result.json`` and ``summary.md`` in the run folder;
   ``--save`` also writes the result to ``benchmarks/results/<machine>/<date>-scaling-study.json``.

Profiles (``--profile``; any option given overrides the profile's value):

- ``cpu`` (about an hour on a 2-core CPU shared with other work): a baseline small enough that capacity
  limits its accuracy, so that a curve can rise and a law has something to fit: ``b0_mini`` at width 0.5
  and depth 0.5 (42k parameters, one block per stage, 8–40 channels), at 40 px (CIFAR's 32 px upsampled:
  at 32 px the last feature map is 1×1 and every compound step jumps to 2×2: φ = 1 costs 3.1× the
  baseline's multiply-adds, against 2.2× at 40 px), 500 training and 200 test images per class, 4 epochs,
  3 seeds, two workers of one thread each. With ``b0_mini`` itself (202k parameters) every point
  learned to the same accuracy: capacity did not limit it and no curve rose.
  Four points per curve at least (the baseline included): three distinct costs to fit and one to hold
  out. Widths 1–5 (1.5 costs about what 2 does: channels round to multiples of 8), hence
  ``--max-macs-ratio`` 18.
- ``gpu`` (one GPU): full CIFAR-10 (50,000 / 10,000), 10 epochs at batch 256, 5 seeds, five points per
  curve, four workers sharing the GPU.

The budget is in epochs: a faster or slower proxy (or a loaded CPU) changes the wall time, not the figures.

``--throughput`` only measures the proxy's training images/s on 32-px CIFAR-10, image by image
(JPEG decoding and PIL crops in a loader process) against the in-memory batched path, same model.

Usage: python benchmarks/bench_scaling_study.py [--profile cpu|gpu] [--data /work/shared/data/cifar10] …
The study is resumable: rerunning with the same options trains only what is missing, then fits again.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from effnet import get_description
from effnet.atomic import atomic_write_text
from effnet.describe.network import NetworkSpec
from effnet.errors import UserError
from effnet.scale.compound import scale_network
from effnet.search.joint import choose_at_phi
from effnet.search.laws import fit_scaling, read_study
from effnet.search.proxy import Proxy
from effnet.search.record import row_estimate
from effnet.search.stats import show
from effnet.search.study import Sweeps, study_scaling
from results import machine_info, save_result

ROOT = Path(__file__).resolve().parents[1]
PROFILES: dict[str, dict[str, Any]] = {
    "cpu": dict(
        base_width=0.5,
        base_depth=0.5,
        train_per_class=500,
        test_per_class=200,
        resolution=40,
        epochs=4,
        batch_size=64,
        seeds=3,
        workers=2,
        threads=1,
        widths="1,2,3,4,5",
        depths="1,2,3,4",
        resolutions="1,1.25,1.5,1.75",
        phis="0,1,2,3",
        max_macs_ratio=18.0,
        at_phi=5.0,
        resamples=1000,
    ),
}
PROFILES["gpu"] = dict(
    PROFILES["cpu"],
    train_per_class=0,
    test_per_class=0,
    epochs=10,
    batch_size=256,
    seeds=5,
    workers=4,
    threads=2,
    widths="1,2,3,4,5",
    depths="1,2,3,4,6",
    resolutions="1,1.25,1.5,1.75,2",
    phis="0,1,2,3,4",
    max_macs_ratio=20.0,
    at_phi=6.0,
)


def subsample(source: Path, target: Path, per_class: dict[str, tuple[str, int]]) -> None:
    """Symlink the first ``count`` files of each class of ``source/<split>`` into ``target/<name>``."""
    for name, (split, count) in per_class.items():
        folder = source / split
        if not folder.is_dir():
            sys.exit(f"no {folder}: pass --data with CIFAR-10 in image-folder layout (train/, test/)")
        for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
            out = target / name / class_dir.name
            out.mkdir(parents=True, exist_ok=True)
            for file in sorted(class_dir.iterdir())[:count]:
                link = out / file.name
                if not link.exists():
                    link.symlink_to(file.resolve())


def baseline(args: argparse.Namespace) -> NetworkSpec:
    """``--base`` scaled by ``--base-width`` and ``--base-depth`` (named after them when not 1)."""
    spec = get_description(args.base)
    if args.base_width == 1 and args.base_depth == 1:
        return spec
    name = f"{args.base}-w{args.base_width:g}-d{args.base_depth:g}"
    return scale_network(spec, depth=args.base_depth, width=args.base_width, name=name)


def floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(","))


def settings(args: argparse.Namespace, data: Path) -> tuple[Proxy, Sweeps]:
    proxy = Proxy(
        data=str(data),
        resolution=args.resolution,
        epochs=args.epochs,
        batch_size=args.batch_size,
        recipe="small",
        seeds=args.seeds,
        budget=args.budget_mode,
    )
    sweeps = Sweeps(
        widths=floats(args.widths),
        depths=floats(args.depths),
        resolutions=floats(args.resolutions),
        phis=floats(args.phis),
        max_macs_ratio=args.max_macs_ratio,
    )
    return proxy, sweeps


def worker(args: argparse.Namespace, data: Path) -> None:
    """One process of the study: trains the points nobody else has claimed."""
    torch.set_num_threads(args.threads)
    proxy, sweeps = settings(args, data)
    study_scaling(
        baseline(args),
        proxy=proxy,
        sweeps=sweeps,
        output=args.output,
        study_name="bench-scaling-study",
        plot=None,
        csv_path=None,
    )


def throughput(args: argparse.Namespace, data: Path) -> dict[str, Any]:
    """Training images/s of the proxy on 32-px CIFAR-10, per image vs in memory (same model, twice each)."""
    from effnet.search.proxy import proxy_splits
    from effnet.train import train_model

    torch.set_num_threads(args.threads)
    spec = baseline(args).with_(resolution=32)
    runs: dict[str, list[float]] = {"per_image": [], "memory": []}
    memory = proxy_splits(Proxy(data=str(data)))
    for _ in range(2):
        for name, source in (("per_image", str(data)), ("memory", memory)):
            report = train_model(spec, source, epochs=1, batch_size=64, recipe="small", progress=False, seed=0)
            runs[name].append(round(report.images_per_second, 1))
            print(f"{name:>9}: {report.images_per_second:.1f} images/s", flush=True)
    return {"images_per_second": runs, "threads": args.threads, "machine": machine_info()}


def summary_markdown(result: Any, args: argparse.Namespace, seconds: float) -> str:
    """The study as Markdown: the settings, every point, the verdicts."""
    lines = [
        f"{result.base} on CIFAR-10 ({args.train_per_class or 'all'} train / {args.test_per_class or 'all'} test "
        "images "
        f"per class), {args.resolution} px, {result.budget}, {result.seeds} seeds per point, {result.points} points, "
        f"{seconds / 60:.0f} min",
        "",
        "| curve | value | px | multiply-adds | params | top-1 (mean ± 95%) | seeds' top-1 |",
        "|---|---|---|---|---|---|---|",
    ]
    for family, rows in result.curves.items():
        for r in rows:
            seeds = ", ".join("—" if a is None else f"{100 * a:.1f}" for a in r.get("accuracies") or ())
            lines.append(
                f"| {family} | {r['value']:g} | {r['resolution'] or '—'} | {(r['macs'] or 0) / 1e6:.2f}M "
                f"| {(r['params'] or 0) / 1e3:.0f}k | {show(row_estimate(r))} | {seeds} |"
            )
    cost = {"macs": "multiply-adds", "time": "training time", "params": "parameters"}[result.compare_by]
    lines += ["", f"Compound against each single dimension at equal {cost}:", ""]
    lines += [f"- **{family}**: {c['verdict']}" for family, c in result.comparison.items()]
    if result.not_learned:
        lines += ["", f"Points below the learning threshold: {', '.join(result.not_learned)}."]
    return "\n".join(lines) + "\n"


def study_wall(result: Any) -> float:
    """Seconds from the study's first trial's start to its last one's end (across resumed runs, gaps included)."""
    import optuna

    trials = [
        t for t in optuna.load_study(study_name=result.study, storage=result.storage).trials if t.datetime_complete
    ]
    if not trials:
        return 0.0
    start = min(t.datetime_start for t in trials if t.datetime_start)
    return (max(t.datetime_complete for t in trials) - start).total_seconds()


def fit(args: argparse.Namespace, csv: str) -> dict[str, Any]:
    """The fitted laws of the study (:func:`effnet.search.laws.fit_scaling`): each curve's parameters, its
    prediction at compound φ = ``--at-phi`` and the holdout check of its largest point; and the joint
    model's α, β, γ at that φ (:func:`effnet.search.joint.choose_at_phi`). A refusal is recorded, not raised."""
    out: dict[str, Any] = {"at_phi": args.at_phi, "resamples": args.resamples}
    try:
        report = fit_scaling(
            csv, at_phi=args.at_phi, holdout=True, resamples=args.resamples, plot=args.output / "scaling_fit.png"
        )
        out["fit"] = report.to_dict()
    except UserError as err:
        out["fit_refused"] = str(err)
    try:
        choice = choose_at_phi(read_study(csv), args.at_phi, resamples=args.resamples)
        out["choice"] = choice.to_dict()
    except UserError as err:
        out["choice_refused"] = str(err)
    return out


def _pct(value: float | None) -> str:
    return "—" if value is None or value != value else f"{100 * value:.1f}"


def _bounds(v: dict[str, float]) -> str:
    return f"{v['value']:.3g} [{v['low']:.3g}, {v['high']:.3g}]"


def fit_markdown(fitted: dict[str, Any]) -> str:
    """The fit as Markdown: the holdout table, each curve's law and prediction, the α, β, γ choice."""
    if "fit_refused" in fitted:
        lines = [f"No fit: {fitted['fit_refused']}"]
    else:
        report = fitted["fit"]
        curves = [c for c in ("width", "depth", "resolution", "compound") if c in report]
        lines = [
            "Holdout: each curve's largest point left out, predicted from the others (95% bootstrap interval over "
            "seeds) against its measurement (mean and 95% t-interval over its seeds):",
            "",
            "| curve | held-out point | multiply-adds | predicted top-1 | measured top-1 | inside? |",
            "|---|---|---|---|---|---|",
        ]
        for c in curves:
            h = report[c].get("holdout") if "refused" not in report[c] else None
            if not h or "refused" in h:
                why = report[c].get("refused") or (h or {}).get("refused", "no holdout")
                lines.append(f"| {c} | {(h or {}).get('point', '—')} | — | — | — | not checked: {why} |")
                continue
            p, m = h["predicted"], h["measured"]
            lines.append(
                f"| {c} | {h['point']} | {h['cost'] / 1e6:.2f}M "
                f"| {_pct(p['value'])} [{_pct(p['low'])}, {_pct(p['high'])}] "
                f"| {_pct(m['value'])} [{_pct(m['low'])}, {_pct(m['high'])}] | {'yes' if h['inside'] else 'no'} |"
            )
        target = report.get("target") or {}
        lines += [
            "",
            "Laws err = e∞ + k·(C/C₀)^(−a) (C multiply-adds, C₀ the baseline's), fitted on every point; "
            "prediction at "
            f"compound φ = {fitted['at_phi']:g} ({(target.get('cost') or 0) / 1e6:.2f}M multiply-adds):",
            "",
            "| curve | e∞ (top-1 ceiling) | k | a | R² | RMSE (points) | predicted top-1 at the target "
            "| beyond measured |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for c in curves:
            r = report[c]
            if "refused" in r:
                lines.append(f"| {c} | refused: {r['refused']} | | | | | | |")
                continue
            q, f, at = r["params"], r["fit"], r.get("at") or {}

            ceiling = q["e_inf"]
            lines.append(
                f"| {c} | {_pct(1 - ceiling['value'])} [{_pct(1 - ceiling['high'])}, {_pct(1 - ceiling['low'])}] "
                f"| {_bounds(q['k'])} | {_bounds(q['a'])} | {f.get('r2')} | {f.get('rmse')} "
                f"| {_pct(at.get('predicted'))} [{_pct(at.get('low'))}, {_pct(at.get('high'))}] "
                f"| {at.get('beyond', 0):.3g}× |"
            )
        lines += [""] + [f"- {v['text']}" for v in report.get("verdicts", {}).values()]
        lines += [f"- warning: {w}" for w in report.get("warnings", [])]
    if "choice" in fitted:
        lines += [
            "",
            "α, β, γ at the target (joint law over depth, width, resolution):",
            "",
            "```",
            fitted["choice"]["summary"],
            "```",
        ]
    elif "choice_refused" in fitted:
        lines += ["", f"No α, β, γ choice: {fitted['choice_refused']}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", choices=list(PROFILES), default="cpu")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "cifar10")
    parser.add_argument("--output", type=Path, help="default runs/bench_scaling_study_<profile>")
    parser.add_argument("--base", default="b0_mini")
    for name, value in PROFILES["cpu"].items():
        kind = type(value) if not isinstance(value, str) else str
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, help=f"(profile cpu: {value})")
    parser.add_argument("--budget-mode", default="epochs", choices=("epochs", "macs", "plateau"))
    parser.add_argument("--throughput", action="store_true", help="only measure the proxy's images/s")
    parser.add_argument("--save", action="store_true", help="also write the result to benchmarks/results/")
    args = parser.parse_args()
    for name, value in PROFILES[args.profile].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.output = args.output or ROOT / "runs" / f"bench_scaling_study_{args.profile}"
    device = "cuda" if args.profile == "gpu" and torch.cuda.is_available() else "cpu"

    data = args.data
    if args.train_per_class or args.test_per_class:
        data = args.output / "data"
        subsample(args.data, data, {"train": ("train", args.train_per_class), "val": ("test", args.test_per_class)})
    if args.throughput:
        numbers = throughput(args, data)
        atomic_write_text(args.output / "throughput.json", json.dumps(numbers, indent=2) + "\n", mkdir=True)
        if args.save:
            print(f"saved {save_result('scaling-throughput', numbers, device=device)}", file=sys.stderr)
        return

    started = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=worker, args=(args, data)) for _ in range(args.workers)]
    for process in workers:
        process.start()
    for process in workers:
        process.join()
    if any(p.exitcode != 0 for p in workers):
        sys.exit(f"a worker failed (exit codes {[p.exitcode for p in workers]}); rerun to resume")
    torch.set_num_threads(args.threads)
    proxy, sweeps = settings(args, data)
    result = study_scaling(  # every point is trained: this collects them and draws the figure
        baseline(args), proxy=proxy, sweeps=sweeps, output=args.output, study_name="bench-scaling-study"
    )
    seconds = study_wall(result) or time.perf_counter() - started
    assert result.csv is not None
    fitted = fit(args, result.csv)
    text = summary_markdown(result, args, seconds) + "\n" + fit_markdown(fitted)
    print(text)
    print(f"figures: {result.plot}, {fitted.get('fit', {}).get('plot')}\ncsv: {result.csv}")
    atomic_write_text(args.output / "summary.md", text)
    record = {
        **result.to_dict(),
        "seconds": seconds,
        "profile": args.profile,
        "load_average": os.getloadavg(),
        "fitted": fitted,
    }
    atomic_write_text(
        args.output / "result.json",
        json.dumps({**record, "machine": machine_info(device)}, indent=2, default=str) + "\n",
    )
    if args.save:
        print(f"saved {save_result('scaling-study', json.loads(json.dumps(record, default=str)), device=device)}")


if __name__ == "__main__":
    main()
