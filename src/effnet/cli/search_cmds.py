"""``effnet search-scaling``, ``study-scaling``, ``plan`` and ``pipeline``: the paper's method as commands."""

from __future__ import annotations

import argparse
import sys

from effnet.cli.args import (
    add_architecture,
    add_json,
    architecture_from_args,
    big_number,
    finite_float,
    nonnegative_float,
    positive_float,
    positive_int,
)
from effnet.cli.output import billions, print_json, print_record, print_table
from effnet.errors import UserError
from effnet.scale.compound import ALPHA, BETA, GAMMA, MAX_MULTIPLIER, MAX_PHI, MIN_PHI
from effnet.search import stats
from effnet.search.record import row_estimate


def float_range(text: str) -> tuple[float, float]:
    """``LOW,HIGH``."""
    parts = text.split(",")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"{text!r} is not LOW,HIGH")
    low, high = (finite_float(p) for p in parts)
    return low, high


def float_list(text: str) -> list[float]:
    """Comma-separated positive numbers."""
    try:
        values = [positive_float(p) for p in text.split(",") if p.strip()]
    except argparse.ArgumentTypeError as err:
        raise argparse.ArgumentTypeError(f"{text!r}: {err}") from None
    if not values:
        raise argparse.ArgumentTypeError("give at least one value")
    return values


def _phi_list(text: str) -> list[float]:
    """Comma-separated φ values (finite; the range is checked with the sweeps)."""
    try:
        values = [finite_float(p) for p in text.split(",") if p.strip()]
    except argparse.ArgumentTypeError as err:
        raise argparse.ArgumentTypeError(f"{text!r}: {err}") from None
    if not values:
        raise argparse.ArgumentTypeError("give at least one value")
    return values


def _progress(args: argparse.Namespace) -> bool:
    return not args.json and sys.stderr.isatty()


# -- shared options -------------------------------------------------------------------------------
def add_proxy(
    p: argparse.ArgumentParser,
    *,
    epochs: int = 2,
    resolution: int = 32,
    seeds: int = 1,
    batch_size: int = 64,
    data: bool = True,
) -> None:
    from effnet.search.proxy import BUDGET_MODES, MAX_SEEDS

    g = p.add_argument_group("proxy training (the same budget for every trial)")
    if data:
        g.add_argument("--data", default="digits", help="'digits' (built in) or an image folder with train/ and val/")
        g.add_argument("--epochs", type=positive_int, default=epochs, help=f"epochs per trial (default {epochs})")
        g.add_argument(
            "--resolution",
            type=positive_int,
            default=resolution,
            help=f"baseline proxy resolution, px (default {resolution})",
        )
        g.add_argument("--batch-size", type=positive_int, default=batch_size, help=f"batch size (default {batch_size})")
        g.add_argument("--seed", type=int, default=0, help="random seed of the first trial of each point (default 0)")
        g.add_argument("--recipe", default="small", help="training recipe: small, paper, finetune (default small)")
        g.add_argument(
            "--max-steps-per-epoch", type=positive_int, help="cap on steps per epoch (default: whole epochs)"
        )
    g.add_argument(
        "--seeds",
        type=positive_int,
        default=seeds,
        help=f"train every point with this many seeds (SEED, SEED+1, …; at most {MAX_SEEDS}) and report the mean "
        f"and its 95%% interval; one seed gives no interval. Rerun with more to train only the new seeds "
        f"(default {seeds})",
    )
    g.add_argument(
        "--budget-mode",
        choices=BUDGET_MODES,
        default="epochs",
        help="epochs: --epochs for every point (default); macs: the baseline's --epochs of compute for every point "
        "(steps ∝ 1/multiply-adds); time: --time-per-point seconds of training for every point; plateau: up to "
        "--epochs, stopped after --patience epochs without a better validation accuracy",
    )
    g.add_argument("--time-per-point", type=positive_float, help="seconds of training per point (--budget-mode time)")
    g.add_argument(
        "--patience",
        type=positive_int,
        default=2,
        help="epochs without improvement that end a point (plateau; default 2)",
    )
    g.add_argument(
        "--no-tensor-cache",
        dest="tensor_cache",
        action="store_false",
        help="decode and augment images one by one (default: the data decoded once into uint8 tensors, "
        "augmented a batch at a time; recipes with AutoAugment/RandAugment always go image by image)",
    )


