"""ONNX export (torch.export-based exporter, dynamic batch) and running it in ONNX Runtime."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from effnet.errors import UserError

INPUT_NAME = "images"
OUTPUT_NAME = "logits"


def export_onnx(model: nn.Module, path: str | Path, *, opset: int | None = None) -> None:
    """Write ``model`` as one self-contained ONNX file whose batch dimension is dynamic (atomically)."""
    try:
        import onnxscript  # noqa: F401  (the exporter needs it)
    except ImportError:
        raise UserError("ONNX export needs onnx and onnxscript: pip install 'effnet[export]'") from None
    path = Path(path)
    size, chans = model.spec.resolution, getattr(model, "in_chans", 3)
    example = torch.randn(2, chans, size, size)
    batch = torch.export.Dim("batch", min=1, max=65536)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    kwargs = {"opset_version": opset} if opset else {}
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model.eval(),
                (example,),
                tmp,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: batch},),
                dynamo=True,
                external_data=False,
                verbose=False,
                **kwargs,
            )
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def run_onnx(path: str | Path, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    """Outputs of an ONNX file in ONNX Runtime (CPU) for each input batch."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise UserError("checking an ONNX export needs onnxruntime: pip install 'effnet[export]'") from None
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return [torch.from_numpy(session.run(None, {name: x.numpy()})[0]) for x in inputs]
