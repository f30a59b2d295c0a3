"""effnet.optimize's backends (deploy/optimize.py)."""

import torch

import effnet


def test_onnx_runner_takes_any_size(b0, b0_onnx, monkeypatch):
    import effnet.export.onnx as onnx_module

    path, _ = b0_onnx
    monkeypatch.setattr(onnx_module, "export_onnx", lambda module, path=None, **options: data)
    data = path.read_bytes()
    runner = effnet.optimize(b0, backend="onnxruntime", threads=1)
    for size in (97, 224):
        x = torch.randn(2, 3, size, size)
        with torch.no_grad():
            assert torch.allclose(runner(x), b0(x), atol=1e-4, rtol=0), size
