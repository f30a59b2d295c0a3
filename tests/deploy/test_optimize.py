"""effnet.optimize's backends (deploy/optimize.py)."""

import pytest
import torch

import effnet
from effnet.export import export_model


def _random_bn(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.copy_(torch.randn(module.num_features, generator=gen) * 0.2)
                module.running_var.copy_(torch.rand(module.num_features, generator=gen) + 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def b0():
    torch.manual_seed(0)
    return _random_bn(effnet.create_model("efficientnet_b0"))


@pytest.fixture(scope="module")
def b0_onnx(b0, tmp_path_factory):
    pytest.importorskip("onnxruntime")
    path = tmp_path_factory.mktemp("b0") / "b0.onnx"
    return path, export_model(b0, path, "onnx")


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
