"""ONNX and TorchScript exports: dynamic batch, checked against eager PyTorch."""

import json
import os

import pytest
import torch

import effnet
from effnet.errors import UserError
from effnet.export import export_model
from effnet.factory import load_model
from effnet.weights import save_weights

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def b0_file(tmp_path_factory):
    torch.manual_seed(0)
    model = effnet.create_model("efficientnet_b0")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.copy_(torch.randn(module.num_features, generator=gen) * 0.2)
                module.running_var.copy_(torch.rand(module.num_features, generator=gen) + 0.5)
    path = tmp_path_factory.mktemp("b0") / "b0.safetensors"
    save_weights(model, path)
    return path


def test_onnx_b0_matches_eager(b0_file, tmp_path, monkeypatch):
    # an export for one input size (any size is the default: tests/test_deploy.py)
    model, _ = load_model(b0_file)
    report = export_model(model, tmp_path / "b0.onnx", "onnx", input_size=224)
    assert report.checked_batches == (1, 3) and report.runtime == "onnxruntime"
    assert report.max_abs_diff < 1e-4
    import onnx

    graph = onnx.load(str(tmp_path / "b0.onnx")).graph
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic batch dimension
    # 'same' padding inside each Conv node (no Pad node), images → logits
    assert [i.name for i in graph.input] == ["images"] and [o.name for o in graph.output] == ["logits"]
    data = (tmp_path / "b0.onnx").read_bytes()
    ops = [node.op_type for node in graph.node]
    assert "Pad" not in ops and ops.count("Conv") == 81
    pads = [list(a.ints) for node in graph.node if node.op_type == "Conv" for a in node.attribute if a.name == "pads"]
    assert [0, 0, 1, 1] in pads  # (top, left, bottom, right)
    # one export function: the onnxruntime backend exports the same form through it (not run
    # again here: the export is the slow part) and runs that graph
    import effnet.export.onnx as onnx_module
    from effnet.infer.fast import FastEfficientNet

    calls = []

    def export_onnx(module, path=None, **options):
        calls.append((type(module), module.export, path, options))
        return data

    monkeypatch.setattr(onnx_module, "export_onnx", export_onnx)
    runner = effnet.optimize(model, backend="onnxruntime")
    assert calls == [(FastEfficientNet, True, None, {"input_size": None})] and runner.onnx_model is data
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(runner(x), model(x), atol=1e-4, rtol=0)


def test_onnx_opset_the_exporter_cannot_write_is_an_error_naming_it(tmp_path):
    from effnet.export.onnx import export_onnx

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.SiLU())
    with pytest.raises(UserError, match="^opset 7 is not available") as info:
        export_onnx(model, tmp_path / "old.onnx", input_size=8, opset=7)
    assert info.value.field == "opset" and not (tmp_path / "old.onnx").exists()


def test_onnx_lite0_cli(tmp_path, cli):
    out = tmp_path / "lite0.onnx"
    code, stdout, err = cli("export", "--weights", "lite0-imagenet", "--format", "onnx", "-o", str(out), "--json")
    assert code == 0, err
    record = json.loads(stdout)
    assert record["model"] == "efficientnet_lite0" and record["ok"] and record["max_abs_diff"] < 1e-4
    assert out.stat().st_size == record["bytes"] > 10_000_000
    # any input size: checked at the model's own, an odd and a larger size, each within 1e-4
    assert record["any_size"] and record["checked_sizes"] == [224, 257, 320]
    assert len(record["size_diffs"]) == 3 and max(record["size_diffs"]) < 1e-4


def test_torchscript_cli(b0_file, tmp_path, cli):
    out = tmp_path / "b0.pt"
    code, stdout, err = cli("export", "--weights", str(b0_file), "--format", "torchscript", "-o", str(out))
    assert code == 0, err
    assert "max abs difference vs eager PyTorch" in stdout and "torch.jit" in stdout
    diff = float(stdout.rsplit(": ", 1)[1].split()[0])
    assert diff < 1e-4
    # any input size: one line per size checked
    assert all(f"  {size} px: " in stdout for size in (224, 257, 320)) and "any height and width" in stdout


def test_export_user_errors(b0_file, tmp_path, cli):
    code, _, err = cli("export", "--weights", str(b0_file), "--format", "onnx", "-o", str(tmp_path / "no" / "x.onnx"))
    assert code == 2 and "does not exist" in err
    code, _, err = cli("export", "--weights", str(b0_file), "--model", "lite0", "--format", "onnx", "-o", "x.onnx")
    assert code == 2 and "looks like efficientnet_b0, model is efficientnet_lite0" in err


def test_torchscript_export_to_a_full_disk_is_one_line(int8_run, tmp_path, cli, monkeypatch):
    import effnet.atomic as atomic

    def full(fd):
        raise OSError(28, os.strerror(28))

    monkeypatch.setattr(atomic.os, "fsync", full)
    out = tmp_path / "m.pt"
    code, _, err = cli(
        "export", "--weights", str(int8_run / "int8_run.safetensors"), "--format", "torchscript", "-o", str(out)
    )
    assert code == 2 and err.count("\n") == 1 and "No space left on device" in err
    assert not out.exists() and not list(tmp_path.iterdir())
