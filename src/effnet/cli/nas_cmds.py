"""``effnet nas``: search a baseline of your own (MnasNet / EfficientNet §4) on your data and budget."""

from __future__ import annotations

import argparse

from effnet.cli.args import (
    add_architecture,
    add_json,
    architecture_from_args,
    big_number,
    finite_float,
    positive_float,
    positive_int,
    set_threads,
)
from effnet.cli.output import print_json, print_table
from effnet.cli.search_cmds import add_proxy, add_run_folder, proxy_from_args
from effnet.errors import UserError


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of whole numbers") from None


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None


def _words(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def cmd_nas(args: argparse.Namespace) -> int:
    from effnet.nas.objective import Objective
    from effnet.nas.runner import search_architectures
    from effnet.nas.space import space_from_reference

    set_threads(args.threads)
    reference = architecture_from_args(args)
    space = space_from_reference(
        reference,
        ops=args.ops,
        kernels=args.kernels,
        se_ratios=args.se_ratios,
        filter_multipliers=args.filter_multipliers,
        layer_offsets=args.layer_offsets,
    )
    if args.latency and args.target_macs is not None:
        raise UserError("give --target-latency-ms with --latency, not --target-macs")
    if args.latency:
        target = args.target_latency_ms
        if target is None:
            raise UserError("--latency needs --target-latency-ms (the latency budget on this machine)")
    else:
        if args.target_latency_ms is not None:
            raise UserError("--target-latency-ms needs --latency")
        target = args.target_macs if args.target_macs is not None else 400e6
    try:
        objective = Objective(
            kind=args.objective,
            target=target,
            w=args.w,
            metric="latency" if args.latency else "macs",
            resolution=args.resolution,
        )
    except UserError as err:  # the objective's target is --target-macs or --target-latency-ms here
        if err.field != "target":
            raise
        flag = "--target-latency-ms" if args.latency else "--target-macs"
        raise UserError(flag + str(err)[len("target") :], field=err.field) from None
    result = search_architectures(
        strategy=args.strategy,
        n_trials=args.n_trials,
        proxy=proxy_from_args(args),
        space=space,
        objective=objective,
        storage=args.storage,
        study_name=args.study_name,
        output=args.output,
        population=args.population,
        sample_size=args.sample_size,
        heartbeat=args.heartbeat,
        rl_algorithm=args.rl_algorithm,
        train_overrides={"device": args.device} if args.device else None,
        progress=not args.json,
        plot=not args.no_plot,
        resume=args.resume,
        overwrite=args.overwrite,
    )
    if args.json:
        print_json(result.to_dict())
        return 0
    done = [t for t in result.trials if t["state"] == "COMPLETE"]
    top = sorted(done, key=lambda t: -t["reward"])[: args.top]
    print(
        f"{len(done)} architectures evaluated ({result.strategy}, {objective.kind} objective, "
        f"T = {objective.effective_target:,.0f} {'MACs' if objective.metric == 'macs' else 'ms'}"
        f" at {objective.resolution} px, w = {objective.exponent:g})"
    )
    print_table(top, ["number", "accuracy", "macs", "params", "reward", "seconds"])
    if result.best:
        best = result.best
        print(f"\nbest: trial {best['number']}, accuracy {best['accuracy']:.4f}, reward {best['reward']:.4f}")
        print(f"blocks: {','.join(best['blocks'])}")
    for name, path in result.files.items():
        print(f"{name}: {path}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from effnet.describe.blocks import MAX_KERNEL
    from effnet.nas.objective import OBJECTIVES
    from effnet.nas.space import CONV_OPS, MAX_FILTER_MULTIPLIER, MAX_LAYER_OFFSET, MAX_OPTIONS, SearchSpace
    from effnet.nas.strategies import RL_ALGORITHMS, STRATEGIES

    strategies = "; ".join(f"{name}: {text}" for name, text in STRATEGIES.items())
    p = sub.add_parser(
        "nas",
        help="search your own baseline: MnasNet's space, reward ACC×(MACs/T)^w, RL or other strategies",
        description=(
            "Multi-objective architecture search as for EfficientNet-B0: per stage of the reference, choose "
            "conv op, kernel, squeeze-excitation, skip, filters and layers; train each proposal on the proxy "
            "with the same budget; maximise ACC × (MACs/T)^w. Strategies — " + strategies + "."
        ),
    )
    p.add_argument("--data", default="digits", help="image folder (train/ and val/ or test/) or 'digits' (default)")
    p.add_argument("--strategy", choices=list(STRATEGIES), default="rl", help="search strategy (default rl)")
    p.add_argument("--n-trials", type=positive_int, default=20, help="architectures the study should hold (default 20)")
    p.add_argument("--epochs", type=positive_int, default=1, help="proxy training epochs per architecture (default 1)")
    p.add_argument("--resolution", type=positive_int, default=32, help="proxy resolution in pixels (default 32)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="proxy batch size (default 64)")
    p.add_argument("--max-steps-per-epoch", type=positive_int, help="cap the proxy's steps per epoch")
    p.add_argument("--recipe", default="small", help="training recipe for the proxy (default small)")
    p.add_argument("--device", help="device for the proxy training: cpu, cuda, cuda:1 (default: cuda when available)")
    p.add_argument("--threads", type=positive_int, help="CPU threads for PyTorch, 1 to the CPUs here")
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the strategy and of the first proxy run of each architecture (default 0)",
    )
    p.add_argument("--storage", help="Optuna storage: SQLite file or URL, postgresql://… (default OUTPUT/study.db)")
    p.add_argument("--study-name", help="study name (default nas-STRATEGY); the same name resumes it")
    p.add_argument("--heartbeat", type=positive_int, help="seconds between trial heartbeats (stale after twice this)")
    p.add_argument("--output", default="nas-output", help="folder for best.json, trials.csv, pareto.png")
    add_run_folder(p)
    add_proxy(p, data=False)
    add_architecture(p)
    space = p.add_argument_group(f"search space (per stage of the reference; at most {MAX_OPTIONS} options a decision)")
    space.add_argument(
        "--ops",
        type=_words,
        help=f"conv ops, of {','.join(CONV_OPS)} (fu: EfficientNetV2's Fused-MBConv; default MnasNet's "
        f"{','.join(SearchSpace.ops)})",
    )
    space.add_argument("--kernels", type=_ints, help=f"odd kernel sizes up to {MAX_KERNEL} (default 3,5)")
    space.add_argument("--se", dest="se_ratios", type=_floats, help="squeeze-excitation ratios (default 0,0.25)")
    space.add_argument(
        "--filters",
        dest="filter_multipliers",
        type=_floats,
        help=f"filter multipliers of the reference, within (0, {MAX_FILTER_MULTIPLIER:g}] (default 0.75,1,1.25)",
    )
    space.add_argument(
        "--layers",
        dest="layer_offsets",
        type=_ints,
        help=f"layer offsets to the reference, within ±{MAX_LAYER_OFFSET} (default -1,0,1)",
    )
    objective = p.add_argument_group("objective: ACC × (cost/T)^w")
    objective.add_argument("--objective", choices=OBJECTIVES, default="soft", help="soft (default) or hard")
    objective.add_argument("--target-macs", type=big_number, help="T in multiply-adds at 224 px (default 400M)")
    objective.add_argument("--w", type=finite_float, help="exponent w (default -0.07 soft, -1 hard)")
    objective.add_argument("--latency", action="store_true", help="use CPU latency measured here instead of MACs")
    objective.add_argument("--target-latency-ms", type=positive_float, help="T in milliseconds with --latency")
    p.add_argument(
        "--rl-algorithm", choices=RL_ALGORITHMS, default="reinforce", help="policy gradient of --strategy rl"
    )
    p.add_argument("--population", type=positive_int, help="evolution/NSGA-II population, TPE start-up trials")
    p.add_argument("--sample-size", type=positive_int, help="evolution tournament size")
    p.add_argument("--top", type=positive_int, default=10, help="rows of the table (default 10)")
    p.add_argument("--no-plot", action="store_true", help="do not draw pareto.png")
    add_json(p)
    p.set_defaults(func=cmd_nas)
