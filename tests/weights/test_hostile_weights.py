"""Issue 41 on weight files: a header describing a network no machine holds, preprocessing that makes every
probability NaN or every image huge, a .pth archive whose entries lie about their size, a weight file that
is no file, and save_weights given what it cannot write: each is one UserError naming the file or argument,
before anything is allocated."""

import io
import json
import os
import struct
import zipfile

import pytest
import torch
from PIL import Image
from safetensors import safe_open

import effnet
from bounded import effnet_cli, python
from effnet.errors import UserError
from effnet.weights.files import read_weights
from helpers import crafted_weights

TINY = "r1_k3_s11_e1_i16_o8_se0.25,r1_k3_s22_e4_i8_o16_se0.25"


def _preprocessing(**changes):
    return json.dumps({"resolution": 32, "crop_pct": 0.875, **changes})


@pytest.fixture(scope="module")
def huge_header(good_file, tmp_path_factory):
    """A header describing a 65,536-channel network (about 2 TB of weights), next to a tiny file's tensors."""
    with safe_open(str(good_file), framework="pt") as f:
        description = json.loads(f.metadata()["description"])
    description.update(stem_channels=65536, blocks=["r1_k3_s11_e64_i65536_o65536"], head_channels=1280)
    return crafted_weights(
        good_file, tmp_path_factory.mktemp("h") / "huge.safetensors", description=json.dumps(description)
    )


def test_a_65536_channel_header_is_refused_before_allocating(huge_header):
    with pytest.raises(UserError, match=r"huge\.safetensors: .* needs ~[\d,.]+ GiB"):
        effnet.load_model(huge_header)


@pytest.mark.parametrize("command", ["predict", "finetune"])
def test_a_65536_channel_header_is_one_line_under_the_address_space_limit(huge_header, tmp_path, command):
    image = tmp_path / "x.png"
    Image.new("RGB", (40, 40)).save(image)
    argv = {
        "predict": ["predict", str(image), "--weights", str(huge_header)],
        "finetune": ["finetune", "--weights", str(huge_header), "--data", "digits", "--epochs", "1",
                     "--output", str(tmp_path / "run")],
    }[command]  # fmt: skip
    code, out, err = effnet_cli(*argv, timeout=120)
    assert code == 2 and err.count("\n") == 1 and "huge.safetensors" in err and "GiB" in err, err


def test_load_model_of_a_65536_channel_header_under_the_limit(huge_header):
    code, out, err = python(f"import effnet\ntry:\n    effnet.load_model({str(huge_header)!r})\n"
                            "except effnet.UserError as e:\n    print('refused', e)")  # fmt: skip
    assert code == 0 and out.startswith("refused") and "GiB" in out, err


@pytest.mark.parametrize(
    "preprocessing, needle",
    [
        (_preprocessing(mean=[float("nan"), 0.5, 0.5]), "mean must be finite"),
        (_preprocessing(std=[1e-30, 0.2, 0.2]), "std must be numbers within"),
        (_preprocessing(std=[0.2, float("inf"), 0.2]), "std must be numbers within"),
        (_preprocessing(crop_pct=1e-6), "crop_pct 1e-06 resizes images"),
        (_preprocessing(crop_pct=0), "crop_pct must be within"),
        (_preprocessing(crop_pct=1.5), "crop_pct must be within"),
        (_preprocessing(mean=[0.5, 0.5]), "three values"),
    ],
)
def test_preprocessing_in_a_header_is_validated(good_file, tmp_path, preprocessing, needle):
    path = crafted_weights(good_file, tmp_path / "pre.safetensors", preprocessing=preprocessing)
    with pytest.raises(UserError, match=needle) as caught:
        effnet.load_model(path)
    assert str(path) in str(caught.value)


def test_nan_normalisation_is_one_line_not_nan_probabilities(good_file, tmp_path, cli):
    path = crafted_weights(
        good_file, tmp_path / "nan.safetensors", preprocessing=_preprocessing(std=[float("nan")] * 3)
    )
    image = tmp_path / "x.png"
    Image.new("RGB", (40, 40)).save(image)
    code, out, err = cli("predict", str(image), "--weights", str(path))
    assert code == 2 and out == "" and err.count("\n") == 1 and "std" in err, err


def _lying_archive(path, claimed):
    """A torch.save zip whose tensor entry's declared (uncompressed) size is ``claimed`` bytes."""
    buffer = io.BytesIO()
    torch.save({"stem.conv.weight": torch.zeros(4)}, buffer)
    data = bytearray(buffer.getvalue())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        entry = next(i for i in archive.infolist() if i.filename.endswith("data/0"))
    # the central directory's record of that entry: its uncompressed size at offset 24
    name = entry.filename.encode()
    start = 0
    while True:
        start = data.index(b"PK\x01\x02", start)
        length = struct.unpack_from("<H", data, start + 28)[0]
        if bytes(data[start + 46 : start + 46 + length]) == name:
            break
        start += 4
    struct.pack_into("<I", data, start + 24, claimed)
    struct.pack_into("<I", data, entry.header_offset + 22, claimed)  # and its local header's
    path.write_bytes(bytes(data))
    return path


