"""int8 by effnet quantize (QDQ ONNX), which effnet predict runs."""

import json
import re

import pytest
import torch

from helpers import INT8_RUN_CLASSES


def test_quantize_then_predict_the_int8_file(int8_run, cli):
    pytest.importorskip("onnxruntime")
    out = int8_run / "int8_run-int8.onnx"
    code, stdout, err = cli(
        "quantize", "--weights", str(int8_run / "int8_run.safetensors"), "--calibrate", str(int8_run / "calib"),
        "--evaluate", str(int8_run / "labelled"), "--keep", "first,last,se", "-o", str(out), "--json",
    )  # fmt: skip
    assert code == 0, err
    report = json.loads(stdout)
    assert report["calibration_images"] == 6 and report["per_channel"] and report["method"] == "minmax"
    assert report["kept_float32"] == ["first", "last", "se"] and report["kept_nodes"] > 2 * 3
    ev = report["evaluation"]
    assert ev["images"] == 6 and 0 <= ev["agreement"] <= 1 and ev["batch_size"] == 16 and ev["threads"] >= 1
    assert ev["images_per_second_float32"] > 0 and ev["images_per_second_int8"] > 0
    assert ev["int8_speedup"] == pytest.approx(ev["images_per_second_int8"] / ev["images_per_second_float32"])
    assert out.stat().st_size == report["bytes"] and not list(int8_run.glob(".*effnet-tmp"))
    import onnx

    model = onnx.load(str(out))
    ops = {node.op_type for node in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ
    meta = {p.key: p.value for p in model.metadata_props}
    assert (
        meta["format"] == "effnet"
        and json.loads(meta["class_names"]) == INT8_RUN_CLASSES
        and "int8" in meta["quantized"]
    )
    # predict runs the int8 file (ONNX Runtime, its preprocessing and class names from the metadata)
    image = int8_run / "labelled" / "red" / "0.png"
    code, stdout, err = cli("predict", str(image), "--weights", str(out), "--top", "2", "--json")
    assert code == 0, err
    (result,) = json.loads(stdout)
    assert result["image"] == str(image) and len(result["top"]) == 2 and result["top"][0]["label"] in INT8_RUN_CLASSES
    code, stdout, err = cli("predict", str(image), "--weights", str(out), "--dtype", "bfloat16")
    assert code == 2 and err.count("\n") == 1 and "--dtype" in err


def test_quantize_reduce_range_for_cpus_without_vnni(int8_run, tmp_path, cli, monkeypatch):
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
            "quantize", "--weights", str(int8_run / "int8_run.safetensors"), "--calibrate", str(int8_run / "calib"),
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
    image = str(int8_run / "labelled" / "red" / "0.png")
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
            "quantize", "--weights", str(int8_run / "int8_run.safetensors"), "--calibrate", str(int8_run / "calib"),
            "-o", str(out), "--json",
        )  # fmt: skip
        assert code == 0 and json.loads(stdout)["reduce_range"] is (not vnni), err
    # the text report: what was written, then float32 vs int8 on the labelled folder, speed included
    code, stdout, err = cli(
        "quantize", "--weights", str(int8_run / "int8_run.safetensors"), "--calibrate", str(int8_run / "calib"),
        "--evaluate", str(int8_run / "labelled"), "-o", str(tmp_path / "text.onnx"),
    )  # fmt: skip
    lines = stdout.splitlines()
    assert code == 0 and len(lines) == 3 and "per-channel 8-bit weights" in lines[0], (stdout, err)
    assert lines[1].startswith("evaluation on 6 images: top-1 float32 ") and "same top class on" in lines[1]
    assert re.fullmatch(
        r"speed here \(ONNX Runtime, batch 16, \d+ threads?\): float32 [\d.]+ images/s, int8 [\d.]+ "
        r"\([\d.]+× float32\)(; int8 is no faster than float32 on this CPU)?",
        lines[2],
    ), lines[2]


def test_quantize_user_mistakes(int8_run, tmp_path, cli, monkeypatch):
    weights = str(int8_run / "int8_run.safetensors")
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
        "quantize", "--weights", weights, "--calibrate", str(int8_run / "calib"), "--keep", "head", "-o", str(out)
    )
    assert code == 2 and err.startswith("effnet quantize: error: --keep 'head' is not a part")
    # a model the exporter cannot export: one line
    pytest.importorskip("onnxruntime")

    def fail(*args, **kwargs):
        raise torch.onnx.errors.OnnxExporterError("Failed to export the model with torch.export.\nmore detail")

    monkeypatch.setattr(torch.onnx, "export", fail)
    code, _, err = cli("quantize", "--weights", weights, "--calibrate", str(int8_run / "calib"), "-o", str(out))
    assert code == 2 and err.count("\n") == 1 and "cannot export FastEfficientNet to ONNX: Failed to export" in err
    assert not out.exists() and not list(tmp_path.glob(".*effnet-tmp"))
