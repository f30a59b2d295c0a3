"""ONNX export: the one function that turns a module into ONNX, for ``effnet export``, ``effnet
quantize`` and the ONNX Runtime runner (``optimize(backend="onnxruntime")``), reading an ONNX file's
metadata and running an ONNX file to check it."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from torch import nn

from effnet.atomic import atomic_write_bytes
from effnet.describe.network import MAX_RESOLUTION
from effnet.errors import UserError, check_whole_number

INPUT_NAME = "images"
OUTPUT_NAME = "logits"
#: Batch size of the example the exporter traces: torch.export takes a dimension of size 1 for a constant.
EXAMPLE_BATCH = 2
#: Largest height and width an any-size export accepts (the exporter needs a bound).
MAX_SIZE = 8192


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter's progress lines (stdout), notices (warnings) and logged fallbacks silenced."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _same_conv2d(x, weight, bias, stride, groups):  # noqa: ANN001, ANN202 (onnxscript values)
    """``effnet::same_conv2d`` in ONNX: a Conv with ``auto_pad=SAME_UPPER``, TensorFlow's 'same' rule
    (out = ceil(in / stride), the odd pixel after), worked out by the runtime from each input."""
    from onnxscript import opset18 as op

    return op.Conv(x, weight, bias, auto_pad="SAME_UPPER", strides=list(stride), group=groups)


def _mean(x, dim, keepdim=False):  # noqa: ANN001, ANN202 (onnxscript values)
    """A mean over height and width (kept) as GlobalAveragePool, which ONNX Runtime runs in its
    blocked layout at any input size; any other mean as ReduceMean."""
    from onnxscript import opset18 as op

    if keepdim and len(x.shape or ()) == 4 and sorted(d % 4 for d in dim) == [2, 3]:
        return op.GlobalAveragePool(x)
    return op.ReduceMean(x, op.Constant(value_ints=list(dim)), keepdims=int(keepdim))


def export_onnx(
    model: nn.Module,
    path: str | Path | None = None,
    *,
    input_size: int | None = None,
    opset: int | None = None,
    metadata: Mapping[str, str] | None = None,
) -> bytes:
    """``model`` (eval mode) as a self-contained ONNX model: its bytes, also written to ``path``
    (atomically) when given.

    The batch dimension is always dynamic. With ``input_size`` None, so are height and width: the
    model must compute at any size (effnet's :func:`~effnet.infer.fast.exportable` with
    ``any_size="onnx"`` does: each 'same' convolution is a Conv with ``auto_pad=SAME_UPPER``) and is
    traced at its ``spec.resolution``; with ``input_size``, the graph is for that size only (pads
    inside each Conv node). ``in_chans`` channels (3 without that attribute), tensors named
    ``images`` and ``logits``, ``opset`` the exporter's own by default, ``metadata`` written as the
    file's ``metadata_props`` (effnet's weight header, so that ``effnet predict`` can run it).

    One exporter for every use: torch.export's (``dynamo=True``; the TorchScript-based one is
    deprecated since torch 2.9). Its graph optimiser moves each zero Pad into the Conv after it
    (asymmetric ``pads``), so the fast path's export form gives ONNX Runtime the graph the
    TorchScript exporter gave it through a custom symbolic: the same optimised nodes
    (GlobalAveragePool for each squeeze-excitation's mean), as fast (B0 at 224, batch 16, 2
    threads: 1.01× in one session, 1.07× in the runner, paired medians of 25 rounds) and as exact
    (7e-7 from eager). Exporting takes 4-7× longer (B0: 13-19 s instead of 2-5 s on a busy 2-core
    VM), once per runner."""
    if opset is not None:
        check_whole_number("opset", opset, 1)
    if input_size is not None:
        check_whole_number("input_size", input_size, 1, " of pixels", high=MAX_RESOLUTION)
    try:
        import onnxscript  # noqa: F401  (the exporter needs it)
    except ImportError:
        raise UserError("ONNX export needs onnx and onnxscript: pip install 'effnet[export]'") from None
    size = input_size or model.spec.resolution
    example = torch.randn(EXAMPLE_BATCH, getattr(model, "in_chans", 3), size, size)
    dims = {0: torch.export.Dim("batch", min=1, max=65536)}
    if input_size is None:
        dims |= {2: torch.export.Dim("height", min=1, max=MAX_SIZE), 3: torch.export.Dim("width", min=1, max=MAX_SIZE)}
    from effnet.infer.conv import same_conv2d

    try:
        with _quiet():
            program = torch.onnx.export(
                model.eval(),
                (example,),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=(dims,),
                dynamo=True,
                verbose=False,
                custom_translation_table={same_conv2d._opoverload: _same_conv2d, torch.ops.aten.mean.dim: _mean},
                **({"opset_version": opset} if opset else {}),
            )
    except torch.onnx.errors.OnnxExporterError as err:
        if input_size is None and "constraint" in str(err).lower():
            raise UserError(
                f"input_size must be given for {type(model).__name__}: it computes for one input size only",
                field="input_size",
            ) from None
        reason = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
        raise UserError(f"cannot export {type(model).__name__} to ONNX: {reason}") from None
    written = program.model.opset_imports.get("")
    if opset and written != opset:
        raise UserError(
            f"opset {opset} is not available for this model: the exporter can write opset {written}", field="opset"
        )
    proto = program.model_proto
    for key, value in (metadata or {}).items():
        proto.metadata_props.add(key=str(key), value=str(value))
    data = proto.SerializeToString()
    if path is not None:
        atomic_write_bytes(path, data)
    return data


def onnx_metadata(data: bytes, source: str) -> dict[str, str]:
    """An ONNX model's ``metadata_props`` (for effnet's exports: its weight header); ``source``
    names it in the error a file that is not ONNX gets."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        proto = onnx.load_from_string(data)
    except (DecodeError, ValueError) as err:
        raise UserError(f"{source}: not a readable ONNX file ({err})") from None
    return {prop.key: prop.value for prop in proto.metadata_props}


def run_onnx(path: str | Path, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    """Outputs of an ONNX file in ONNX Runtime (CPU) for each input batch."""
    from effnet.export.ort import ort_session

    session = ort_session(str(path))
    name = session.get_inputs()[0].name
    return [torch.from_numpy(session.run(None, {name: x.numpy()})[0]) for x in inputs]
