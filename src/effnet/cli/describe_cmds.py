"""``effnet models``, ``effnet info`` and ``effnet scale``: describe and scale networks."""

from __future__ import annotations

import argparse

from effnet.cli.args import (
    add_architecture,
    add_json,
    architecture_from_args,
    nonnegative_float,
    positive_float,
    positive_int,
)
from effnet.cli.output import billions, print_json, print_record, print_table
from effnet.describe.network import NetworkSpec
from effnet.errors import UserError
from effnet.models.profile import profile
from effnet.scale.compound import ALPHA, BETA, GAMMA, compound_coefficients, scale_network
from effnet.zoo import get_description, model_names

#: --resolution values below this are multipliers, larger ones are pixels.
RESOLUTION_MULTIPLIER_LIMIT = 16


def summarize(spec: NetworkSpec, *, num_classes: int = 1000) -> dict[str, object]:
    """What ``effnet info`` and ``effnet scale`` report about a description."""
    counts = profile(spec, num_classes=num_classes)
    return {
        "name": spec.name,
        "params": counts.params,
        "macs": counts.macs,
        "resolution": spec.resolution,
        "width": round(spec.width, 6),
        "depth": round(spec.depth, 6),
        "resolution_multiplier": round(spec.resolution_multiplier, 6),
        "dropout": spec.dropout,
        "drop_path_rate": spec.drop_path_rate,
        "stem_channels": spec.stem_channels,
        "head_channels": spec.head_channels,
        "activation": spec.activation,
        "padding": spec.padding,
        "num_blocks": spec.num_blocks,
        "blocks": spec.block_strings,
    }


def _resolution_kwargs(value: float | None) -> dict[str, float | int]:
    if value is None:
        return {}
    if value < RESOLUTION_MULTIPLIER_LIMIT:
        return {"resolution": value}
    if not float(value).is_integer():
        raise UserError(f"--resolution {value} px is not a whole number of pixels")
    return {"image_size": int(value)}


def _print_summary(record: dict[str, object], as_json: bool) -> None:
    if as_json:
        print_json(record)
        return
    shown = dict(record)
    shown["macs"] = f"{record['macs']:,} ({billions(int(record['macs']))})"  # type: ignore[arg-type]
    print_record(shown)


def cmd_models(args: argparse.Namespace) -> int:
    rows = [summarize(get_description(name)) for name in model_names()]
    if args.json:
        print_json(rows)
    else:
        print_table(rows, ["name", "params", "macs", "resolution", "width", "depth", "dropout"])
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    if args.name and (args.blocks or args.description or args.base):
        raise UserError("give either a model NAME or --blocks/--description, not both")
    spec = architecture_from_args(args, args.name)
    if args.width is not None or args.depth is not None or args.resolution is not None:
        spec = scale_network(
            spec, depth=args.depth or 1.0, width=args.width or 1.0, **_resolution_kwargs(args.resolution)
        )
    if args.save:
        spec.save(args.save)
    _print_summary(summarize(spec), args.json)
    return 0


def cmd_scale(args: argparse.Namespace) -> int:
    base = architecture_from_args(args)
    direct = args.depth is not None or args.width is not None or args.resolution is not None
    if args.phi is not None and direct:
        raise UserError("give either --phi (compound scaling) or --depth/--width/--resolution, not both")
    if args.phi is None and not direct:
        raise UserError("give --phi, or one or more of --depth, --width, --resolution")
    record: dict[str, object] = {}
    if args.phi is not None:
        coeffs = compound_coefficients(args.phi, args.alpha, args.beta, args.gamma)
        spec = scale_network(
            base,
            depth=coeffs.depth,
            width=coeffs.width,
            resolution=coeffs.resolution,
            name=f"{base.name}-phi{args.phi:g}",
        )
        record.update(phi=args.phi, alpha=args.alpha, beta=args.beta, gamma=args.gamma)
        ideal = coeffs.macs_factor
    else:
        spec = scale_network(
            base,
            depth=args.depth or 1.0,
            width=args.width or 1.0,
            **_resolution_kwargs(args.resolution),
            name=f"{base.name}-scaled",
        )
        ideal = (args.depth or 1.0) * (args.width or 1.0) ** 2 * (spec.resolution / base.resolution) ** 2
    summary = summarize(spec)
    base_macs = profile(base).macs
    summary.update(record)
    summary["base"] = base.name
    summary["base_macs"] = base_macs
    summary["macs_ratio"] = round(int(summary["macs"]) / base_macs, 4)  # type: ignore[arg-type]
    summary["ideal_macs_ratio"] = round(ideal, 4)
    if args.save:
        spec.save(args.save)
    _print_summary(summary, args.json)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the published models with parameters and multiply-adds")
    add_json(p)
    p.set_defaults(func=cmd_models)

    scaling_help = "multiplier (a value below 16) or pixels (16 and above)"
    p = sub.add_parser("info", help="describe one model: blocks, parameters, multiply-adds")
    p.add_argument("name", nargs="?", help="model name or description JSON file")
    add_architecture(p, default_base=None)
    _add_multipliers(p, scaling_help, "also write the description to this file")
    add_json(p)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser(
        "scale",
        help="compound-scale a baseline by φ, or scale depth/width/resolution directly",
        description="Compound scaling: depth α^φ, width β^φ, resolution γ^φ (official rounding).",
    )
    add_architecture(p)
    p.add_argument("--phi", type=nonnegative_float, help="compound coefficient φ ≥ 0 (fractional too)")
    p.add_argument("--alpha", type=positive_float, default=ALPHA, help=f"depth base α (default {ALPHA})")
    p.add_argument("--beta", type=positive_float, default=BETA, help=f"width base β (default {BETA})")
    p.add_argument("--gamma", type=positive_float, default=GAMMA, help=f"resolution base γ (default {GAMMA})")
    _add_multipliers(p, scaling_help, "also write the scaled description to this file")
    add_json(p)
    p.set_defaults(func=cmd_scale)


__all__ = ["NetworkSpec", "register"]


def _add_multipliers(p: argparse.ArgumentParser, scaling_help: str, save_help: str) -> None:
    """The direct scaling flags of ``info`` and ``scale``, and ``--save``."""
    p.add_argument("--depth", type=positive_float, help="depth multiplier")
    p.add_argument("--width", type=positive_float, help="width multiplier")
    p.add_argument("--resolution", type=positive_float, help=f"resolution: {scaling_help}")
    p.add_argument("--image-size", type=positive_int, help="base resolution in pixels for --blocks (default 224)")
    p.add_argument("--save", metavar="FILE.json", help=save_help)
