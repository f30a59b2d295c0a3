"""Export entry point and the on-the-spot check of an export against eager PyTorch: at the model's
own size, an odd size and a larger one for an export that takes any size."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from effnet.describe.network import MAX_RESOLUTION, NetworkSpec
from effnet.errors import UserError, check_whole_number
from effnet.factory import check_fits
from effnet.infer.hardware import module_device
from effnet.results import Result

FORMATS = ("onnx", "torchscript")
#: Batch sizes an export is checked with: the traced one and another, proving the batch is dynamic.
CHECK_BATCHES = (1, 3)


def check_sizes(resolution: int) -> tuple[int, int, int]:
    """Input sizes an any-size export is checked at: the model's own, an odd one above it (odd
    sizes pad strided 'same' layers symmetrically, even ones do not) and about 1.43× it, rounded
    up to a multiple of 32 (224 → 224, 257, 320)."""
    return resolution, resolution + 33 - resolution % 2, -(-resolution * 10 // (7 * 32)) * 32


@dataclass(frozen=True)
class ExportReport(Result):
    """What was written and how closely it computes the eager model's logits, per input size."""

    format: str
    path: str
    bytes: int
    resolution: int
    in_chans: int
    num_classes: int
    checked_batches: tuple[int, ...]
    max_abs_diff: float
    runtime: str
    any_size: bool = True
    dtype: str = "float32"
    checked_sizes: tuple[int, ...] = ()
    size_diffs: tuple[float, ...] = ()  # the max abs difference at each of checked_sizes


def example_inputs(
    model: nn.Module, batches: tuple[int, ...] = CHECK_BATCHES, seed: int = 0, size: int | None = None
) -> list[torch.Tensor]:
    """Random normalised images of ``size`` px (the model's resolution by default), one tensor per batch size."""
    size, chans = size or model.spec.resolution, getattr(model, "in_chans", 3)
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(b, chans, size, size, generator=gen) for b in batches]


def eager_outputs(model: nn.Module, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    """The model's float32 outputs (on the CPU) for inputs moved to its device."""
    model.eval()
    device = module_device(model)
    with torch.inference_mode():
        return [model(x.to(device)).float().cpu() for x in inputs]


def max_abs_diff(got: list[torch.Tensor], want: list[torch.Tensor]) -> float:
    diffs = []
    for g, w in zip(got, want):
        if tuple(g.shape) != tuple(w.shape):
            raise RuntimeError(f"export gave shape {tuple(g.shape)}, eager {tuple(w.shape)}")
        diffs.append(float((g.float() - w).abs().max()))
    return max(diffs)


def export_model(
    model: nn.Module,
    path: str | Path,
    format: str,
    *,
    input_size: int | None = None,
    opset: int | None = None,
    dtype: str | torch.dtype | None = None,
    metadata: Mapping[str, str] | None = None,
    device: str | torch.device | None = None,
) -> ExportReport:
    """Export ``model`` (eval mode, dynamic batch) to ONNX or TorchScript and check it against eager
    float32 PyTorch.

    With ``input_size`` None the file takes any height and width and is checked at
    :func:`check_sizes` of the model's resolution; with ``input_size``, it is for that size alone
    and checked there. ``dtype`` "bfloat16" (TorchScript): the network computes in bfloat16 (the
    classifier in float32). ``metadata`` (ONNX): written into the file (effnet's weight header).
    ``device`` (the model's own by default; the model is moved there): where eager PyTorch runs
    for the check and where TorchScript is traced (ONNX is exported from the CPU)."""
    from effnet.atomic import check_target
    from effnet.infer.fast import exportable
    from effnet.infer.hardware import resolve_device, resolve_dtype

    if format not in FORMATS:
        raise UserError(f"format {format!r} is unknown (known: {', '.join(FORMATS)})", field="format")
    if input_size is not None:
        check_whole_number("input_size", input_size, 1, " of pixels", high=MAX_RESOLUTION)
    spec = getattr(model, "spec", None)
    if not isinstance(model, nn.Module) or not isinstance(spec, NetworkSpec):
        raise UserError(f"model must be an effnet model, got {type(model).__name__}", field="model")
    sizes = (input_size,) if input_size else check_sizes(spec.resolution)
    check_fits(  # the check's batches at the largest size, before anything is traced or run
        spec,
        num_classes=getattr(model, "num_classes", 1000),
        in_chans=getattr(model, "in_chans", 3),
        batch_size=max(CHECK_BATCHES),
        resolution=max(sizes),
        field="input_size" if input_size else "model",
    )
    path = check_target(path)  # before the export, which takes seconds
    dev = resolve_device(device) if device is not None else module_device(model)
    compute = resolve_dtype(dtype, dev)
    if format == "onnx" and compute != torch.float32:
        raise UserError(
            "dtype must be float32 for ONNX (ONNX Runtime's CPU kernels are float32 and int8: "
            "effnet quantize writes int8); bfloat16 is available as TorchScript",
            field="dtype",
        )
    model = model.to(dev).eval()
    if format == "onnx":
        from effnet.export.onnx import export_onnx, run_onnx

        form = exportable(model, any_size=None if input_size else "onnx")
        export_onnx(form.cpu(), path, input_size=input_size, opset=opset, metadata=metadata)
        run, runtime = run_onnx, "onnxruntime"
    else:
        from effnet.export.torchscript import export_torchscript, run_torchscript

        form = exportable(model, any_size=None if input_size else "torchscript", dtype=compute)
        export_torchscript(form, path, input_size=input_size)

        def run(path: Path, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
            return run_torchscript(path, inputs, dev)

        runtime = "torch.jit"
    inputs = [example_inputs(model, size=size, seed=index) for index, size in enumerate(sizes)]
    got = run(path, [x for batch in inputs for x in batch])
    want = eager_outputs(model, [x for batch in inputs for x in batch])
    per = len(CHECK_BATCHES)
    diffs = tuple(max_abs_diff(got[i * per : (i + 1) * per], want[i * per : (i + 1) * per]) for i in range(len(sizes)))
    return ExportReport(
        format=format,
        path=str(path),
        bytes=path.stat().st_size,
        resolution=model.spec.resolution,
        in_chans=getattr(model, "in_chans", 3),
        num_classes=getattr(model, "num_classes", 0),
        checked_batches=CHECK_BATCHES,
        max_abs_diff=max(diffs),
        runtime=runtime,
        any_size=input_size is None,
        dtype=str(compute).removeprefix("torch."),
        checked_sizes=sizes,
        size_diffs=diffs,
    )