def add_study_options(
    p: argparse.ArgumentParser, *, default_name: str, default_output: str, n_trials: bool = True
) -> None:
    g = p.add_argument_group("study storage (resumable; share a PostgreSQL URL across workers)")
    g.add_argument("--output", default=default_output, help=f"output folder (default {default_output})")
    g.add_argument(
        "--storage", help="SQLite file or SQLAlchemy URL (postgresql://user:pw@host/db); default OUTPUT/study.db"
    )
    g.add_argument("--study-name", default=default_name, help=f"study name in the storage (default {default_name})")
    if n_trials:
        g.add_argument("--n-trials", type=positive_int, help="run at most this many trials in this process")
    g.add_argument(
        "--heartbeat",
        type=positive_int,
        default=10,
        help="seconds between heartbeats; a trial is stale after twice this",
    )


def add_grid(p: argparse.ArgumentParser, *, step: float = 0.05, max_points: int | None = None) -> None:
    from effnet.search.grid import RANGES, TARGET, TOLERANCE

    g = p.add_argument_group("grid (α, β, γ ≥ 1 with |α·β²·γ² − target| ≤ tolerance)")
    from effnet.search.grid import MAX_GRID_VALUES, MAX_POINTS

    g.add_argument(
        "--grid-step",
        type=positive_float,
        default=step,
        help=f"grid step (default {step}; at most {MAX_GRID_VALUES} values per axis)",
    )
    g.add_argument("--target", type=positive_float, default=TARGET, help=f"α·β²·γ² target (default {TARGET:g})")
    g.add_argument("--tolerance", type=nonnegative_float, default=TOLERANCE, help=f"(default {TOLERANCE:g})")
    for name, (low, high) in RANGES.items():
        g.add_argument(
            f"--{name}-range", type=float_range, default=(low, high), help=f"LOW,HIGH (default {low},{high})"
        )
    g.add_argument(
        "--max-points",
        type=positive_int,
        default=max_points,
        help=f"train at most this many grid points, spread evenly over the grid (default: all; at most {MAX_POINTS})",
    )


def proxy_from_args(args: argparse.Namespace):
    from effnet.search.proxy import Proxy

    return Proxy(
        data=args.data,
        resolution=args.resolution,
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        recipe=args.recipe,
        max_steps_per_epoch=args.max_steps_per_epoch,
        seeds=args.seeds,
        budget=args.budget_mode,
        time_per_point=args.time_per_point,
        patience=args.patience,
        tensor_cache=args.tensor_cache,
    )


def grid_from_args(args: argparse.Namespace):
    from effnet.search.grid import GridConfig

    return GridConfig(
        target=args.target,
        tolerance=args.tolerance,
        step=args.grid_step,
        alpha=args.alpha_range,
        beta=args.beta_range,
        gamma=args.gamma_range,
        max_points=args.max_points,
    )


def add_run_folder(p: argparse.ArgumentParser) -> None:
    """--resume / --overwrite: what to do with an output folder that already holds a run."""
    g = p.add_argument_group(
        "the output folder (the same run continues by itself; a folder that holds another run is refused)"
    )
    how = g.add_mutually_exclusive_group()
    how.add_argument("--resume", action="store_true", help="continue the run in --output (refused if it holds none)")
    how.add_argument(
        "--overwrite", action="store_true", help="replace the run in --output (its files are removed first)"
    )


