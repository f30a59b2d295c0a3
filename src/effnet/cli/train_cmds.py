"""``effnet train`` and ``effnet finetune``: train a model on an image folder or the built-in digits."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from effnet.cli.args import (
    add_json,
    finite_float,
    nonnegative_float,
    nonnegative_int,
    positive_float,
    positive_int,
    set_threads,
)
from effnet.cli.output import print_json, print_record
from effnet.cli.weights_cmds import WEIGHTS_HELP
from effnet.describe.network import MAX_RESOLUTION
from effnet.errors import UserError, check_whole_number
from effnet.train.config import MAX_BATCH_SIZE, MAX_EPOCHS, MAX_TIME_LIMIT
from effnet.train.distributed import is_main_process
from effnet.train.recipe import RANDAUGMENT_MAX, WORKERS_PER_CPU

if TYPE_CHECKING:
    from effnet.train import TrainReport

#: Options that map one-to-one onto recipe settings: (flag, setting, type, help). An option's ``dest`` is
#: its setting, so a library error naming the setting names the flag (effnet.cli.main.flag_message).
RECIPE_OPTIONS: list[tuple[str, str, Any, str]] = [
    ("--lr", "lr", positive_float, "peak learning rate, > 0 and ≤ 1e30 (default: base_lr × global batch / 256)"),
    ("--warmup-epochs", "warmup_epochs", nonnegative_float, f"linear warm-up epochs, 0 to {MAX_EPOCHS:,}"),
    ("--weight-decay", "weight_decay", nonnegative_float, "weight decay on conv/linear weights, 0 to 1"),
    ("--label-smoothing", "label_smoothing", nonnegative_float, "label smoothing, in [0, 1)"),
    ("--ema-decay", "ema_decay", positive_float, "EMA decay of weights and BN statistics, in (0, 1)"),
    ("--drop-path", "drop_path_rate", nonnegative_float, "stochastic depth rate, in [0, 1)"),
    ("--dropout", "dropout", nonnegative_float, "dropout before the classifier, in [0, 1) (default: the model's)"),
    ("--augment", "augment", str, "autoaugment | randaugment | none"),
    ("--randaugment-m", "randaugment_m", nonnegative_int, f"RandAugment magnitude M, 0 to {RANDAUGMENT_MAX} (N=2)"),
    ("--optimizer", "optimizer", str, "rmsprop_tf | sgd | adamw"),
    ("--schedule", "schedule", str, "step (×0.97 every 2.4 epochs) | cosine | constant"),
    ("--workers", "workers", nonnegative_int, f"data loading worker processes, 0 to {WORKERS_PER_CPU} × the CPUs"),
    ("--checkpoint-every", "checkpoint_every_steps", nonnegative_int, "also checkpoint every N steps"),
    ("--amp", "amp", str, "auto (bf16 on GPUs that support it) | bf16 | off"),
    ("--mixup", "mixup_alpha", finite_float, "mixup α on training batches (0: off)"),
    ("--cutmix", "cutmix_alpha", finite_float, "CutMix α on training batches (0: off; with mixup: one per batch)"),
    (
        "--resolution-start",
        "resolution_start",
        int,
        f"progressive: first stage's image size, 1 to {MAX_RESOLUTION} (default: half the end)",
    ),
    (
        "--resolution-end",
        "resolution_end",
        int,
        f"progressive: last stage's size, 1 to {MAX_RESOLUTION} (default: --resolution, else the model's)",
    ),
    (
        "--randaugment-m-start",
        "randaugment_m_start",
        int,
        f"progressive: first stage's RandAugment magnitude, 0 to {RANDAUGMENT_MAX}",
    ),
    (
        "--randaugment-m-end",
        "randaugment_m_end",
        int,
        f"progressive: last stage's RandAugment magnitude, 0 to {RANDAUGMENT_MAX}",
    ),
    ("--mixup-start", "mixup_alpha_start", finite_float, "progressive: first stage's mixup α"),
    ("--mixup-end", "mixup_alpha_end", finite_float, "progressive: last stage's mixup α"),
    ("--cutmix-start", "cutmix_alpha_start", finite_float, "progressive: first stage's CutMix α"),
    ("--cutmix-end", "cutmix_alpha_end", finite_float, "progressive: last stage's CutMix α"),
    ("--dropout-start", "dropout_start", finite_float, "progressive: first stage's dropout (default: the model's)"),
    ("--dropout-end", "dropout_end", finite_float, "progressive: last stage's dropout (default: the model's)"),
]
PROGRESSIVE_HELP = (
    "progressive learning (EfficientNetV2) in STAGES stages (default 4) of equal epochs: image size, RandAugment "
    "magnitude, mixup/CutMix α and dropout go linearly from their --*-start values in the first stage to their "
    "--*-end values in the last, as the paper's Algorithm 1 (the official code starts at "
    "start + (end − start)/STAGES px and keeps dropout constant); evaluation stays at --resolution. "
    "--recipe v2 / v2_m / v2_l: the paper's values"
)


def parse_setting(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with a JSON value (``none`` for null); plain words are strings."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    key, raw = text.split("=", 1)
    key = key.strip().replace("-", "_")
    if raw.strip().lower() in ("none", "null"):
        return key, None
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw


def _add_run_options(parser: argparse.ArgumentParser, *, default_epochs: int, default_recipe: str) -> None:
    parser.add_argument("--data", default="digits", metavar="DIR|digits", help="image folder or 'digits' (built in)")
    parser.add_argument(
        "--resolution",
        type=positive_int,
        metavar="PX",
        help=f"train and evaluate at this size, 1 to {MAX_RESOLUTION} (progressive: the end size)",
    )
    parser.add_argument(
        "--epochs",
        type=positive_int,
        default=default_epochs,
        help=f"1 to {MAX_EPOCHS:,} (default {default_epochs})",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=64,
        help=f"per process, 1 to {MAX_BATCH_SIZE:,}, and no larger than the training split or than the device's "
        "memory holds (checked before anything is built; default 64)",
    )
    parser.add_argument("--seed", type=nonnegative_int, default=0)
    parser.add_argument(
        "--recipe",
        default=default_recipe,
        help=f"paper | small | finetune | finetune_sgd | v2 | v2_m | v2_l (default {default_recipe})",
    )
    parser.add_argument(
        "--output",
        metavar="DIR",
        help="write weights, checkpoints, metrics and logs here; locked while the run lasts, and a folder that "
        "holds another run is refused unless --resume or --overwrite",
    )
    runs = parser.add_mutually_exclusive_group()
    runs.add_argument("--resume", action="store_true", help="continue the run in DIR from DIR/checkpoints/last.pt")
    runs.add_argument("--overwrite", action="store_true", help="remove the run in DIR (said on stderr) and start anew")
    parser.add_argument("--max-steps-per-epoch", type=positive_int, metavar="N", help="cap each epoch's steps")
    parser.add_argument("--time-limit", type=positive_float, metavar="MIN", help="stop (evaluated) after MIN minutes")
    parser.add_argument(
        "--device", help="cpu, cuda, cuda:N or mps, checked before anything is built (default: cuda when available)"
    )
    parser.add_argument("--threads", type=positive_int, help="CPU threads for PyTorch, 1 to the CPUs here")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="channels_last memory format (default: on; faster depthwise convolutions on CPU and CUDA)",
    )
    parser.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm across processes")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    for flag, setting, kind, text in RECIPE_OPTIONS:
        parser.add_argument(flag, dest=setting, type=kind, metavar="X", help=text)
    parser.add_argument(
        "--progressive",
        dest="progressive_stages",
        nargs="?",
        const=4,
        type=int,
        metavar="STAGES",
        help=PROGRESSIVE_HELP,
    )
    parser.add_argument(
        "--set",
        dest="settings",
        action="append",
        type=parse_setting,
        default=[],
        metavar="KEY=VALUE",
        help="any other recipe setting, e.g. --set crop_scale=[0.25,1] (repeatable)",
    )
    add_json(parser)


def _recipe_overrides(args: argparse.Namespace) -> dict[str, Any]:
    from dataclasses import fields

    from effnet.train.config import RunConfig

    overrides: dict[str, Any] = dict(args.settings)
    run_settings = sorted(set(overrides) & {f.name for f in fields(RunConfig)})
    if run_settings:
        name = run_settings[0]
        raise UserError(
            f"--set {name}: {name} is a setting of the run, not of the recipe; the command's own options set it"
        )
    for _, setting, _, _ in RECIPE_OPTIONS:
        value = getattr(args, setting)
        if value is not None:
            overrides[setting] = value
    if args.progressive_stages is not None:
        check_whole_number("progressive_stages", args.progressive_stages, 1)  # 0 turns it off: not --progressive
        overrides["progressive_stages"] = args.progressive_stages
    if args.compile:
        overrides["compile"] = True
    if args.channels_last is not None:
        overrides["channels_last"] = args.channels_last
    if args.sync_bn:
        overrides["sync_bn"] = True
    if args.device:
        overrides["device"] = args.device
    return overrides


def _common(args: argparse.Namespace) -> dict[str, Any]:
    set_threads(args.threads)
    if args.time_limit is not None and args.time_limit * 60 > MAX_TIME_LIMIT:
        raise UserError(
            f"time_limit must be ≤ {MAX_TIME_LIMIT / 60:g} minutes, got {args.time_limit:g}", field="time_limit"
        )
    quiet = args.json or args.no_progress or not is_main_process()

    def epoch_line(epoch: int, metrics: dict) -> None:
        if not quiet:
            stage = f" (stage {metrics['stage']}, {metrics['train_resolution']} px)" if "stage" in metrics else ""
            print(
                f"epoch {epoch}/{args.epochs}{stage}: train loss {metrics['train_loss']:.4f}"
                f"  val loss {metrics['val_loss']:.4f}"
                f"  top-1 {metrics['top1']:.2%}  top-5 {metrics['top5']:.2%}  {metrics['images_per_second']:.0f} img/s",
                file=sys.stderr,
            )

    return dict(
        epochs=args.epochs,
        batch_size=args.batch_size,
        resolution=args.resolution,
        seed=args.seed,
        recipe=args.recipe,
        output=args.output,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not quiet and sys.stderr.isatty(),
        max_steps_per_epoch=args.max_steps_per_epoch,
        on_epoch_end=epoch_line,
        time_limit=args.time_limit * 60 if args.time_limit else None,
        **_recipe_overrides(args),
    )


def _show(report: TrainReport, as_json: bool) -> None:
    if not is_main_process():
        return
    record = report.to_dict()
    if as_json:
        print_json(record)
        return
    shown = {k: v for k, v in record.items() if k not in ("history", "blocks", "class_names", "evaluation")}
    for key in ("top1", "top5"):
        shown[key] = f"{record[key]:.2%}"
    print_record(shown)
    if report.evaluation is not None:
        from effnet.train.evaluate import summary_text

        print(summary_text(report.evaluation))


def _model_from_args(args: argparse.Namespace) -> Any:
    from effnet.describe.network import NetworkSpec
    from effnet.zoo import description_from_blocks

    if args.blocks:
        return description_from_blocks(args.blocks)
    if args.description:
        return NetworkSpec.load(args.description)
    return args.model


def cmd_train(args: argparse.Namespace) -> int:
    from effnet.train import train_model

    model = _model_from_args(args)
    report = train_model(model, args.data, **_common(args))
    _show(report, args.json)
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from effnet.train import finetune_model

    if args.blocks or args.description:
        raise UserError("finetune takes --model NAME (the architecture of --weights), not --blocks/--description")
    report = finetune_model(
        args.weights,
        args.data,
        model=args.model,
        format=args.format,
        freeze_epochs=args.freeze_epochs,
        freeze_stages=args.freeze_stages,
        **_common(args),
    )
    _show(report, args.json)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from effnet.cli.output import print_table
    from effnet.train.evaluate import evaluate, printable, summary_text

    set_threads(args.threads)
    report = evaluate(
        args.weights,
        args.data,
        model=args.model,
        format=args.format,
        batch_size=args.batch_size,
        output=args.output,
        overwrite=args.overwrite,
        top=args.top,
        device=args.device,
        workers=args.workers,
        progress=not (args.json or args.no_progress) and sys.stderr.isatty(),
    )
    if args.json:
        print_json(report.to_dict())
        return 0
    print(f"{report.model} at {report.resolution} px, {printable(report.weights)} on {printable(report.data)}")
    print(summary_text(report.summary()))
    print()
    rows = [
        {
            **r,
            "class": printable(r["class"]),
            "accuracy": _percent(r["accuracy"]),
            "precision": _percent(r["precision"]),
        }
        for r in report.per_class
    ]
    print_table(rows, ["class", "support", "accuracy", "precision", "predicted"])
    if report.confidently_wrong:
        print(f"\nmost confidently wrong (top {args.top}):")
        wrong = [
            {"image": printable(r["image"]), "true": printable(r["true"]), "predicted": printable(r["predicted"]),
             "confidence": _percent(r["confidence"])}
            for r in report.confidently_wrong
        ]  # fmt: skip
        print_table(wrong, ["image", "true", "predicted", "confidence"])
    speed = report.images_per_second or 0.0
    print(f"\nslowest (ms: own load + share of the batch's forward pass; {speed:.1f} images/s in all):")
    print_table(
        [{**r, "image": printable(r["image"])} for r in report.slowest], ["image", "ms", "load_ms", "forward_ms"]
    )
    if report.output:
        print(f"\nreport: {printable(report.output)}/report.md")
    return 0


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def _add_model(parser: argparse.ArgumentParser, default: str | None) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--model", default=default, metavar="NAME|FILE.json", help=f"model name (default {default})")
    group.add_argument("--blocks", metavar="STRINGS", help="comma-separated block strings of a custom network")
    group.add_argument("--description", metavar="FILE", help="a network description JSON file")


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser(
        "train",
        help="train a model from scratch (paper recipe by default; torchrun for many processes)",
        description="Train a model on an image folder (DIR/train, DIR/val or DIR/test) or the built-in digits. "
        "Run under `torchrun --nproc-per-node N -m effnet train …` for distributed data parallel.",
    )
    _add_model(train, "efficientnet_b0")
    _add_run_options(train, default_epochs=10, default_recipe="paper")
    train.set_defaults(func=cmd_train)

    finetune = subparsers.add_parser(
        "finetune",
        help="fine-tune pretrained weights on new classes",
        description="Replace the classifier of pretrained weights (any format effnet loads, or a pretrained name "
        "such as lite0-imagenet) for the data's classes and fine-tune with a lower learning rate.",
    )
    finetune.add_argument("--weights", required=True, metavar="FILE|NAME", help="weight file or pretrained name")
    finetune.add_argument("--format", default="auto", help="weight layout: auto, native, timm, torchvision, …")
    finetune.add_argument("--freeze-epochs", type=nonnegative_int, default=0, help="train only the classifier first")
    finetune.add_argument(
        "--freeze-stages", type=nonnegative_int, default=0, help="keep the stem and the first N stages as loaded"
    )
    _add_model(finetune, None)
    _add_run_options(finetune, default_epochs=5, default_recipe="finetune")
    finetune.set_defaults(func=cmd_finetune)

    evaluate = subparsers.add_parser(
        "evaluate",
        help="evaluate weights on a labelled image folder: top-1/top-5 with intervals, per class, calibration",
        description="Evaluate a weight file or pretrained name on labelled images with the file's own preprocessing "
        "and classes: top-1 and top-5 with 95% Wilson intervals, per-class accuracy (recall) and precision, the "
        "confusion matrix, the expected calibration error (15 bins), the slowest and the most confidently wrong "
        "images. --data: a folder of class folders, a folder with train/ and val/ (or test/: that split), or "
        "'digits'. A class folder the weights do not know, or a folder without images, is an error; files that "
        "are not images are skipped with a warning naming them.",
    )
    evaluate.add_argument("--weights", required=True, metavar="FILE|NAME", help=WEIGHTS_HELP)
    evaluate.add_argument("--data", required=True, metavar="DIR|digits", help="labelled images (see above)")
    evaluate.add_argument("--model", metavar="NAME", help="the architecture of a foreign weight file")
    evaluate.add_argument("--format", default="auto", help="weight layout: auto, native, timm, torchvision, …")
    evaluate.add_argument(
        "--output",
        metavar="DIR",
        help="write report.md, report.json, confusion.png and reliability.png here (the same evaluation again "
        "replaces them; another one needs --overwrite)",
    )
    evaluate.add_argument("--overwrite", action="store_true", help="replace another evaluation in --output")
    evaluate.add_argument("--batch-size", type=positive_int, default=64, help="images per forward pass (default 64)")
    evaluate.add_argument("--top", type=positive_int, default=10, help="slowest and wrong images listed (default 10)")
    evaluate.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: cuda when available)")
    evaluate.add_argument("--threads", type=positive_int, help="CPU threads for PyTorch, 1 to the CPUs here")
    evaluate.add_argument("--workers", type=nonnegative_int, help="image loading processes (default: as training)")
    evaluate.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_json(evaluate)
    evaluate.set_defaults(func=cmd_evaluate)
