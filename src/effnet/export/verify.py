"""Export entry point and the on-the-spot check of an export against eager PyTorch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from effnet.errors import UserError
from effnet.results import Result

FORMATS = ("onnx", "torchscript")
#: Batch sizes an export is checked with: the traced one and another, proving the batch is dynamic.
CHECK_BATCHES = (1, 3)


@dataclass(frozen=True)
class ExportReport(Result):
    """What was written and how closely it computes the eager model's logits."""

    format: str
    path: str
    bytes: int
    resolution: int
    in_chans: int
    num_classes: int
    checked_batches: tuple[int, ...]
    max_abs_diff: float
    runtime: str


def example_inputs(model: nn.Module, batches: tuple[int, ...] = CHECK_BATCHES, seed: int = 0) -> list[torch.Tensor]:
    """Random normalised images of the model's resolution, one tensor per batch size."""
    size, chans = model.spec.resolution, getattr(model, "in_chans", 3)
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(b, chans, size, size, generator=gen) for b in batches]


def eager_outputs(model: nn.Module, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    model.eval()
    with torch.inference_mode():
        return [model(x).float() for x in inputs]


def max_abs_diff(got: list[torch.Tensor], want: list[torch.Tensor]) -> float:
    diffs = []
    for g, w in zip(got, want):
        if tuple(g.shape) != tuple(w.shape):
            raise RuntimeError(f"export gave shape {tuple(g.shape)}, eager {tuple(w.shape)}")
        diffs.append(float((g.float() - w).abs().max()))
    return max(diffs)


def export_model(model: nn.Module, path: str | Path, format: str, *, opset: int | None = None) -> ExportReport:
    """Export ``model`` (eval mode, dynamic batch) to ONNX or TorchScript and check it against eager."""
    if format not in FORMATS:
        raise UserError(f"format {format!r} is unknown (known: {', '.join(FORMATS)})", field="format")
    path = Path(path)
    if not path.parent.exists():
        raise UserError(f"cannot write {path}: directory {path.parent} does not exist")
    model = model.eval()
    if format == "onnx":
        # the inference fast path's export form: BatchNorm folded, TF padding inside each Conv node
        from effnet.export.onnx import export_onnx, run_onnx
        from effnet.infer.fast import exportable

        export_onnx(exportable(model), path, opset=opset)
        inputs = example_inputs(model)
        got, runtime = run_onnx(path, inputs), "onnxruntime"
    else:
        from effnet.export.torchscript import export_torchscript, run_torchscript

        export_torchscript(model, path)
        inputs = example_inputs(model)
        got, runtime = run_torchscript(path, inputs), "torch.jit"
    diff = max_abs_diff(got, eager_outputs(model, inputs))
    return ExportReport(
        format=format,
        path=str(path),
        bytes=path.stat().st_size,
        resolution=model.spec.resolution,
        in_chans=getattr(model, "in_chans", 3),
        num_classes=getattr(model, "num_classes", 0),
        checked_batches=CHECK_BATCHES,
        max_abs_diff=diff,
        runtime=runtime,
    )
