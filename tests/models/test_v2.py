"""EfficientNetV2 as descriptions: the Fused-MBConv block kind and the V2 family, exact to the reference."""

import pytest
import torch

from effnet import NetworkSpec, UserError, create_model, get_description, model_names, parse_blocks, profile
from effnet.describe.blocks import parse_block

#: Parameters at 1000 classes (timm's tf_efficientnetv2_*; torchvision's S/M/L agree).
PARAMS = {
    "efficientnetv2_b0": 7_139_704,
    "efficientnetv2_b1": 8_141_052,
    "efficientnetv2_b2": 10_096_086,
    "efficientnetv2_b3": 14_358_406,
    "efficientnetv2_s": 21_458_488,
    "efficientnetv2_m": 54_139_356,
    "efficientnetv2_l": 118_515_272,
    "efficientnetv2_xl": 208_119_808,
}
#: Multiply-adds at the evaluation resolution (timm's model, flop counter / 2).
MACS = {
    "efficientnetv2_b0": (224, 718_086_176),
    "efficientnetv2_s": (384, 8_365_617_152),
    "efficientnetv2_m": (480, 24_582_460_384),
    "efficientnetv2_l": (480, 56_079_699_008),
}


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_v2_parameters_exact(name):
    assert profile(get_description(name)).params == PARAMS[name]
    assert name in model_names()


@pytest.mark.parametrize("name", sorted(MACS))
def test_v2_multiply_adds_at_eval_resolution(name):
    resolution, macs = MACS[name]
    spec = get_description(name)
    assert spec.resolution == resolution
    assert profile(spec).macs == pytest.approx(macs, rel=0.01)


def test_v2_published_settings_as_data():
    b2, b3, s = (get_description(n) for n in ("efficientnetv2_b2", "efficientnetv2_b3", "efficientnetv2_s"))
    assert (b2.head_channels, b3.head_channels, b3.stem_channels, s.stem_channels) == (1408, 1536, 40, 24)
    assert (s.train_resolution, s.resolution, s.dropout) == (300, 384, 0.2)
    assert (b3.train_resolution, b3.resolution, b3.dropout) == (240, 300, 0.3)
    assert s.bn_eps == 1e-3 and s.bn_momentum == 0.1 and not s.channel_guard and s.max_resolution == 480
    for spelling in ("efficientnet_v2_s", "tf_efficientnetv2_s", "v2_s", "EfficientNetV2-S"):
        assert get_description(spelling) == s


def test_fused_block_strings_official_and_timm_spellings():
    official = parse_block("r4_k3_s2_e4_i24_o48_c1")
    assert official.kind == "fu" and official.stride == 2 and official.to_string() == "r4_k3_s22_e4_i24_o48_c1"
    assert parse_block("er_r4_k3_s2_e4_i24_o48") == official
    assert parse_block("r1_k3_s1_e6_i24_o48_se0.25_c0").kind == "mb"
    with pytest.raises(UserError, match="conv type"):
        parse_block("r1_k3_s1_e1_i24_o24_c2")
    with pytest.raises(UserError, match="unknown"):
        parse_block("xx_r1_k3_s1_e1_i24_o24")


def test_fused_block_structure():
    spec = NetworkSpec(name="t", blocks=parse_blocks("r2_k3_s1_e1_i24_o24_c1,r1_k3_s2_e4_i24_o48_se0.25_c1"),
                       stem_channels=24, resolution=64)  # fmt: skip
    model = create_model(spec, num_classes=5)
    single, expanded = model.stages[0][0], model.stages[1][0]
    assert single.expand is None and single.project.conv.kernel_size == (3, 3) and single.has_skip
    assert expanded.expand.conv.kernel_size == (3, 3) and expanded.expand.conv.stride == (2, 2)
    assert expanded.project.conv.kernel_size == (1, 1) and not expanded.has_skip
    assert expanded.se.reduce.out_channels == 6  # the bottleneck from the block's input: 24 × 0.25
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 5)


