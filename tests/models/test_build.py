import pytest
import torch

from effnet import create_model, get_description, profile
from effnet.errors import UserError
from effnet.models.blocks import MBConv
from effnet.models.layers import PaddedConv2d
from effnet.models.padding import same_padding


def test_same_padding_rule():
    # B0 at 224: stride-2 layers pad (0, 1) for k3 and (1, 2) for k5; odd inputs symmetric.
    assert same_padding(224, 3, 2) == (0, 1)
    assert same_padding(112, 5, 2) == (1, 2)
    assert same_padding(225, 3, 2) == (1, 1)
    assert same_padding(7, 3, 1) == (1, 1)


def test_padded_conv_matches_tensorflow_rule_at_any_size():
    torch.manual_seed(0)
    conv = PaddedConv2d(3, 4, 3, 2, bias=False, input_size=224)
    for size in (224, 225, 31):
        x = torch.randn(1, 3, size, size)
        top, bottom = same_padding(size, 3, 2)
        expected = torch.nn.functional.conv2d(
            torch.nn.functional.pad(x, (top, bottom, top, bottom)), conv.weight, stride=2
        )
        assert torch.equal(conv(x), expected)


def test_mbconv_structure_of_b0():
    model = create_model("b0")
    first = model.stages[0][0]
    assert isinstance(first, MBConv) and first.expand is None and first.se.reduce.out_channels == 8
    block = model.stages[1][0]  # 16 -> 24, e6: SE bottleneck from *input* channels: 16 * 0.25 = 4
    assert block.expand.conv.out_channels == 96 and block.se.reduce.out_channels == 4
    assert not block.has_skip and model.stages[1][1].has_skip
    bn = model.stem.bn
    assert bn.eps == 1e-3 and bn.momentum == 0.01
    # stochastic depth rises linearly with the global block index (block 14 of 16)
    assert model.stages[5][3].drop_path.p == pytest.approx(0.2 * 14 / 16)
    assert isinstance(model.stages[1][0].depthwise.conv, PaddedConv2d)


def test_symmetric_padding_has_no_padded_convs():
    model = create_model("b0", padding="symmetric")
    assert not any(isinstance(m, PaddedConv2d) for m in model.modules())
    assert model.spec.padding == "symmetric"


def test_forward_shapes_classes_channels():
    torch.manual_seed(0)
    model = create_model("lite0", num_classes=10, in_chans=1).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, 64, 64))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    headless = create_model("b0", num_classes=0).eval()
    assert headless(torch.randn(1, 3, 64, 64)).shape == (1, 1280)


def test_features_only_strides():
    model = create_model("b0", features_only=True).eval()
    with torch.no_grad():
        maps = model(torch.randn(1, 3, 224, 224))
    assert [m.shape[1] for m in maps] == [16, 24, 40, 112, 320]
    assert [224 // m.shape[-1] for m in maps] == [2, 4, 8, 16, 32]
    assert [f["reduction"] for f in model.feature_info] == [2, 4, 8, 16, 32]


def test_eval_is_deterministic_and_train_uses_stochastic_depth():
    torch.manual_seed(0)
    model = create_model("b0", num_classes=5)
    x = torch.randn(2, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    assert create_model("b0", drop_path_rate=0.0).stages[5][3].drop_path.__class__.__name__ == "Identity"


def test_overrides_and_bad_values():
    model = create_model("b0", dropout=0.5, resolution=128, bn_eps=1e-5)
    assert model.spec.dropout == 0.5 and model.spec.resolution == 128 and model.stem.bn.eps == 1e-5
    assert profile(model).resolution == 128
    with pytest.raises(UserError):
        create_model("b0", not_a_field=1)
    with pytest.raises(UserError):
        create_model("b0", num_classes=-1)


def test_description_file_builds(tmp_path):
    spec = get_description("b1")
    path = tmp_path / "b1.json"
    spec.save(path)
    assert create_model(str(path)).spec == spec


def test_gradients_flow_with_checkpointing():
    torch.manual_seed(0)
    model = create_model("b0", num_classes=3)
    x = torch.randn(2, 3, 64, 64)
    model.train()
    torch.manual_seed(1)
    model(x).sum().backward()
    plain = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_grad_checkpointing(True)
    torch.manual_seed(1)
    model(x.requires_grad_()).sum().backward()
    for a, p in zip(plain, model.parameters()):
        assert torch.allclose(a, p.grad, atol=1e-5)


#: One stage of each block kind: stride 2 with a channel change (ResNet kinds: a projection shortcut).
_KIND_STAGES = {
    "mb": "r2_k3_s22_e4_i8_o16_se0.25",
    "fu": "r2_k3_s22_e4_i8_o16_se0.25_c1",
    "ds": "ds_r2_k3_s22_e1_i8_o16_se0.25",
    "cn": "cn_r2_k3_s22_e1_i8_o16_se0.25",
    "bn": "bn_r2_k3_s22_e0.5_i8_o16_se0.25",
    "ba": "ba_r2_k3_s22_e1_i8_o16_se0.25",
}


@pytest.mark.parametrize("kind", sorted(_KIND_STAGES))
def test_block_kind_entry_describes_its_module(kind: str) -> None:
    """A kind's registry entry is its module's structure: the present steps in the entry's order (the
    absent ones optional), every tensor under a step or the shortcut, the residual rule's modules."""
    from effnet import NetworkSpec
    from effnet.models.blocks import BLOCKS, KINDS, kind_of_block

    assert set(_KIND_STAGES) == set(KINDS) == set(BLOCKS)
    spec = NetworkSpec(name="k", blocks=_KIND_STAGES[kind], stem_channels=8, head_channels=32, resolution=32)
    entry = KINDS[kind]
    assert entry.module is BLOCKS[kind] and entry.kind == kind
    blocks = create_model(spec).stages[0]
    for block in blocks:
        assert kind_of_block(block) is entry
        names = [step.name for step in entry.steps]
        assert list(block.present) == [name for name in names if getattr(block, name) is not None]
        assert all(step.optional for step in entry.steps if step.name not in block.present)
        prefixes = {key.split(".")[0] for key in block.state_dict()}
        assert prefixes == set(block.present) | ({"shortcut"} if getattr(block, "shortcut", None) else set())
        assert hasattr(block, "out_act") == (entry.residual == "projection")
    first, second = blocks
    assert not first.has_skip if entry.residual == "identity" else first.shortcut is not None
    assert second.has_skip
