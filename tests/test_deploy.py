"""Deployment (issue 16): exports for any input size, bfloat16 on the fast path, int8 by
``effnet quantize`` that ``effnet predict`` runs; and the hardening of predict and export."""

import json
import os
import re
import struct
import zlib
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import effnet
from effnet.errors import UserError
from effnet.export import export_model
from effnet.infer.conv import FastConv
from effnet.infer.fold import fold_batchnorm
from effnet.weights import save_weights

SIZES = (224, 257, 320)  # the model's own, odd (strided 'same' layers pad symmetrically), larger
TINY = "r1_k3_s11_e1_i32_o16_se0.25,r1_k3_s22_e6_i16_o24_se0.25,r1_k5_s22_e6_i24_o40_se0.25"
CLASSES = ["red", "green", "blue"]


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
    model = _random_bn(effnet.create_model("efficientnet_lite0"))
    report = export_model(model, tmp_path / "lite0.onnx", "onnx")
    assert report.any_size and report.checked_sizes == SIZES and max(report.size_diffs) < 1e-4, report.size_diffs
    x = torch.randn(1, 3, 199, 230)
    with torch.no_grad():
        assert torch.allclose(run_onnx(tmp_path / "lite0.onnx", [x])[0], model(x), atol=1e-4, rtol=0)


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


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_b0", "efficientnet_b0_symmetric"])
def test_torchscript_any_size(name, tmp_path):
    from effnet.export.torchscript import run_torchscript

    torch.manual_seed(0)
    padding = "symmetric" if name.endswith("symmetric") else None
    model = _random_bn(effnet.create_model(name.removesuffix("_symmetric"), padding=padding))
    report = export_model(model, tmp_path / "m.pt", "torchscript")
    assert report.checked_sizes == SIZES and max(report.size_diffs) < 1e-4, report.size_diffs
    x = torch.randn(1, 3, 190, 263)
    with torch.no_grad():
        assert torch.allclose(run_torchscript(tmp_path / "m.pt", [x])[0], model(x), atol=1e-4, rtol=0)


def test_bfloat16_fast_path(capsys, monkeypatch):
    import effnet.infer.hardware as hardware

    torch.manual_seed(0)
    model = _random_bn(effnet.create_model("efficientnet_b0", num_classes=10, resolution=64))
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        want = model(x)
    fast = effnet.optimize(model, dtype="bfloat16")
    native = hardware.native_on_cpu(torch.bfloat16)
    convs = [m for m in fast.modules() if isinstance(m, FastConv)]
    # the stem and the first depthwise layer (which the stem feeds) stay float32, the rest is cast
    start = [fast.stem, fast.stages[0][0].depthwise] if native else []
    assert convs[:2] == [fast.stem, fast.stages[0][0].depthwise]
    assert {c.weight.dtype for c in convs[len(start) :]} == {torch.bfloat16 if native else torch.float32}
    assert all(c.weight.dtype == torch.float32 for c in start) and start[-1:] == [c for c in convs if c.output_dtype]
    assert all(c.bias.dtype == torch.float32 for c in convs)  # oneDNN adds float32 biases before rounding
    # BatchNorm folded in float32, then cast
    folded, _ = fold_batchnorm(model.stem.conv, model.stem.bn)
    assert torch.equal(convs[0].weight, folded)
    expand = fast.stages[1][0].expand
    folded, _ = fold_batchnorm(model.stages[1][0].expand.conv, model.stages[1][0].expand.bn)
    assert torch.equal(expand.weight, folded.to(expand.weight.dtype))
    assert fast.classifier.weight.dtype == torch.float32  # the classifier (and the logits) in float32
    got = fast(x)
    assert got.dtype == torch.float32 and got.shape == want.shape
    assert (got - want).abs().max() <= 0.05 * want.abs().max()
    assert (got.argmax(-1) == want.argmax(-1)).float().mean() >= 0.75
    # a CPU without bfloat16 instructions: float32, and one line saying so
    capsys.readouterr()
    monkeypatch.setattr(hardware, "native_on_cpu", lambda dtype: dtype == torch.float32)
    fallback = effnet.optimize(model, dtype="bfloat16")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no bfloat16 instructions" in err
    assert torch.allclose(fallback(x), want, atol=1e-4, rtol=0)
    with pytest.raises(UserError, match="^dtype") as info:
        effnet.optimize(model, dtype="int4")
    assert info.value.field == "dtype"


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


