"""Leaving PyTorch: ONNX and TorchScript exports with a dynamic batch dimension, each checked on
the spot against eager PyTorch."""

from effnet.export.verify import ExportReport, export_model

__all__ = ["ExportReport", "export_model"]
