"""Issue 41 on exports: an input size beyond any description, or one whose check would not fit in memory,
is refused naming input_size before anything is traced; a calibration image too elongated to resize is
skipped, never expanded."""

import pytest
from PIL import Image

import effnet
from bounded import effnet_cli
from effnet.errors import UserError
from effnet.export.verify import export_model

TINY = effnet.NetworkSpec(
    name="tiny", blocks=effnet.parse_blocks("r1_k3_s11_e1_i8_o8,r1_k3_s22_e2_i8_o16"), stem_channels=8, head_channels=32,
    resolution=32,
)  # fmt: skip


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "tiny.safetensors"
    effnet.save_weights(effnet.create_model(TINY, num_classes=3), path)
    return path


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_input_size_beyond_any_description_is_refused_at_once(tmp_path, fmt):
    with pytest.raises(UserError, match=r"input_size must be a whole number of pixels ≤ 4096, got 100000") as caught:
        export_model(effnet.create_model(TINY, num_classes=3), tmp_path / "x", fmt, input_size=100_000)
    assert caught.value.field == "input_size" and not list(tmp_path.iterdir())


def test_input_size_whose_check_cannot_fit_is_refused_before_tracing(tmp_path, monkeypatch):
    import effnet.factory

    monkeypatch.setattr(effnet.factory, "available_memory_bytes", lambda device="cpu": 2**20)
    with pytest.raises(UserError, match=r"^input_size: tiny at 4096 px .* GiB at batch 3") as caught:
        export_model(effnet.create_model(TINY, num_classes=3), tmp_path / "x.onnx", "onnx", input_size=4096)
    assert caught.value.field == "input_size" and not list(tmp_path.iterdir())


def test_export_of_something_that_is_no_effnet_model(tmp_path):
    import torch

    with pytest.raises(UserError, match="model must be an effnet model, got Linear"):
        export_model(torch.nn.Linear(2, 2), tmp_path / "x.onnx", "onnx")


def test_cli_export_input_size_100000_is_one_line_under_the_limit(weights, tmp_path):
    out = tmp_path / "x.onnx"
    code, _, err = effnet_cli("export", "--weights", str(weights), "--format", "onnx", "-o", str(out),
                              "--input-size", "100000")  # fmt: skip
    assert code == 2 and err.count("\n") == 1 and "--input-size must be a whole number of pixels ≤ 4096" in err, err
    assert not out.exists()


def test_calibration_skips_an_elongated_image(tmp_path):
    from effnet.export.quantize import ImageCalibration
    from effnet.preprocess import default_preprocessing

    Image.new("RGB", (1, 1_000_000)).save(tmp_path / "thin.png")
    Image.new("RGB", (40, 40), (200, 30, 30)).save(tmp_path / "good.png")
    paths = [tmp_path / "thin.png", tmp_path / "good.png"]
    calibration = ImageCalibration(paths, default_preprocessing(TINY).eval_transform(), "images", str(tmp_path))
    assert calibration.images == 1
