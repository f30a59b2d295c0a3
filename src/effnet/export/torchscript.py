"""TorchScript export (traced; the batch dimension stays free, and height and width too where the
traced module works its padding out per input, as effnet's export form for TorchScript does) and
running it."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import torch
from torch import nn

from effnet.atomic import atomic_write_bytes
from effnet.describe.network import MAX_RESOLUTION
from effnet.errors import check_whole_number
from effnet.infer.hardware import module_device


def export_torchscript(model: nn.Module, path: str | Path, *, input_size: int | None = None) -> None:
    """Trace ``model`` at ``input_size`` (its ``spec.resolution`` by default), on its device, and
    save it atomically.

    The module is serialised in memory and written by :mod:`effnet.atomic`, so a full or read-only
    disk is one :class:`~effnet.errors.UserError` (TorchScript's own file writer fails in C++)."""
    if input_size is not None:
        check_whole_number("input_size", input_size, 1, " of pixels", high=MAX_RESOLUTION)
    size, chans = input_size or model.spec.resolution, getattr(model, "in_chans", 3)
    device = module_device(model)
    example = torch.randn(2, chans, size, size, device=device)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model.eval(), example)
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def run_torchscript(
    path: str | Path, inputs: list[torch.Tensor], device: str | torch.device = "cpu"
) -> list[torch.Tensor]:
    """Outputs (on the CPU) of a saved TorchScript module loaded on ``device``, for each input batch."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(str(path), map_location=device).eval()
    with torch.inference_mode():
        return [module(x.to(device)).cpu() for x in inputs]