def test_a_pth_entry_declaring_more_than_the_file_is_refused_before_reading(tmp_path):
    path = _lying_archive(tmp_path / "lie.pth", 0x7FFF_FFFF)
    with pytest.raises(UserError, match=r"lie\.pth: refused: archive entry .* declares 2,147,483,647 bytes"):
        read_weights(path)


def test_an_honest_pth_still_reads(tmp_path):
    path = tmp_path / "ok.pth"
    torch.save({"stem.conv.weight": torch.ones(4)}, path)
    tensors, _ = read_weights(path)
    assert torch.equal(tensors["stem.conv.weight"], torch.ones(4))


def test_a_lying_pth_is_one_line_in_convert_under_the_limit(tmp_path):
    path = _lying_archive(tmp_path / "lie.pth", 0x7FFF_FFFF)
    code, out, err = effnet_cli("convert", str(path), "--to", str(tmp_path / "out.safetensors"), "--model", "b0")
    assert code == 2 and err.count("\n") == 1 and "declares" in err, err
    assert not (tmp_path / "out.safetensors").exists()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_fifo_weight_file_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "w.safetensors"
    os.mkfifo(fifo)
    with pytest.raises(UserError, match=r"weight file .*w\.safetensors is a FIFO, not a regular file"):
        effnet.load_model(fifo)


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_a_device_weight_file_is_refused():
    with pytest.raises(UserError, match="is a character device"):
        read_weights("/dev/zero")


@pytest.mark.parametrize(
    "class_names, needle",
    [("abc", "class_names must be a list of names, got str"), ([1, 2, 3], "class_names must hold strings")],
)
def test_save_weights_class_names_must_be_strings(tmp_path, class_names, needle):
    spec = effnet.NetworkSpec(name="tiny", blocks=effnet.parse_blocks(TINY), stem_channels=16, head_channels=64)
    with pytest.raises(UserError, match=needle) as caught:
        effnet.save_weights(effnet.create_model(spec, num_classes=3), tmp_path / "w.safetensors",
                            class_names=class_names)  # fmt: skip
    assert caught.value.field == "class_names" and not (tmp_path / "w.safetensors").exists()


def test_save_weights_of_a_module_that_is_no_effnet_model(tmp_path):
    with pytest.raises(UserError, match="model must be an effnet model .* got Linear") as caught:
        effnet.save_weights(torch.nn.Linear(2, 2), tmp_path / "w.safetensors")
    assert caught.value.field == "model" and not (tmp_path / "w.safetensors").exists()


def test_tuples_of_class_names_still_save(tmp_path):
    spec = effnet.NetworkSpec(name="tiny", blocks=effnet.parse_blocks(TINY), stem_channels=16, head_channels=64)
    effnet.save_weights(effnet.create_model(spec, num_classes=2), tmp_path / "w.safetensors", class_names=("x", "y"))
    assert effnet.load_model(tmp_path / "w.safetensors")[1].class_names == ["x", "y"]


def _lying_legacy(path, claimed):
    """A legacy (pre-zip) torch file whose one storage declares ``claimed`` float elements."""
    buffer = io.BytesIO()
    torch.save({"stem.conv.weight": torch.zeros(4)}, buffer, _use_new_zipfile_serialization=False)
    data = buffer.getvalue()
    at = data.index(b"X\x03\x00\x00\x00cpu")
    numel = data.index(b"K\x04", at)  # BININT1 4, the storage's element count
    path.write_bytes(data[:numel] + b"J" + struct.pack("<i", claimed) + data[numel + 2 :])
    return path


def test_a_legacy_pth_declaring_more_than_the_file_is_refused_before_reading(tmp_path):
    path = _lying_legacy(tmp_path / "legacy.pth", 2**31 - 1)
    with pytest.raises(UserError, match=r"legacy\.pth: refused: its tensors declare 8,589,934,588 bytes"):
        read_weights(path)


def test_an_honest_legacy_pth_still_reads(tmp_path):
    path = tmp_path / "old.pth"
    state = {"a": torch.ones(4), "b": torch.ones(3, dtype=torch.float64), "c": torch.ones(2, 5).half()}
    torch.save(state, path, _use_new_zipfile_serialization=False)
    tensors, _ = read_weights(path)
    assert all(torch.equal(tensors[k], v) for k, v in state.items())