# ------------------------------------------------------------------------------------------ int8


def _png(path, color, size=40):
    Image.new("RGB", (size, size + 7), color).save(path)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A three-class model in a weight file with class names, calibration images and a labelled folder."""
    root = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    model = _random_bn(effnet.create_model("efficientnet_b0", blocks=TINY, num_classes=3, resolution=32))
    save_weights(model, root / "tiny.safetensors", class_names=CLASSES)
    colors = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}
    (root / "calib" / "deeper").mkdir(parents=True)
    for i, (name, color) in enumerate(colors.items()):
        (root / "labelled" / name).mkdir(parents=True)
        for j in range(2):
            _png(root / "labelled" / name / f"{j}.png", tuple(min(255, c + 20 * j) for c in color))
            _png(root / "calib" / ("deeper" if j else "") / f"{i}{j}.png", tuple(c + 10 * j for c in color))
    (root / "calib" / "notes.txt").write_text("not an image")
    return root


def test_quantize_then_predict_the_int8_file(tiny, cli):
    pytest.importorskip("onnxruntime")
    out = tiny / "tiny-int8.onnx"
    code, stdout, err = cli(
        "quantize", "--weights", str(tiny / "tiny.safetensors"), "--calibrate", str(tiny / "calib"),
        "--evaluate", str(tiny / "labelled"), "--keep", "first,last,se", "-o", str(out), "--json",
    )  # fmt: skip
    assert code == 0, err
    report = json.loads(stdout)
    assert report["calibration_images"] == 6 and report["per_channel"] and report["method"] == "minmax"
    assert report["kept_float32"] == ["first", "last", "se"] and report["kept_nodes"] > 2 * 3
    ev = report["evaluation"]
    assert ev["images"] == 6 and 0 <= ev["agreement"] <= 1 and ev["batch_size"] == 16 and ev["threads"] >= 1
    assert ev["images_per_second_float32"] > 0 and ev["images_per_second_int8"] > 0
    assert ev["int8_speedup"] == pytest.approx(ev["images_per_second_int8"] / ev["images_per_second_float32"])
    assert out.stat().st_size == report["bytes"] and not list(tiny.glob(".*effnet-tmp"))
    import onnx

    model = onnx.load(str(out))
    ops = {node.op_type for node in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["format"] == "effnet" and json.loads(meta["class_names"]) == CLASSES and "int8" in meta["quantized"]
    # predict runs the int8 file (ONNX Runtime, its preprocessing and class names from the metadata)
    image = tiny / "labelled" / "red" / "0.png"
    code, stdout, err = cli("predict", str(image), "--weights", str(out), "--top", "2", "--json")
    assert code == 0, err
    (result,) = json.loads(stdout)
    assert result["image"] == str(image) and len(result["top"]) == 2 and result["top"][0]["label"] in CLASSES
    code, stdout, err = cli("predict", str(image), "--weights", str(out), "--dtype", "bfloat16")
    assert code == 2 and err.count("\n") == 1 and "--dtype" in err


def test_quantize_reduce_range_for_cpus_without_vnni(tiny, tmp_path, cli, monkeypatch):
    # 7-bit weights where int8 matrix products sum pairs in 16 bits (no VNNI), 8-bit depthwise ones (their
    # kernel widens first): chosen by this CPU unless told, written in the metadata; predict warns once
    # where an 8-bit file meets such a CPU
    pytest.importorskip("onnxruntime")
    import onnx
    from onnx import numpy_helper

    import effnet.infer.hardware as hardware

    def weight_range(path, depthwise: bool) -> tuple[int, int]:
        """The smallest and largest int8 weight of the depthwise convolutions, or of the others."""
        model = onnx.load(str(path))
        ints = {
            t.name: numpy_helper.to_array(t) for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8
        }
        dequantized = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
        arrays = [
            ints[dequantized[conv.input[1]]]
            for conv in model.graph.node
            if conv.op_type == "Conv" and dequantized.get(conv.input[1]) in ints
            and (next((a.i for a in conv.attribute if a.name == "group"), 1) > 1) is depthwise
        ]  # fmt: skip
        assert arrays
        return min(int(a.min()) for a in arrays), max(int(a.max()) for a in arrays)

    files = {}
    for flag in ("--reduce-range", "--no-reduce-range"):
        files[flag] = out = tmp_path / f"{flag.strip('-')}.onnx"
        code, stdout, err = cli(
            "quantize", "--weights", str(tiny / "tiny.safetensors"), "--calibrate", str(tiny / "calib"),
            flag, "-o", str(out), "--json",
        )  # fmt: skip
        assert code == 0, err
        assert json.loads(stdout)["reduce_range"] is (flag == "--reduce-range")
    low, high = weight_range(files["--reduce-range"], depthwise=False)
    assert -64 <= low and high <= 64  # 7-bit symmetric: a u8 × s8 pair sums within 16 bits (2·255·64)
    for name, depthwise in (("--no-reduce-range", False), ("--no-reduce-range", True), ("--reduce-range", True)):
        low, high = weight_range(files[name], depthwise=depthwise)
        assert low < -64 or high > 64, (name, depthwise)  # the full 8-bit range in use
    for name, bits in (("--no-reduce-range", "8-bit"), ("--reduce-range", "7-bit, depthwise 8-bit")):
        assert {p.key: p.value for p in onnx.load(str(files[name])).metadata_props}["int8_weights"] == bits
    image = str(tiny / "labelled" / "red" / "0.png")
    for vnni in (False, True):
        monkeypatch.setattr(hardware, "int8_dot_products_on_cpu", lambda vnni=vnni: vnni)
        for flag, out in files.items():
            code, _, err = cli("predict", image, "--weights", str(out))
            warned = "has 8-bit int8 weights and this CPU has no VNNI" in err
            assert code == 0 and warned is (flag == "--no-reduce-range" and not vnni), (flag, vnni, err)
    # the default follows this CPU
    for vnni in (False, True):
        monkeypatch.setattr(hardware, "int8_dot_products_on_cpu", lambda vnni=vnni: vnni)
        out = tmp_path / f"default-{vnni}.onnx"
        code, stdout, err = cli(
            "quantize", "--weights", str(tiny / "tiny.safetensors"), "--calibrate", str(tiny / "calib"),
            "-o", str(out), "--json",
        )  # fmt: skip
        assert code == 0 and json.loads(stdout)["reduce_range"] is (not vnni), err
    # the text report: what was written, then float32 vs int8 on the labelled folder, speed included
    code, stdout, err = cli(
        "quantize", "--weights", str(tiny / "tiny.safetensors"), "--calibrate", str(tiny / "calib"),
        "--evaluate", str(tiny / "labelled"), "-o", str(tmp_path / "text.onnx"),
    )  # fmt: skip
    lines = stdout.splitlines()
    assert code == 0 and len(lines) == 3 and "per-channel 8-bit weights" in lines[0], (stdout, err)
    assert lines[1].startswith("evaluation on 6 images: top-1 float32 ") and "same top class on" in lines[1]
    assert re.fullmatch(
        r"speed here \(ONNX Runtime, batch 16, \d+ threads?\): float32 [\d.]+ images/s, int8 [\d.]+ "
        r"\([\d.]+× float32\)(; int8 is no faster than float32 on this CPU)?",
        lines[2],
    ), lines[2]


def test_quantize_user_mistakes(tiny, tmp_path, cli, monkeypatch):
    weights = str(tiny / "tiny.safetensors")
    out = tmp_path / "q.onnx"
    (tmp_path / "empty").mkdir()
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("hello")
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "a.png").write_text("not a png")
    cases = {
        "empty": "--calibrate " + str(tmp_path / "empty") + " holds no images",
        "texts": "holds no images",
        "fake": "none of its 1 image files could be read",
        "missing": "is not a folder",
    }
    for folder, message in cases.items():
        code, _, err = cli("quantize", "--weights", weights, "--calibrate", str(tmp_path / folder), "-o", str(out))
        assert code == 2 and err.count("\n") == 1 and message in err, (folder, err)
    code, _, err = cli(
        "quantize", "--weights", weights, "--calibrate", str(tiny / "calib"), "--keep", "head", "-o", str(out)
    )
    assert code == 2 and err.startswith("effnet quantize: error: --keep 'head' is not a part")
    # a model the exporter cannot export: one line
    pytest.importorskip("onnxruntime")

    def fail(*args, **kwargs):
        raise torch.onnx.errors.OnnxExporterError("Failed to export the model with torch.export.\nmore detail")

    monkeypatch.setattr(torch.onnx, "export", fail)
    code, _, err = cli("quantize", "--weights", weights, "--calibrate", str(tiny / "calib"), "-o", str(out))
    assert code == 2 and err.count("\n") == 1 and "cannot export FastEfficientNet to ONNX: Failed to export" in err
    assert not out.exists() and not list(tmp_path.glob(".*effnet-tmp"))


# ------------------------------------------------------------------------------------- hardening


def _bomb(path, side=40_000):
    """A PNG whose header says side × side pixels (grey, 1 bit): PIL refuses it before decoding."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    data = (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )
    path.write_bytes(data)