# -- search-scaling -------------------------------------------------------------------------------
def cmd_search_scaling(args: argparse.Namespace) -> int:
    from effnet.search.grid import search_scaling

    base = architecture_from_args(args)
    if args.predict_phi is not None:  # refused before any point trains
        from effnet.search.joint import check_phi

        check_phi(args.predict_phi, field="predict_phi")
    result = search_scaling(
        base,
        proxy=proxy_from_args(args),
        grid=grid_from_args(args),
        storage=args.storage,
        study_name=args.study_name,
        output=args.output,
        n_trials=args.n_trials,
        pruner=args.pruner,
        heartbeat=args.heartbeat,
        progress=_progress(args),
        plot=args.plot or "",
    )
    predicted = _predict_phi(result.trials, result.grid["target"], result.best, args)
    if args.json:
        print_json({**result.to_dict(), **({} if predicted is None else {"predict_phi": predicted})})
        return 0
    ranked = sorted(result.trials, key=lambda r: -1.0 if r["accuracy"] is None else -r["accuracy"])
    print_table(
        [_percent(r) for r in ranked],
        ["alpha", "beta", "gamma", "constraint", "resolution", "accuracy", "±95%", "seeds", "macs", "params", "state"],
    )
    best = result.best
    if best:
        print(
            f"\nbest: α={best['alpha']:g} β={best['beta']:g} γ={best['gamma']:g}  "
            f"accuracy {stats.show(row_estimate(best))}  {billions(best['macs'])} multiply-adds"
        )
    print(f"verdict: {result.choice.verdict}")
    print(f"budget: {result.budget}, {result.seeds} seed(s) per point")
    if predicted is not None and "error" in predicted:
        print(f"at φ = {args.predict_phi:g}: no joint law from this grid alone ({predicted['error']})")
    elif predicted is not None:
        print(f"joint law {predicted['summary']}".replace("\n", "\n  "))
    print(f"figure: {result.plot}")
    return 0


def _predict_phi(rows: list[dict], target: float, best: dict | None, args: argparse.Namespace) -> dict | None:
    """The joint law's (α, β, γ) at ``--predict-phi`` fitted to the grid's rows, beside the grid's own
    choice ``best``; ``{"phi", "error"}`` with the one line why where the grid cannot identify it."""
    if args.predict_phi is None:
        return None
    from effnet.search.joint import choose_at_phi

    try:
        choice = choose_at_phi(
            rows,
            args.predict_phi,
            target=target,
            grid_choice=(best["alpha"], best["beta"], best["gamma"]) if best else None,
            progress=_progress(args),
        )
    except UserError as err:
        return {"phi": args.predict_phi, "error": str(err)}
    return choice.to_dict()


def _percent(row: dict) -> dict:
    """A row for the table: accuracy and its 95% half-width in percent ("?" with one seed)."""
    accuracy, half = row["accuracy"], row.get("accuracy_ci95")
    shown = dict(row, accuracy=None if accuracy is None else round(100 * accuracy, 2))
    shown["±95%"] = round(100 * half, 2) if half is not None else ("?" if accuracy is not None else None)
    return shown


# -- study-scaling --------------------------------------------------------------------------------
def cmd_study_scaling(args: argparse.Namespace) -> int:
    from effnet.search.study import Sweeps, study_scaling

    asked = [flag for flag, value in (("--at-macs", args.at_macs), ("--at-cost", args.at_cost),
             ("--at-phi", args.at_phi), ("--holdout", args.holdout or None)) if value is not None]  # fmt: skip
    if asked and not args.fit:
        raise UserError(f"{', '.join(asked)} shape the fit: add --fit")
    if args.fit:  # a target the fit would refuse is refused before any training
        _fit_target(args, args.cost or args.compare_by)
    base = architecture_from_args(args)
    sweeps = Sweeps(
        widths=tuple(args.widths),
        depths=tuple(args.depths),
        resolutions=tuple(args.resolutions),
        phis=tuple(args.phis),
        alpha=args.alpha,
        beta=args.beta,
        gamma=args.gamma,
        limit=args.limit,
        max_macs_ratio=args.max_macs_ratio,
        families=tuple(args.families.split(",")),
    )
    result = study_scaling(
        base,
        proxy=proxy_from_args(args),
        sweeps=sweeps,
        storage=args.storage,
        study_name=args.study_name,
        output=args.output,
        n_trials=args.n_trials,
        heartbeat=args.heartbeat,
        progress=_progress(args),
        plot=args.plot or "",
        csv_path=args.csv_path or "",
        compare_by=args.compare_by,
    )
    fit, unfit = None, None
    if args.fit and result.csv:
        try:  # the study stands whatever its fit: a fit no law can mean is a line of the report
            fit = _fit(args, result.csv, args.cost or args.compare_by)
        except UserError as err:
            unfit = str(err)
    if args.json:
        payload = result.to_dict()
        if args.fit:
            payload["fit"] = fit.to_dict() if fit else {"refused": unfit}
        print_json(payload)
        return 0
    rows = [dict(_percent(r), family=family) for family, curve in result.curves.items() for r in curve]
    columns = ["family", "value", "depth", "width", "resolution", "accuracy", "±95%", "seeds", "macs", "params"]
    print_table(rows, [*columns, "train_seconds", "state"])
    print(
        f"\nbudget: {result.budget}, {result.seeds} seed(s) per point; compound vs each curve at equal {args.compare_by}:"
    )
    for family, c in result.comparison.items():
        print(f"  compound vs {family}: {c['verdict']}")
    if result.not_learned:
        print(f"did not learn (below the learning threshold): {', '.join(result.not_learned)}")
    print(f"figure: {result.plot}\ncsv: {result.csv}")
    if fit:
        print()
        print_fit(fit)
    elif unfit:
        print(f"\nfit: not made: {unfit}")
    return 0


