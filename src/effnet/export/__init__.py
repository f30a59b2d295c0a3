"""Leaving PyTorch: ONNX and TorchScript exports for any batch and input size, each checked on the
spot against eager PyTorch, and int8 ONNX models by static quantization (:mod:`effnet.export.quantize`)."""

from effnet.export.verify import ExportReport, export_model

__all__ = ["ExportReport", "export_model"]