def test_predict_refuses_decompression_bombs_and_classifies_the_rest(tiny, tmp_path, cli):
    bomb, good = tmp_path / "bomb.png", tiny / "labelled" / "green" / "0.png"
    _bomb(bomb)
    code, out, err = cli("predict", str(bomb), str(good), "--weights", str(tiny / "tiny.safetensors"))
    assert code == 1 and err.count("\n") == 1 and str(bomb) in err and "Traceback" not in err
    assert out.splitlines()[0] == str(good)
    # the limit is configurable: 40 × 47 pixels are over a limit of 1000
    code, out, err = cli("predict", str(good), "--weights", str(tiny / "tiny.safetensors"), "--max-pixels", "1000")
    assert code == 2 and err.count("\n") == 1 and "more than the limit of 1,000" in err
    assert Image.MAX_IMAGE_PIXELS == 1024 * 1024 * 1024 // 4 // 3  # PIL's own limit untouched


def test_unavailable_devices_are_one_line(tiny, tmp_path, cli):
    weights, image = str(tiny / "tiny.safetensors"), str(tiny / "labelled" / "red" / "0.png")
    devices = ["bogus", "tpu"] + ([] if torch.cuda.is_available() else ["cuda"])
    for device in devices:
        code, _, err = cli("predict", image, "--weights", weights, "--device", device)
        assert code == 2 and err.count("\n") == 1 and err.startswith("effnet predict: error: --device"), err
        out = str(tmp_path / "x.pt")
        code, _, err = cli("export", "--weights", weights, "--format", "torchscript", "-o", out, "--device", device)
        assert code == 2 and err.count("\n") == 1 and err.startswith("effnet export: error: --device"), err