# -- fit-scaling ----------------------------------------------------------------------------------
def add_fit_options(p: argparse.ArgumentParser, *, study: bool = False) -> None:
    """The options of a fit: cost, target, holdout, bootstrap (``study``: as study-scaling --fit's)."""
    from effnet.search.laws import COSTS, RESAMPLES

    g = p.add_argument_group("fitted laws err = e∞ + k·C^(−a) per curve, intervals from a bootstrap over seeds")
    if study:
        g.add_argument("--fit", action="store_true", help="fit each curve's law after the study and print it")
    g.add_argument(
        "--cost",
        choices=list(COSTS),
        default=None if study else "macs",
        help="the cost C: multiply-adds, parameters, activations or measured training time (default "
        + ("--compare-by)" if study else "macs)"),
    )
    target = g.add_mutually_exclusive_group()
    target.add_argument(
        "--at-macs", type=big_number, help="predict each curve at this many multiply-adds (--cost macs)"
    )
    target.add_argument("--at-cost", type=big_number, help="predict each curve at this cost, in the unit of --cost")
    target.add_argument(
        "--at-phi",
        type=finite_float,
        help="predict at compound φ (its cost from log cost linear in φ over the study's compound points) and "
        "choose α, β, γ there with the joint model of all points",
    )
    g.add_argument(
        "--holdout",
        action="store_true",
        help="leave each curve's largest-cost point out of its fit, predict it and show it against its measurement",
    )
    g.add_argument(
        "--resamples",
        type=positive_int,
        default=RESAMPLES,
        help=f"bootstrap resamples of the seeds (default {RESAMPLES})",
    )


def _fit_target(args: argparse.Namespace, cost: str) -> float | None:
    if args.at_macs is not None and cost != "macs":
        raise UserError(f"at_macs is a target in multiply-adds; with --cost {cost} give --at-cost", field="at_macs")
    return args.at_macs if args.at_macs is not None else args.at_cost


