"""One place and one schema for benchmark results: ``benchmarks/results/<machine>/<date>-<bench>.json``.

Every file holds ``{"schema": 1, "bench", "date", "machine": {"cpu", "family", "flags", "cores", "torch"},
"command", "results"}``; ``results`` is whatever the benchmark measured. ``<machine>`` names the CPU family
(``zen4``, ``xeon-amx``, ...) or, for a GPU run, the GPU (``h100``), because that is what the figures depend
on. Benchmarks import this module from their own folder (``from results import save_result``).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import random
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch

from effnet.atomic import atomic_write_text

T = TypeVar("T")

SCHEMA = 1
RESULTS = Path(__file__).resolve().parent / "results"

# The instruction-set extensions PyTorch's CPU kernels dispatch on; the rest of /proc/cpuinfo is noise here.
KERNEL_FLAGS = re.compile(r"^(avx2|fma|avx512\w*|amx\w*|avx_vnni\w*|f16c)$")


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields from /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    fields: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return fields
    for line in text.split("\n\n", 1)[0].splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def cpu_family(vendor: str, family: int, model: int, flags: list[str], name: str) -> str:
    """A short name for the CPU's microarchitecture: what decides which kernels run and how fast."""
    if vendor == "AuthenticAMD":
        if family == 0x17:
            return "zen1" if model < 0x30 else "zen2"
        if family == 0x19:
            return "zen4" if 0x10 <= model < 0x20 or 0x60 <= model < 0x80 or 0xA0 <= model < 0xB0 else "zen3"
        if family == 0x1A:
            return "zen5"
    if vendor == "GenuineIntel":
        kind = "xeon" if "xeon" in name.lower() else "intel"
        if any(flag.startswith("amx") for flag in flags):
            return f"{kind}-amx"
        if "avx512f" in flags:
            return f"{kind}-avx512"
        if "avx2" in flags:
            return f"{kind}-avx2"
    return _slug(name)


def gpu_slug(name: str) -> str:
    """``NVIDIA H100 80GB HBM3`` → ``h100``: the model without vendor and memory."""
    for word in name.split():
        if re.fullmatch(r"[A-Z]{1,3}\d{2,4}[A-Za-z]*", word):
            return word.lower()
    return _slug(name)


def machine_info(device: str = "cpu") -> dict[str, Any]:
    """The machine a benchmark ran on; with a CUDA ``device``, its GPU too (``gpu``)."""
    info = _cpuinfo()
    flags = sorted(f for f in info.get("flags", "").split() if KERNEL_FLAGS.match(f))
    name = info.get("model name") or platform.processor() or platform.machine() or "unknown"
    try:
        family, model = int(info.get("cpu family", "-1")), int(info.get("model", "-1"))
    except ValueError:
        family, model = -1, -1
    machine: dict[str, Any] = {
        "cpu": name,
        "family": cpu_family(info.get("vendor_id", ""), family, model, flags, name),
        "flags": flags,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
    }
    if device.startswith("cuda"):
        machine["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return machine


def machine_slug(machine: dict[str, Any]) -> str:
    """The results folder for ``machine`` (a :func:`machine_info` dict): its GPU where it has one, else its CPU family."""
    return gpu_slug(machine["gpu"]) if machine.get("gpu") else machine["family"]


def result_path(bench: str, machine: str, date: str, *, root: Path = RESULTS) -> Path:
    """Where a result goes: ``root/<machine>/<date>-<bench>.json``, ``-2``, ``-3``, ... if that is taken."""
    path = root / machine / f"{date}-{bench}.json"
    n = 2
    while path.exists():
        path = root / machine / f"{date}-{bench}-{n}.json"
        n += 1
    return path


def save_result(
    bench: str,
    payload: dict[str, Any],
    *,
    machine: str | None = None,
    date: str | None = None,
    device: str = "cpu",
    root: Path | None = None,
) -> Path:
    """Write ``payload`` as the result of ``bench`` in the one schema and return the file's path.

    ``machine`` overrides the folder name (default: :func:`machine_slug`), ``date`` today's date (UTC),
    ``device`` says which device ran (a CUDA one adds the GPU), ``root`` the results folder."""
    info = machine_info(device)
    day = date or datetime.datetime.now(datetime.UTC).date().isoformat()
    record = {
        "schema": SCHEMA,
        "bench": bench,
        "date": day,
        "machine": info,
        "command": list(sys.argv),
        "results": payload,
    }
    path = result_path(bench, machine or machine_slug(info), day, root=root or RESULTS)
    atomic_write_text(path, json.dumps(record, indent=1, default=str) + "\n", mkdir=True)
    return path


def interleaved(runners: Mapping[str, Callable[[], T]], rounds: int) -> dict[str, list[T]]:
    """Each runner once to warm up (data decoded, kernels chosen), then ``rounds`` rounds of one call each, in
    an order shuffled per round (seeded by the round), so that the machine's other load falls on every runner
    alike: what each call returned, per runner."""
    for run in runners.values():
        run()
    found: dict[str, list[T]] = {name: [] for name in runners}
    for round_ in range(rounds):
        order = list(runners)
        random.Random(round_).shuffle(order)
        for name in order:
            found[name].append(runners[name]())
    return found