def test_torchscript_export_to_a_full_disk_is_one_line(tiny, tmp_path, cli, monkeypatch):
    import effnet.atomic as atomic

    def full(fd):
        raise OSError(28, os.strerror(28))

    monkeypatch.setattr(atomic.os, "fsync", full)
    out = tmp_path / "m.pt"
    code, _, err = cli("export", "--weights", str(tiny / "tiny.safetensors"), "--format", "torchscript", "-o", str(out))
    assert code == 2 and err.count("\n") == 1 and "No space left on device" in err
    assert not out.exists() and not list(tmp_path.iterdir())


def test_expected_activation_is_the_mean_after_batchnorm():
    """The data-free mean behind the bf16 bias correction: E[act(z)], z ~ N(β, γ²) per channel."""
    from effnet.infer.fold import expected_activation
    from effnet.models.layers import ConvNormAct, NormSettings

    gen = torch.Generator().manual_seed(0)
    for activation in ("silu", "relu6"):
        cna = ConvNormAct(4, 6, 1, 1, NormSettings(activation=activation))
        with torch.no_grad():
            cna.bn.weight.copy_(torch.tensor([0.5, 1.0, 2.0, -1.5, 3.0, 0.1]))
            cna.bn.bias.copy_(torch.tensor([-1.0, 0.0, 0.5, 2.0, -3.0, 5.0]))
        z = cna.bn.bias[:, None] + cna.bn.weight[:, None] * torch.randn(6, 400_000, generator=gen)
        sampled = cna.act(z.detach()).mean(1).double()
        assert torch.allclose(expected_activation(cna), sampled, atol=0.01), activation