def test_v2_forward_paths_agree():
    spec = get_description("efficientnetv2_b0").with_(resolution=64)
    torch.manual_seed(0)
    model = create_model(spec, num_classes=7).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        plain = model(x)
        model.set_memory_efficient(True)
        lean = model(x)
        model.set_memory_efficient(False)
    assert torch.allclose(plain, lean, atol=1e-5)
    model.train()
    model.set_grad_checkpointing(True)
    model(x).sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    features = create_model(spec, features_only=True).eval()
    maps = features(x)
    assert [m.shape[1] for m in maps] == [16, 32, 48, 112, 192] and [m.shape[-1] for m in maps] == [32, 16, 8, 4, 2]


def test_lite_descriptions_have_no_squeeze_excitation():
    with pytest.raises(UserError, match="stage 2 .* squeeze-excitation"):
        NetworkSpec(name="bad", blocks="r1_k3_s1_e1_i32_o16_c1,r1_k3_s2_e4_i16_o24_se0.25_c1", lite=True)


def test_scaling_v2_keeps_its_rounding_and_cap():
    s = get_description("efficientnetv2_s")
    from effnet import scale_compound

    up = scale_compound(s, 3.0)
    assert up.resolution == 480 and up.channel_guard is False  # 384 × 1.15³ = 584 px, capped at 480
    assert profile(up).params > profile(s).params


def _randomise_bn(model):
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=gen) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
    return model.eval()


@pytest.mark.parametrize(
    "source, name, size",
    [
        ("timm:tf_efficientnetv2_b0", "tf_efficientnetv2_b0", 224),
        ("timm:tf_efficientnetv2_s", "tf_efficientnetv2_s", 256),
        ("timm:efficientnetv2_s", "efficientnetv2_s", 256),
        ("torchvision:efficientnet_v2_s", "efficientnet_v2_s", 256),
    ],
)
def test_v2_weights_give_the_reference_logits(tmp_path, source, name, size):
    """A reference model's state dict (random weights, test oracle only) saved as a .pth file loads
    by auto-detection and computes the reference's logits."""
    from effnet.factory import load_model

    library, arch = source.split(":")
    torch.manual_seed(0)
    if library == "timm":
        import timm

        ref = timm.create_model(arch, pretrained=False)
    else:
        import torchvision

        ref = getattr(torchvision.models, arch)()
    ref = _randomise_bn(ref)
    path = tmp_path / f"{arch}.pth"
    torch.save(ref.state_dict(), path)
    model, info = load_model(path, model=name)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        assert (model.eval()(x) - ref(x)).abs().max().item() < 1e-4
    assert info.extra["source_format"] == library and model.spec.bn_eps == (
        1e-5 if arch == "efficientnetv2_s" else 1e-3
    )
    assert model.spec.padding == ("same" if arch.startswith("tf_") else "symmetric")
    expected = {  # each source's own preprocessing
        "tf_efficientnetv2_b0": (224, 0.875, "bicubic", 0.485),
        "tf_efficientnetv2_s": (384, 1.0, "bicubic", 0.5),
        "efficientnetv2_s": (384, 1.0, "bicubic", 0.5),
        "efficientnet_v2_s": (384, 1.0, "bilinear", 0.485),
    }[arch]
    pre = info.preprocessing
    assert (pre.resolution, round(pre.crop_pct, 3), pre.interpolation, pre.mean[0]) == expected


def test_v1_only_layouts_refuse_fused_blocks():
    from effnet.factory import load_weights

    model = create_model("efficientnetv2_b0")
    with pytest.raises(UserError, match="only MBConv blocks"):
        load_weights(model, {"_conv_stem.weight": torch.zeros(32, 3, 3, 3)}, format="lukemelas")