def print_fit(report) -> None:
    """A fit report as short tables: the laws, the predictions at the target, the holdout, the verdicts."""
    from effnet.search.laws import COST_WORDS

    def interval(i: dict, scale: float = 1.0, digits: int = 3) -> str:
        if i["low"] is None:  # one seed: no interval
            return f"{scale * i['value']:.{digits}g} [?]"
        return f"{scale * i['value']:.{digits}g} [{scale * i['low']:.{digits}g}, {scale * i['high']:.{digits}g}]"

    fits = {f: c for f, c in report.curves.items() if not c.refused}
    print(f"err = e∞ + k·(C/C₀)^(−a), C = {COST_WORDS[report.cost]}, C₀ the baseline's; 95% intervals from "
          f"{report.resamples} bootstrap resamples of the seeds")  # fmt: skip
    rows = [
        {
            "curve": f,
            "e_inf": interval(c.params["e_inf"].to_dict()),
            "k": interval(c.params["k"].to_dict()),
            "a": interval(c.params["a"].to_dict()),
            "R²": c.fit["r2"],
            "rmse (points)": c.fit["rmse"],
            "points": c.fit["points"],
            "seeds": c.fit["seeds"],
        }
        for f, c in fits.items()
    ]
    print_table(rows, ["curve", "e_inf", "k", "a", "R²", "rmse (points)", "points", "seeds"])
    for f, c in report.curves.items():
        if c.refused:
            print(f"not fitted: {c.refused}")
        elif c.fit["left_out"]:
            print(f"{f}: left out below the learning threshold: {', '.join(c.fit['left_out'])}")
    if report.target:
        t = report.target
        phi = f"φ = {t['phi']:g}: " if t.get("phi") is not None else ""
        print(f"\nat {phi}{t['cost']:.4g} {COST_WORDS[report.cost]}:")
        rows = [
            {
                "curve": f,
                "predicted %": interval(dict(c.at, value=c.at["predicted"]), 100),
                "beyond": f"{c.at['beyond']:.3g}×",
            }
            for f, c in fits.items()
        ]
        print_table(rows, ["curve", "predicted %", "beyond"])
        for v in report.verdicts.values():
            print(f"  {v['text']}")
    held = {f: c.holdout for f, c in fits.items() if c.holdout}
    if held:
        print("\nholdout: each curve's largest-cost point predicted from the others")
        rows = []
        for f, h in held.items():
            if "refused" in h:
                rows.append({"curve": f, "point": h["point"], "inside": f"not checked: {h['refused']}"})
                continue
            rows.append(
                {
                    "curve": f,
                    "point": h["point"],
                    "predicted %": interval(h["predicted"], 100),
                    "measured %": interval(h["measured"], 100),
                    "inside": "yes" if h["inside"] else "no",
                    "predicted − measured": interval(h["difference"], 100, 2),
                    "verdict": "agrees" if h["agrees"] else "DISAGREES",
                }
            )
        print("(inside: the measured mean within the predicted interval; verdict: the difference's interval, which "
              "also counts the measurement's own seed noise, contains 0)")  # fmt: skip
        print_table(rows, ["curve", "point", "predicted %", "measured %", "inside", "predicted − measured", "verdict"])
    for warning in report.warnings:
        print(f"warning: {warning}")
    if report.choice is not None:
        print(f"\n{report.choice['summary']}" if "summary" in report.choice else f"\n{report.choice['refused']}")
    if report.plot:
        print(f"figure: {report.plot}")


def _fit(args: argparse.Namespace, source: str, cost: str, *, plot: str | None = "", curves: str | None = None):
    """The fit report of a study (``source``) as the options ask, with the joint model's α, β, γ at
    --at-phi (a joint fit that cannot be made is reported in one line; the curves' fits still stand)."""
    from dataclasses import replace

    from effnet.search.laws import fit_scaling, read_study

    report = fit_scaling(
        source,
        cost=cost,
        at_cost=_fit_target(args, cost),
        at_phi=args.at_phi,
        holdout=args.holdout,
        curves=curves.split(",") if curves else None,
        resamples=args.resamples,
        plot=plot,
        progress=_progress(args),
    )
    if args.at_phi is None:
        return report
    from effnet.search.joint import choose_at_phi

    try:
        choice = choose_at_phi(read_study(source), args.at_phi, resamples=args.resamples, progress=_progress(args))
    except UserError as err:
        return replace(report, choice={"refused": f"α, β, γ at φ = {args.at_phi:g}: not chosen: {err}"})
    return replace(report, choice=choice.to_dict())


def cmd_fit_scaling(args: argparse.Namespace) -> int:
    plot = None if args.no_plot else (args.plot or "")
    report = _fit(args, args.source, args.cost, plot=plot, curves=args.curves)
    if args.json:
        print_json(report.to_dict())
        return 0
    print_fit(report)
    return 0


# -- plan -----------------------------------------------------------------------------------------
def cmd_plan(args: argparse.Namespace) -> int:
    from effnet.search.plan import plan

    base = architecture_from_args(args)
    record = plan(
        base,
        macs=args.macs,
        params=args.params,
        latency_ms=args.latency_ms,
        activations=args.activations,
        alpha=args.alpha,
        beta=args.beta,
        gamma=args.gamma,
        num_classes=args.num_classes,
        batch_size=args.batch_size,
        repeats=args.repeats,
    )
    if args.json:
        print_json(record.to_dict())
        return 0
    hidden = ("blocks", "next", "budget") + (() if record.capped else ("capped",))
    shown = {k: v for k, v in record.to_dict().items() if k not in hidden and v is not None}
    shown["budget"] = f"{record.budget['metric']} ≤ {record.budget['value']:,.6g}"
    shown["macs"] = f"{record.macs:,} ({billions(record.macs)})"
    shown["activations"] = f"{record.activations:,}"
    print_record(shown)
    return 0