@pytest.mark.parametrize("groups", [1, 8])
def test_rounding_correction_is_exact_at_the_mean(groups):
    """At an input equal to its expected value everywhere, the corrected bfloat16 weights give the
    float32 output (in float64 arithmetic): Σ(w − round(w))·E[x] is what rounding took away."""
    from effnet.infer.fold import correct_rounding_bias

    gen = torch.Generator().manual_seed(0)
    conv = FastConv(torch.nn.Conv2d(8, 8, 3, padding=1, groups=groups), None, None)
    mean = torch.rand(8, generator=gen, dtype=torch.float64) * 3
    x = mean[None, :, None, None].expand(1, 8, 5, 5)
    want = F.conv2d(x, conv.weight.double(), conv.bias.double(), padding=1, groups=groups)[..., 2, 2]
    before = F.conv2d(x, conv.weight.to(torch.bfloat16).double(), conv.bias.double(), padding=1, groups=groups)
    correct_rounding_bias(conv, mean, torch.bfloat16)
    after = F.conv2d(x, conv.weight.to(torch.bfloat16).double(), conv.bias.double(), padding=1, groups=groups)
    assert (before[..., 2, 2] - want).abs().max() > 1e-4  # rounding moved the outputs
    assert torch.allclose(after[..., 2, 2], want, atol=1e-6, rtol=0)


def _photo_error(model: torch.nn.Module, info) -> Callable[[torch.nn.Module], float]:
    """A fast form's logits' mean error relative to the float32 fast path's norm, on eight real photos."""
    import skimage.data

    transform = info.preprocessing.eval_transform()
    names = ("astronaut", "chelsea", "coffee", "rocket", "cat", "camera", "coins", "hubble_deep_field")
    x = torch.stack([transform(Image.fromarray(getattr(skimage.data, n)()).convert("RGB")) for n in names])
    want = effnet.optimize(model)(x)
    return lambda fast: float(((fast(x) - want).norm(dim=1) / want.norm(dim=1)).mean())


