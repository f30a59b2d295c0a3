"""``effnet models``, ``effnet info``, ``effnet scale`` and ``effnet explain``: describe, scale and explain networks."""

from __future__ import annotations

import argparse

from effnet.cli.args import (
    add_architecture,
    add_json,
    architecture_from_args,
    finite_float,
    positive_float,
    positive_int,
)
from effnet.cli.output import billions, print_json, print_record, print_table
from effnet.describe.network import NetworkSpec
from effnet.errors import UserError
from effnet.models.profile import profile
from effnet.scale.compound import ALPHA, BETA, GAMMA, compound_coefficients, scale_network
from effnet.scale.explain import explain_scaling
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
        "activations": counts.activations,
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
    shown["activations"] = f"{record['activations']:,}"
    print_record(shown)


def cmd_models(args: argparse.Namespace) -> int:
    rows = [summarize(get_description(name)) for name in model_names()]
    if args.json:
        print_json(rows)
    else:
        print_table(rows, ["name", "params", "macs", "activations", "resolution", "width", "depth", "dropout"])
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
    p = sub.add_parser("models", help="list the published models with parameters, multiply-adds and activations")
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
    p.add_argument("--phi", type=finite_float, help="compound coefficient φ in [-16, 16] (fractional; < 0 shrinks)")
    p.add_argument("--alpha", type=positive_float, default=ALPHA, help=f"depth base α (default {ALPHA})")
    p.add_argument("--beta", type=positive_float, default=BETA, help=f"width base β (default {BETA})")
    p.add_argument("--gamma", type=positive_float, default=GAMMA, help=f"resolution base γ (default {GAMMA})")
    _add_multipliers(p, scaling_help, "also write the scaled description to this file")
    add_json(p)
    p.set_defaults(func=cmd_scale)

    p = sub.add_parser(
        "explain",
        help="explain a model as a scaling of its family's baseline: multipliers, implied φ, rounding",
        description="Depth, width and resolution multipliers against the base, the φ each implies under "
        "(α, β, γ), the ideal and real multiply-add ratio, and where the official rounding moved each stage.",
    )
    _add_explain_arguments(p)
    p.set_defaults(func=cmd_explain)


__all__ = ["NetworkSpec", "register"]


def _add_multipliers(p: argparse.ArgumentParser, scaling_help: str, save_help: str) -> None:
    """The direct scaling flags of ``info`` and ``scale``, and ``--save``."""
    p.add_argument("--depth", type=positive_float, help="depth multiplier")
    p.add_argument("--width", type=positive_float, help="width multiplier")
    p.add_argument("--resolution", type=positive_float, help=f"resolution: {scaling_help}")
    p.add_argument("--image-size", type=positive_int, help="base resolution in pixels for --blocks (default 224)")
    p.add_argument("--save", metavar="FILE.json", help=save_help)


def _add_explain_arguments(p: argparse.ArgumentParser) -> None:
    """``explain NAME | --blocks … | --description FILE [--base NAME]``: --base is the reference here."""
    p.add_argument("name", nargs="?", help="model name or description JSON file")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--blocks", metavar="STRINGS", help="comma-separated block strings")
    group.add_argument("--description", metavar="FILE", help="a network description JSON file")
    p.add_argument("--base", metavar="NAME", help="the baseline to explain against (default: the family's B0)")
    p.add_argument("--image-size", type=positive_int, help="resolution in pixels for --blocks (default 224)")
    p.add_argument("--alpha", type=positive_float, default=ALPHA, help=f"depth base α (default {ALPHA})")
    p.add_argument("--beta", type=positive_float, default=BETA, help=f"width base β (default {BETA})")
    p.add_argument("--gamma", type=positive_float, default=GAMMA, help=f"resolution base γ (default {GAMMA})")
    add_json(p)


def _family_base(spec: NetworkSpec) -> tuple[NetworkSpec, bool]:
    """The baseline a description is explained against by default, and whether it is an official table row
    scaled from it: the table's base for a published name, else the family B0 its settings point to."""
    from effnet.describe.family import COEFFICIENTS, FAMILY_BASES
    from effnet.zoo import BASELINES

    row = COEFFICIENTS.get(spec.name)
    if row is not None:
        base = FAMILY_BASES[row.base]
        return base, base.name != spec.name
    if any(s.name == spec.name for s in BASELINES.values()):
        return spec, False
    if spec.lite:
        return FAMILY_BASES["lite0"], False
    if not spec.channel_guard:
        return FAMILY_BASES["v2_base"], False
    return FAMILY_BASES["b0"], False


def cmd_explain(args: argparse.Namespace) -> int:
    from effnet.zoo import description_from_blocks, resolve_description

    if args.name and (args.blocks or args.description):
        raise UserError("give either a model NAME or --blocks/--description, not both")
    if args.blocks:
        spec = description_from_blocks(args.blocks, resolution=args.image_size)
    elif args.description:
        spec = NetworkSpec.load(args.description)
    elif args.name:
        spec = resolve_description(args.name)
    else:
        raise UserError("name a model, or give --blocks or --description")
    base, official = _family_base(spec)
    if args.base:
        base = get_description(args.base)
        official = official and base.name == _family_base(spec)[0].name
    explanation = explain_scaling(
        spec,
        base,
        alpha=args.alpha,
        beta=args.beta,
        gamma=args.gamma,
        official=official,
        macs=profile(spec).macs,
        base_macs=profile(base).macs,
    )
    record = explanation.to_dict()
    if args.json:
        print_json(record)
        return 0
    shown = {k: v for k, v in record.items() if k not in ("rounding", "notes", "single_phi", "phi")}
    shown["phi"] = ", ".join(f"{k} {'n/a' if v is None else f'{v:.2f}'}" for k, v in record["phi"].items())  # type: ignore[union-attr]
    print_record(shown)
    print()
    print_table(record["rounding"], ["part", "quantity", "base", "asked", "got", "moved", "rule"])  # type: ignore[arg-type]
    print()
    for line in explanation.notes():
        print(line)
    return 0