def _calibrated(name: str, resolution: int):
    """A V2 model whose BatchNorm statistics come from a batch (so eval-mode activations stay near unit
    scale and 1e-4 is a meaningful tolerance on its logits)."""
    torch.manual_seed(0)
    model = create_model(get_description(name).with_(resolution=resolution), drop_path_rate=0.0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 1.0
    with torch.no_grad():
        model.train()(torch.randn(4, 3, resolution, resolution))
    return model.eval()


@pytest.mark.slow
def test_v2_fast_path_onnx_and_torchscript_match_eager(tmp_path):
    from effnet import optimize
    from effnet.export import export_model

    model = _calibrated("efficientnetv2_s", 192)
    x = torch.randn(2, 3, 192, 192)
    with torch.no_grad():
        want = model(x)
        fast = optimize(model)
        assert (fast(x) - want).abs().max().item() < 1e-4
        assert (fast(x) - want).abs().max().item() < 1e-4  # a second call is the same
    assert {(type(b).__name__, b.kind) for s in fast.stages for b in s} == {("FastBlock", "fu"), ("FastBlock", "mb")}
    onnx = export_model(model, tmp_path / "v2s.onnx", "onnx")
    script = export_model(model, tmp_path / "v2s.pt", "torchscript")
    assert onnx.max_abs_diff < 1e-4 and script.max_abs_diff < 1e-4


def test_fused_squeeze_excitation_on_the_input_is_not_in_place():
    """At expansion 1 the SE gates the block's input, which is also its residual: the fast path must
    not multiply it in place."""
    from effnet import optimize

    spec = NetworkSpec(name="t", blocks="r2_k3_s1_e1_i24_o24_se0.25_c1", stem_channels=24, resolution=32)
    torch.manual_seed(0)
    model = create_model(spec).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (optimize(model)(x) - model(x)).abs().max().item() < 1e-6


def test_the_method_accepts_v2():
    """Scaling, the planner and the NAS space speak the new block kind."""
    from effnet import scale_compound
    from effnet.nas import SearchSpace
    from effnet.search.plan import plan

    base = get_description("efficientnetv2_b0")
    one = scale_compound(get_description("efficientnetv2_s"), 1.0)
    assert one.blocks[0].kind == "fu" and one.resolution == 440 and one.train_resolution == 344
    planned = plan(base, macs=2e9)
    assert planned.macs <= 2e9 and planned.phi > 1
    space = SearchSpace(reference=base.with_(resolution=32), ops=("fu1", "fu4", "mb4", "mb6"))
    params = space.reference_params()
    assert params is not None and params["s0_op"] == "fu1" and params["s3_op"] == "mb4"
    spec = space.network(params)
    assert spec.blocks == base.blocks and profile(spec).params == PARAMS["efficientnetv2_b0"]


def test_cli_scale_and_search_on_v2(cli, tmp_path):
    import json

    code, out, err = cli("scale", "--base", "efficientnetv2_s", "--phi", "1", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["resolution"] == 440 and data["blocks"][0].endswith("_c1")
    code, out, err = cli("info", "--blocks", "r1_k3_s1_e1_i32_o16_c1,er_r1_k3_s2_e4_i16_o24", "--json")
    assert code == 0 and json.loads(out)["blocks"] == ["r1_k3_s11_e1_i32_o16_c1", "r1_k3_s22_e4_i16_o24_c1"]
    code, out, err = cli("info", "--blocks", "r1_k3_s1_e1_i32_o16_c9")
    assert code == 2 and "conv type" in err and err.count("\n") == 1


def test_search_scaling_runs_on_v2_b0(cli, tmp_path):
    import json

    code, out, err = cli(
        "search-scaling", "--base", "efficientnetv2_b0", "--resolution", "32", "--epochs", "1",
        "--max-steps-per-epoch", "2", "--batch-size", "16", "--grid-step", "0.1", "--max-points", "1",
        "--output", str(tmp_path), "--json",
    )  # fmt: skip
    assert code == 0, err
    (trial,) = json.loads(out)["trials"]
    assert trial["state"] == "COMPLETE" and trial["params"] > 0


def test_bad_v2_inputs_are_one_line_exit_2(cli, tmp_path):
    import json

    lite = tmp_path / "lite.json"
    lite.write_text(json.dumps({"name": "x", "blocks": ["r1_k3_s1_e4_i32_o16_se0.25_c1"], "lite": True}))
    for argv, needle in (
        (["info", "--description", str(lite)], "Lite"),
        (["info", "--blocks", "zz_r1_k3_s1_e1_i32_o16"], "'zz'"),
        (["scale", "--base", "efficientnetv2_s", "--phi", "20"], "--phi"),
    ):
        code, out, err = cli(*argv)
        assert code == 2 and needle in err and err.count("\n") == 1 and "Traceback" not in err, (argv, err)