# -- pipeline -------------------------------------------------------------------------------------
def cmd_pipeline(args: argparse.Namespace) -> int:
    from effnet.search.pipeline import FinalConfig, run_pipeline

    budget = {"macs": args.macs, "params": args.params, "latency_ms": args.latency_ms}
    if args.phi is not None and any(v is not None for v in budget.values()):
        raise UserError("give either --phi or a budget (--macs, --params, --latency-ms), not both")
    final = FinalConfig(
        phi=None if any(v is not None for v in budget.values()) else (1.0 if args.phi is None else args.phi),
        **budget,
        epochs=args.final_epochs,
        resolution=args.final_resolution,
    )
    summary = run_pipeline(
        architecture_from_args(args),
        proxy=proxy_from_args(args),
        grid=grid_from_args(args),
        final=final,
        output=args.output,
        storage=args.storage,
        study_name=args.study_name,
        heartbeat=args.heartbeat,
        progress=_progress(args),
        resume=args.resume,
        overwrite=args.overwrite,
    )
    if args.json:
        print_json(summary.to_dict())
        return 0
    c, model, ev = summary.coefficients, summary.model, summary.evaluation
    print(f"grid search: α={c['alpha']:g} β={c['beta']:g} γ={c['gamma']:g} (α·β²·γ² = {c['constraint']:.3f})")
    print(f"  {summary.choice['verdict']}")
    print(
        f"scaled to φ={summary.phi:.4g}: depth ×{model['depth']:.3f}, width ×{model['width']:.3f}, "
        f"{model['resolution']} px, {model['params']:,} params, {billions(model['macs'])} multiply-adds"
    )
    top1 = stats.Estimate(mean=ev["top1"], n=len(ev["top1s"]), ci95=ev["top1_ci95"])
    seeds = len(ev["top1s"])
    print(f"trained {ev['epochs']} epochs, {seeds} seed(s): top-1 {stats.show(top1)}, top-5 {100 * ev['top5']:.2f}%")
    if summary.gain:
        b = summary.baseline or {}
        shown = stats.Estimate(mean=b["top1"], n=len(b["top1s"]), ci95=b["top1_ci95"])
        print(f"baseline (φ=0) with the same budget and seeds: top-1 {stats.show(shown)}")
        print(f"  {summary.gain['verdict']}")
    print(f"weights: {summary.files['weights']}\nreport:  {summary.files['report']}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search-scaling",
        help="grid-search α, β, γ at φ=1 on a proxy task (the paper's step 1)",
        description="Grid-search the compound coefficients α (depth), β (width), γ (resolution) ≥ 1 with "
        "α·β²·γ² ≈ target at φ = 1: every point trains once with the same budget. Resumable; several "
        "workers may share one PostgreSQL study.",
    )
    add_architecture(p)
    add_proxy(p)
    add_grid(p)
    add_study_options(p, default_name="search-scaling", default_output="runs/search-scaling")
    p.add_argument("--pruner", choices=("none", "median"), default="none", help="prune hopeless trials (default none)")
    p.add_argument("--plot", metavar="FILE.png", help="figure path (default OUTPUT/search_scaling.png)")
    p.add_argument(
        "--predict-phi",
        type=finite_float,
        metavar="φ",
        help="after the grid, fit a joint law of error over depth, width and resolution to its points and "
        "choose the α, β, γ (α·β²·γ² = target) it predicts best at this φ, with bootstrap intervals, beside the "
        "grid's choice and the paper's (a grid alone spans one cost: the line then says why no law is fitted)",
    )
    add_json(p)
    p.set_defaults(func=cmd_search_scaling)

    from effnet.search.study import COMPARE_BY, DEFAULT_PHIS, MAX_SWEEP, PAPER_DEPTHS, PAPER_RESOLUTIONS, PAPER_WIDTHS

    def shown(values: tuple[float, ...]) -> str:
        return ",".join(f"{v:g}" for v in values)

    p = sub.add_parser(
        "study-scaling",
        help="scale width only, depth only, resolution only and compound; four curves of accuracy vs MACs",
        description="The paper's Observations 1 and 2 on your data: the baseline scaled by one dimension at a "
        "time and by compound φ, every point trained with the same budget; one figure and one CSV.",
    )
    add_architecture(p)
    add_proxy(p)
    g = p.add_argument_group(
        f"sweeps (at most {MAX_SWEEP} values each; multipliers within (0, {MAX_MULTIPLIER:g}], "
        f"φ within [{MIN_PHI:g}, {MAX_PHI:g}])"
    )
    g.add_argument("--widths", type=float_list, default=list(PAPER_WIDTHS), help=f"(default {shown(PAPER_WIDTHS)})")
    g.add_argument("--depths", type=float_list, default=list(PAPER_DEPTHS), help=f"(default {shown(PAPER_DEPTHS)})")
    g.add_argument(
        "--resolutions", type=float_list, default=list(PAPER_RESOLUTIONS), help=f"(default {shown(PAPER_RESOLUTIONS)})"
    )
    g.add_argument(
        "--phis",
        type=_phi_list,
        default=list(DEFAULT_PHIS),
        help=f"compound φ values, below 0 to scale down (default {shown(DEFAULT_PHIS)})",
    )
    g.add_argument("--alpha", type=positive_float, default=ALPHA, help=f"compound depth base (default {ALPHA})")
    g.add_argument("--beta", type=positive_float, default=BETA, help=f"compound width base (default {BETA})")
    g.add_argument("--gamma", type=positive_float, default=GAMMA, help=f"compound resolution base (default {GAMMA})")
    g.add_argument("--families", default="width,depth,resolution,compound", help="curves to draw (default all four)")
    g.add_argument("--limit", type=positive_int, help="keep the first N values of each sweep")
    g.add_argument("--max-macs-ratio", type=positive_float, help="skip points costing more than this × the baseline")
    add_study_options(p, default_name="study-scaling", default_output="runs/study-scaling")
    p.add_argument("--plot", metavar="FILE.png", help="figure path (default OUTPUT/scaling_study.png)")
    p.add_argument("--csv", dest="csv_path", metavar="FILE.csv", help="CSV path (default OUTPUT/scaling_study.csv)")
    p.add_argument(
        "--compare-by",
        choices=list(COMPARE_BY),
        default="macs",
        help="compare each curve with compound at equal multiply-adds (default), measured training time, "
        "parameters or activations: compound interpolated in log(cost) within its measured range, never beyond",
    )
    add_fit_options(p, study=True)
    add_json(p)
    p.set_defaults(func=cmd_study_scaling)

    p = sub.add_parser(
        "fit-scaling",
        help="fit err = e∞ + k·C^(−a) to each curve of a study; predict at a larger cost, check on a held-out point",
        description="Fit a saturating law of error against cost to each curve (width, depth, resolution, "
        "compound) of a study-scaling run, over every seed's accuracy (weighted least squares), with 95% "
        "intervals from a bootstrap over seeds; predict each curve at a target cost or compound φ with the "
        "verdict of compound against each curve there, and with --holdout check each curve's prediction of "
        "its largest point. A curve where no law can mean anything is reported with its reason; the command "
        "fails only when no curve (or one named in --curves) can be fitted.",
    )
    p.add_argument("source", help="a study-scaling run folder (its scaling_study.csv) or a CSV in that format")
    add_fit_options(p)
    p.add_argument("--curves", help="fit only these curves, comma-separated; each must fit (default: all)")
    shown_plot = p.add_mutually_exclusive_group()
    shown_plot.add_argument("--plot", metavar="FILE.png", help="figure path (default: <csv name>_fit.png beside it)")
    shown_plot.add_argument("--no-plot", action="store_true", help="draw no figure")
    add_json(p)
    p.set_defaults(func=cmd_fit_scaling)

    p = sub.add_parser(
        "plan",
        help="the largest compound φ whose scaled model fits a MACs, parameter, activation or latency budget",
        description="Find the largest real φ such that the baseline compound-scaled by α^φ, β^φ, γ^φ (official "
        f"rounding) fits the budget, within [{MIN_PHI:g}, {MAX_PHI:g}]: a budget below the baseline's cost gives φ < 0 "
        "(the baseline scaled down, as TinyNet does). Activations are the elements written by every convolution and linear layer "
        "for one image (Dollár et al. 2021). Latency is measured here: median of --repeats forward passes on the "
        "CPU.",
    )
    add_architecture(p)
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--macs", type=big_number, help="multiply-adds budget, e.g. 2e9 or 2B")
    budget.add_argument("--params", type=big_number, help="parameter budget, e.g. 20M")
    budget.add_argument(
        "--activations", type=big_number, help="activations budget (conv and linear outputs per image), e.g. 10M"
    )
    budget.add_argument("--latency-ms", type=positive_float, help="latency budget in milliseconds on this machine")
    p.add_argument("--alpha", type=positive_float, default=ALPHA, help=f"depth base α (default {ALPHA})")
    p.add_argument("--beta", type=positive_float, default=BETA, help=f"width base β (default {BETA})")
    p.add_argument("--gamma", type=positive_float, default=GAMMA, help=f"resolution base γ (default {GAMMA})")
    p.add_argument("--image-size", type=positive_int, help="base resolution in pixels for --blocks (default 224)")
    p.add_argument("--num-classes", type=positive_int, default=1000, help="classifier size (default 1000)")
    p.add_argument("--batch-size", type=positive_int, default=1, help="batch size of latency runs (default 1)")
    p.add_argument("--repeats", type=positive_int, default=10, help="timed forward passes per latency (default 10)")
    add_json(p)
    p.set_defaults(func=cmd_plan)

    from effnet.search.pipeline import DEFAULT_BASE, DEFAULT_GRID, DEFAULT_PROXY, FinalConfig

    p = sub.add_parser(
        "pipeline",
        help="the whole method: grid search at φ=1 → scale → train → evaluate → weights + report",
        description="Grid-search α, β, γ at φ = 1 on a proxy budget, scale the baseline to --phi or to the "
        "largest φ under a budget, train and evaluate the scaled model and the unscaled baseline with the same "
        "budget and seeds, and write the weights and a Markdown report with the scaled model's gain over the "
        "baseline (95% interval; a tie where it contains 0). With no options: the built-in digits, baseline "
        f"{DEFAULT_BASE} (B0 at width 0.25, depth 0.34, 32 px), 4 grid points of 3 epochs at batch 32 with 3 seeds "
        "each (mean and 95% interval; points below 3× chance are flagged and left out of the choice), φ = 1 and "
        "the baseline trained 6 epochs with each seed, SQLite storage in the output folder: about five minutes on "
        "an idle 2-core CPU. Every step resumes when rerun.",
    )
    add_architecture(p, default_base=DEFAULT_BASE)
    add_proxy(
        p,
        epochs=DEFAULT_PROXY.epochs,
        resolution=DEFAULT_PROXY.resolution,
        seeds=DEFAULT_PROXY.seeds,
        batch_size=DEFAULT_PROXY.batch_size,
    )
    add_grid(p, step=DEFAULT_GRID.step, max_points=DEFAULT_GRID.max_points)
    add_study_options(p, default_name="pipeline", default_output="runs/pipeline", n_trials=False)
    add_run_folder(p)
    g = p.add_argument_group("the final model (one of --phi or a budget; default φ = 1)")
    g.add_argument(
        "--phi",
        type=finite_float,
        help=f"compound coefficient φ in [{MIN_PHI:g}, {MAX_PHI:g}] (default 1; below 0 scales the baseline down)",
    )
    g.add_argument("--macs", type=big_number, help="largest φ whose model has at most this many multiply-adds")
    g.add_argument("--params", type=big_number, help="largest φ whose model has at most this many parameters")
    g.add_argument("--latency-ms", type=positive_float, help="largest φ whose model runs within this on this CPU")
    g.add_argument(
        "--final-epochs",
        type=positive_int,
        default=FinalConfig.epochs,
        help=f"epochs for the final model (default {FinalConfig.epochs})",
    )
    g.add_argument(
        "--final-resolution",
        type=positive_int,
        help="baseline resolution of the final model, px (default --resolution)",
    )
    add_json(p)
    p.set_defaults(func=cmd_pipeline)


__all__ = ["register"]
