"""TorchScript export (traced; the batch dimension stays free) and running it."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from effnet.atomic import atomic_write


def export_torchscript(model: nn.Module, path: str | Path) -> None:
    """Trace ``model`` at its resolution and save it (atomically). Inputs must keep that resolution."""
    size, chans = model.spec.resolution, getattr(model, "in_chans", 3)
    example = torch.randn(2, chans, size, size)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model.eval(), example)
    atomic_write(path, write_path=traced.save)


def run_torchscript(path: str | Path, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    """Outputs of a saved TorchScript module for each input batch."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(str(path), map_location="cpu").eval()
    with torch.inference_mode():
        return [module(x) for x in inputs]
