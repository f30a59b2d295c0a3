"""ONNX and TorchScript exports for any input size, checked against eager at several sizes."""

import pytest
import torch

import effnet
from effnet.errors import UserError
from effnet.export import export_model
from helpers import random_bn_stats

SIZES = (224, 257, 320)  # the model's own, odd (strided 'same' layers pad symmetrically), larger


def test_onnx_any_size_same_padding(b0, b0_onnx):
    import onnx

    from effnet.export.onnx import run_onnx

    path, report = b0_onnx
    assert report.any_size and report.checked_sizes == SIZES and max(report.size_diffs) < 1e-4
    graph = onnx.load(str(path)).graph
    dims = graph.input[0].type.tensor_type.shape.dim
    assert [bool(d.dim_param) for d in dims] == [True, False, True, True]  # batch, 3, height, width
    # TensorFlow's 'same' rule is ONNX's auto_pad SAME_UPPER: the runtime pads for each input, no Pad node
    ops = [node.op_type for node in graph.node]
    assert "Pad" not in ops and ops.count("Conv") == 81
    auto = [a.s for n in graph.node if n.op_type == "Conv" for a in n.attribute if a.name == "auto_pad"]
    assert auto.count(b"SAME_UPPER") == 5  # the stem and the four stride-2 depthwise layers; the rest explicit
    assert set(auto) <= {b"SAME_UPPER", b"NOTSET"}
    # checked here too, apart from the export's own check: non-square, odd and even sides
    x = [torch.randn(2, 3, 241, 200), torch.randn(1, 3, 320, 257)]
    with torch.no_grad():
        want = [b0(t) for t in x]
    assert all(torch.allclose(g, w, atol=1e-4, rtol=0) for g, w in zip(run_onnx(path, x), want, strict=True))


def test_onnx_any_size_lite0(tmp_path):
    """Lite0 ('same' padding, ReLU6, no SE) exported once runs at every size within 1e-4 of eager."""
    pytest.importorskip("onnxruntime")
    from effnet.export.onnx import run_onnx

    torch.manual_seed(0)
    model = random_bn_stats(effnet.create_model("efficientnet_lite0"))
    report = export_model(model, tmp_path / "lite0.onnx", "onnx")
    assert report.any_size and report.checked_sizes == SIZES and max(report.size_diffs) < 1e-4, report.size_diffs
    x = torch.randn(1, 3, 199, 230)
    with torch.no_grad():
        assert torch.allclose(run_onnx(tmp_path / "lite0.onnx", [x])[0], model(x), atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_b0", "efficientnet_b0_symmetric"])
def test_torchscript_any_size(name, tmp_path):
    from effnet.export.torchscript import run_torchscript

    torch.manual_seed(0)
    padding = "symmetric" if name.endswith("symmetric") else None
    model = random_bn_stats(effnet.create_model(name.removesuffix("_symmetric"), padding=padding))
    report = export_model(model, tmp_path / "m.pt", "torchscript")
    assert report.checked_sizes == SIZES and max(report.size_diffs) < 1e-4, report.size_diffs
    x = torch.randn(1, 3, 190, 263)
    with torch.no_grad():
        assert torch.allclose(run_torchscript(tmp_path / "m.pt", [x])[0], model(x), atol=1e-4, rtol=0)


def test_bfloat16_is_not_for_onnx(b0, tmp_path):
    from effnet.infer.hardware import native_on_cpu

    if not native_on_cpu(torch.bfloat16):
        pytest.skip("this CPU runs bfloat16 as float32")
    with pytest.raises(UserError, match="^dtype") as info:
        effnet.optimize(b0, backend="onnxruntime", dtype="bfloat16")
    assert info.value.field == "dtype"
    with pytest.raises(UserError, match="^dtype"):
        export_model(b0, tmp_path / "x.onnx", "onnx", dtype="bfloat16")
    assert not (tmp_path / "x.onnx").exists()
