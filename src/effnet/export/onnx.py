"""ONNX export: the one function that turns a module into ONNX, for ``effnet export`` and for the
ONNX Runtime runner (``optimize(backend="onnxruntime")``), and running an ONNX file to check it."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from effnet.atomic import atomic_write_bytes
from effnet.errors import UserError, check_whole_number

INPUT_NAME = "images"
OUTPUT_NAME = "logits"
#: Batch size of the example the exporter traces: torch.export takes a dimension of size 1 for a constant.
EXAMPLE_BATCH = 2


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


def export_onnx(
    model: nn.Module, path: str | Path | None = None, *, input_size: int | None = None, opset: int | None = None
) -> bytes:
    """``model`` (eval mode) as a self-contained ONNX model whose batch dimension is dynamic: its
    bytes, also written to ``path`` (atomically) when given.

    Traced at ``input_size`` (the model's ``spec.resolution`` by default) with ``in_chans``
    channels (3 without that attribute), tensors named ``images`` and ``logits``, ``opset`` the
    exporter's own by default.

    One exporter for every use: torch.export's (``dynamo=True``; the TorchScript-based one is
    deprecated since torch 2.9). Its graph optimiser moves each zero Pad into the Conv after it
    (asymmetric ``pads``), so the fast path's export form (:func:`effnet.infer.fast.exportable`)
    gives ONNX Runtime the graph the TorchScript exporter gave it through a custom symbolic: the
    same optimised nodes (AveragePool for GlobalAveragePool), as fast (B0 at 224, batch 16, 2
    threads: 1.01× in one session, 1.07× in the runner, paired medians of 25 rounds) and as exact
    (7e-7 from eager). Exporting takes 4-7× longer (B0: 13-19 s instead of 2-5 s on a busy 2-core
    VM), once per runner."""
    if opset is not None:
        check_whole_number("opset", opset, 1)
    try:
        import onnxscript  # noqa: F401  (the exporter needs it)
    except ImportError:
        raise UserError("ONNX export needs onnx and onnxscript: pip install 'effnet[export]'") from None
    size = input_size or model.spec.resolution
    example = torch.randn(EXAMPLE_BATCH, getattr(model, "in_chans", 3), size, size)
    with _quiet():
        program = torch.onnx.export(
            model.eval(),
            (example,),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=65536)},),
            dynamo=True,
            verbose=False,
            **({"opset_version": opset} if opset else {}),
        )
    written = program.model.opset_imports.get("")
    if opset and written != opset:
        raise UserError(
            f"opset {opset} is not available for this model: the exporter can write opset {written}", field="opset"
        )
    data = program.model_proto.SerializeToString()
    if path is not None:
        atomic_write_bytes(path, data)
    return data


def run_onnx(path: str | Path, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    """Outputs of an ONNX file in ONNX Runtime (CPU) for each input batch."""
    from effnet.infer.ort import ort_session

    session = ort_session(str(path))
    name = session.get_inputs()[0].name
    return [torch.from_numpy(session.run(None, {name: x.numpy()})[0]) for x in inputs]