def test_bfloat16_bias_correction_reduces_the_error(monkeypatch):
    """Rounding the folded depthwise and projection weights shifts their outputs; the correction in the
    bias takes much of that shift back. A trained model (the ImageNet Lite0) on real photos: its logits' error."""
    import effnet.infer.fast as fast_module
    from effnet.infer.hardware import native_on_cpu
    from effnet.weights import load_model

    if not native_on_cpu(torch.bfloat16):
        pytest.skip("this CPU runs bfloat16 as float32")
    model, info = load_model("lite0-imagenet")
    error = _photo_error(model, info)

    corrected = effnet.optimize(model, dtype="bfloat16")
    rounded_start = fast_module.FastEfficientNet(model, onednn=True, dtype=torch.bfloat16, float32_start=False)
    monkeypatch.setattr(fast_module, "correct_rounding_bias", lambda *args: None)
    uncorrected = effnet.optimize(model, dtype="bfloat16")
    blocks = [(c, u) for cs, us in zip(corrected.stages, uncorrected.stages) for c, u in zip(cs, us)]
    assert len(blocks) == 16
    # every depthwise layer is fed by a ConvNormAct (the first one stays float32, so needs none), and
    # every projection by the depthwise layer: all corrected
    pairs = [(c.depthwise, u.depthwise) for c, u in blocks[1:]]
    pairs += [
        (getattr(c, "project", None) or c.pointwise, getattr(u, "project", None) or u.pointwise) for c, u in blocks
    ]
    assert all(torch.equal(c.weight, u.weight) and not torch.equal(c.bias, u.bias) for c, u in pairs)
    assert torch.equal(corrected.stages[0][0].depthwise.bias, uncorrected.stages[0][0].depthwise.bias)
    # 0.011 vs 0.018 on a Zen 4 (AVX-512-BF16); 0.032 vs 0.039 on the Xeon (AMX) with the depthwise correction alone
    assert error(corrected) < 0.8 * error(uncorrected), (error(corrected), error(uncorrected))
    # the stem's output (the first depthwise layer's input) rounded to bfloat16: 0.021 on the Zen 4
    assert rounded_start.input_dtype == torch.bfloat16 and corrected.input_dtype == torch.float32
    assert error(corrected) < 0.8 * error(rounded_start), (error(corrected), error(rounded_start))


def test_bfloat16_rounded_residual_biases_are_carried(monkeypatch):
    """oneDNN's residual-adding kernel rounds its bias to bfloat16; what that drops is carried down the
    residual stream into the next reader's float32 bias, which brings the logits closer to float32's
    (the ImageNet Lite0 on real photos) and leaves a float32 model as it was."""
    import effnet.infer.fast as fast_module
    from effnet.infer.hardware import native_on_cpu
    from effnet.weights import load_model

    model, info = load_model("lite0-imagenet")
    monkeypatch.setattr(fast_module.FastEfficientNet, "_carry_rounded_biases", lambda self: None)
    plain_uncarried = fast_module.FastEfficientNet(model, onednn=True)
    uncarried = fast_module.FastEfficientNet(model, onednn=True, dtype=torch.bfloat16)
    monkeypatch.undo()
    plain = fast_module.FastEfficientNet(model, onednn=True)
    carried = fast_module.FastEfficientNet(model, onednn=True, dtype=torch.bfloat16)
    # float32: nothing is rounded, nothing carried
    assert all(torch.equal(a.bias, b.bias) for a, b in zip(plain.modules(), plain_uncarried.modules())
               if isinstance(a, FastConv))  # fmt: skip
    changed = {name for (name, a), (_, b) in zip(carried.named_modules(), uncarried.named_modules())
               if isinstance(a, FastConv) and not torch.equal(a.bias, b.bias)}  # fmt: skip
    # Lite0's stages 1-5 end in runs of residual blocks (2, 2, 3, 3, 4 blocks): from a run's second
    # residual block on, the projection takes on what the stream lacks and the block's expansion reads
    # it; the next stage's expansion reads the run's last; the head reads no residual sum (stage 6)
    runs = ((1, 2), (2, 2), (3, 3), (4, 3), (5, 4))
    later = {f"stages.{s}.{b}.{layer}" for s, n in runs for b in range(2, n) for layer in ("project", "expand")}
    assert changed == later | {f"stages.{s + 1}.0.expand" for s, _ in runs}, changed
    if not native_on_cpu(torch.bfloat16):
        return
    error = _photo_error(model, info)
    # 0.0123 vs 0.0135 on a Zen 4 (AVX-512-BF16), 0.01075 vs 0.01127 on an AMX Xeon (oneDNN's AMX kernels)
    assert error(carried) < 0.97 * error(uncarried), (error(carried), error(uncarried))
