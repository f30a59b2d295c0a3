"""Argument types and shared options for the subcommands."""

from __future__ import annotations

import argparse
import math
import sys
from typing import NoReturn

from effnet.describe.network import NetworkSpec
from effnet.errors import UserError, check_threads


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def finite_float(text: str) -> float:
    """A float that is not NaN or infinite."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def positive_float(text: str) -> float:
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
    return value


def nonnegative_float(text: str) -> float:
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be ≥ 0")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be ≥ 1")
    return value


def nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be ≥ 0")
    return value


def set_threads(threads: int | None) -> None:
    """PyTorch's CPU threads for ``--threads`` (None: as they are): a whole number from 1 to the CPUs here,
    else a UserError naming ``threads``."""
    if threads is None:
        return
    check_threads("threads", threads)
    import torch

    torch.set_num_threads(threads)


def big_number(text: str) -> float:
    """Counts like 2e9, 400M, 1.5B, 5k."""
    suffixes = {"k": 1e3, "m": 1e6, "g": 1e9, "b": 1e9, "t": 1e12}
    raw = text.strip().lower()
    factor = 1.0
    if raw and raw[-1] in suffixes:
        factor, raw = suffixes[raw[-1]], raw[:-1]
    return positive_float(raw) * factor


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of a table")


def add_architecture(parser: argparse.ArgumentParser, *, default_base: str | None = "efficientnet_b0") -> None:
    """--base NAME | --blocks STRINGS | --description FILE: which baseline to start from."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--base", metavar="NAME", default=None, help=f"baseline model name (default {default_base})")
    group.add_argument(
        "--blocks", metavar="STRINGS", help='comma-separated block strings, e.g. "r1_k3_s11_e1_i32_o16_se0.25,…"'
    )
    group.add_argument("--description", metavar="FILE", help="a network description JSON file")
    parser.set_defaults(default_base=default_base)


def architecture_from_args(args: argparse.Namespace, name: str | None = None) -> NetworkSpec:
    """The description selected by :func:`add_architecture`'s options (or a positional NAME)."""
    from effnet.zoo import description_from_blocks, resolve_description

    if getattr(args, "blocks", None):
        return description_from_blocks(args.blocks, resolution=getattr(args, "image_size", None) or None)
    if getattr(args, "description", None):
        return NetworkSpec.load(args.description)
    chosen = name or getattr(args, "base", None) or args.default_base
    if chosen is None:
        raise UserError("name a model, or give --blocks or --description")
    return resolve_description(chosen)
