"""The inference fast path: :func:`optimize` turns a built model into an inference-only module.

What it does to the plain model, each measured on CPU (see ``benchmarks/SPEED.md``):

- BatchNorm is folded into the convolution before it (weights scaled, a bias added:
  :mod:`effnet.infer.fold`).
- Tensors are channels_last throughout; activations run in place and each block's residual sum is
  written over its input by the projection itself (oneDNN's in-place convolution + add).
- glibc's malloc is told once, through ``mallopt``, to keep large freed blocks instead of handing
  them back and page-faulting them in again on every call (:mod:`effnet.infer.allocator`;
  ``tune_allocator=False`` or ``EFFNET_TUNE_ALLOCATOR=0`` leave it as it is).
- TensorFlow 'same' padding of strided layers, asymmetric at even sizes (one more row and column
  after than before), costs about what symmetric padding costs: the kernel gets one leading zero
  row and column and the convolution pads symmetrically by the larger side. Same sums, no padded
  copy, no cropped output; only the stem's 3-channel input is copied into a zero-bordered buffer.
  (On CUDA, where fast depthwise kernels are 3×3 and 5×5 only, a larger output is cropped instead:
  :mod:`effnet.infer.conv`.)
- On CPU in float32 and bfloat16 every convolution runs as one oneDNN kernel with its activation or
  residual sum fused, its weight reordered once per input shape into oneDNN's own layout (as
  Inductor's freezing does; a plain weight is reordered on every call). ``onednn=False``: PyTorch's
  convolutions.
- Squeeze-excitation runs as two small matrix products on the pooled vector and gates in place
  (:mod:`effnet.infer.fast`).

``dtype="bfloat16"`` computes in bfloat16 where the CPU has its instructions (AVX-512-BF16, AMX) or
on a GPU (:mod:`effnet.infer.hardware`): BatchNorm folded in float32 first; the biases of the depthwise
layers and the projections corrected for the rounding of their weights
(:func:`effnet.infer.fold.correct_rounding_bias`) and, on oneDNN, kept in float32 (added before the
output is rounded); the stem and the first depthwise layer in float32 (the stem's output rounded was
the largest single error); the classifier in float32 (their effect on the logits' error:
``benchmarks/SPEED.md``).

``backend="compile"`` wraps the folded module's functional form in :func:`torch.compile` (Inductor,
weights frozen); ``backend="onnxruntime"`` exports that form with
:func:`effnet.export.onnx.export_onnx` for any input size (each strided 'same' convolution a Conv
with ``auto_pad=SAME_UPPER``; with ``input_size``, for that size only: asymmetric padding as the
Conv's own ``pads``; no Pad nodes either way) and runs it in ONNX Runtime
(:class:`effnet.export.ort.OrtModule`): channels_last inputs go in as NHWC without a copy, and a
batch of several images runs split between one-thread sessions at once, which is faster than splitting each
operator between threads.
All backends compute the plain model's eval-mode function (within float rounding, ~1e-5).
"""

from __future__ import annotations

import torch
from torch import nn

from effnet.describe.network import MAX_RESOLUTION
from effnet.errors import UserError, check_bool, check_threads, check_whole_number
from effnet.infer.allocator import tune_allocator as apply_allocator_settings
from effnet.infer.conv import ONEDNN_DTYPES, FastConv
from effnet.infer.fast import FastEfficientNet, exportable
from effnet.infer.hardware import module_device, resolve_dtype

BACKENDS = ("eager", "compile", "onnxruntime")


def optimize(
    model: nn.Module,
    *,
    backend: str = "eager",
    input_size: int | None = None,
    threads: int | None = None,
    onednn: bool = True,
    dtype: str | torch.dtype | None = None,
    tune_allocator: bool = True,
) -> nn.Module:
    """An inference-only module computing ``model``'s eval-mode function, faster.

    ``backend``: ``"eager"`` (folded, fused PyTorch module), ``"compile"`` (that module through
    :func:`torch.compile`, weights frozen) or ``"onnxruntime"`` (exported to ONNX and run in an
    ONNX Runtime session with ``threads`` threads; for any input size, or for ``input_size`` alone
    when given). ``onednn`` (CPU, float32): each convolution with its activation and residual sum as
    one oneDNN kernel, its weight in oneDNN's layout (False: PyTorch's own convolutions).
    ``threads`` (1 to the CPUs this process may use) and ``input_size`` (1–4096 px) are checked first.
    ``dtype`` ("float32", "bfloat16", "float16" or a torch dtype; the model's own by default): what
    the network computes in; BatchNorm is folded in float32 before the cast (depthwise biases corrected
    for the weights' rounding), the classifier runs
    in float32 and so do the logits returned. A reduced precision this CPU has no instructions for
    falls back to float32 with one line on stderr (:func:`effnet.infer.hardware.resolve_dtype`);
    ONNX Runtime runs float32 only (int8: ``effnet quantize``). ``tune_allocator``: set glibc's malloc
    up for large activations, once for the process (:func:`effnet.infer.allocator.tune_allocator`;
    also off with ``EFFNET_TUNE_ALLOCATOR=0``; nothing on other C libraries).
    The model itself is left unchanged; inputs may be any layout (converted to channels_last)."""
    from effnet.models.efficientnet import EfficientNet

    if not isinstance(model, EfficientNet):
        raise UserError(f"model must be an effnet model (optimize expects one), got {type(model).__name__}",
                        field="model")  # fmt: skip
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise UserError(f"backend {backend!r} is unknown; choose one of {', '.join(BACKENDS)}", field="backend")
    if input_size is not None:
        check_whole_number("input_size", input_size, 1, " of pixels", high=MAX_RESOLUTION)
    if threads is not None:
        check_threads("threads", threads)
    check_bool("onednn", onednn)
    check_bool("tune_allocator", tune_allocator)
    device = module_device(model)
    compute = next(model.parameters()).dtype if dtype is None else resolve_dtype(dtype, device)
    onednn = onednn and device.type == "cpu" and compute in ONEDNN_DTYPES and torch.backends.mkldnn.is_available()
    if device.type == "cpu":
        apply_allocator_settings(tune_allocator)
    if backend == "eager":
        return FastEfficientNet(model, onednn=onednn, dtype=compute).to(device)
    if backend == "compile":
        # the functional (export) form: no in-place tricks or buffers, the compiler plans memory itself
        fast = exportable(model, dtype=compute).to(device)
        fast.channels_last_input = True
        for module in fast.modules():
            if isinstance(module, FastConv):  # a cropped view fuses into the consumer; a pad is a copy
                module.crop_when_functional = True
        # static shapes: a second model (or size) through the same forward would otherwise recompile with
        # automatic dynamic shapes, which Inductor's freezing fails on (torch 2.14)
        return torch.compile(fast, dynamic=False, options={"freezing": True})  # type: ignore[return-value]
    if model.features_only:
        raise UserError("the onnxruntime backend supports classification models, not features_only")
    if compute != torch.float32:
        raise UserError(
            f"dtype {str(compute).removeprefix('torch.')} is not available with backend onnxruntime "
            "(its CPU kernels are float32; for int8 use effnet quantize)",
            field="dtype",
        )
    from effnet.export.onnx import export_onnx
    from effnet.export.ort import OrtModule

    form = exportable(model, any_size=None if input_size else "onnx", dtype=torch.float32).cpu()
    return OrtModule(export_onnx(form, input_size=input_size), threads)
