"""The inference fast path computes the plain model's eval-mode function."""

import copy
import functools
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from effnet import create_model
from effnet.deploy.optimize import optimize
from effnet.errors import UserError
from effnet.export.ort import OrtModule
from effnet.infer.conv import PACKED_SHAPES, FastConv
from effnet.infer.fast import FastEfficientNet
from effnet.models.layers import PaddedConv2d
from effnet.models.padding import axis_plan as _axis_plan
from effnet.models.padding import same_padding


def _randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics, so that folding them is really tested."""
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            c = module.num_features
            module.running_mean.copy_(torch.rand(c, generator=gen) - 0.5)
            module.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
            module.weight.data.copy_(torch.rand(c, generator=gen) + 0.5)
            module.bias.data.copy_(torch.rand(c, generator=gen) * 0.6 - 0.3)
    return model.eval()


def _b0_ten_classes() -> nn.Module:
    """A B0 with ten classes, seeded weights and random BatchNorm statistics."""
    torch.manual_seed(0)
    return _randomise_bn(create_model("efficientnet_b0", num_classes=10))


@pytest.mark.parametrize(
    ("name", "padding", "size"),
    [
        ("efficientnet_b0", "same", 224),
        ("efficientnet_b0", "symmetric", 224),
        ("lite0", None, 224),
        ("efficientnet_b0", "same", 97),  # other sizes: padding worked out on the fly, odd → symmetric
    ],
)
def test_fast_path_equals_plain_model(name: str, padding: str | None, size: int) -> None:
    torch.manual_seed(0)
    model = _randomise_bn(create_model(name, padding=padding))
    fast = optimize(model)
    x = torch.randn(3, 3, size, size)
    with torch.no_grad():
        expected = model(x)
        features = model.forward_features(x)
    out = fast(x)
    assert out.shape == expected.shape == (3, 1000)
    assert torch.allclose(out, expected, atol=1e-4, rtol=0)
    # the features before pooling are large: compare them relative to their scale too
    plain_convs = optimize(model, onednn=False)
    assert plain_convs.features_only is False
    assert (features.abs().max() > 1).item()
    # batch-size independence: each row equals the model on that image alone
    single = fast(x[1:2])
    assert torch.allclose(single, expected[1:2], atol=1e-4, rtol=0)
    # PyTorch's own convolutions instead of oneDNN's fused kernels with prepacked weights: same function
    assert torch.allclose(plain_convs(x), expected, atol=1e-4, rtol=0)


def test_fast_path_features_only_and_model_untouched() -> None:
    torch.manual_seed(0)
    model = _randomise_bn(create_model("efficientnet_b0", features_only=True))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = optimize(model)
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        expected = model(x)
    got = fast(x)
    assert [t.shape for t in got] == [t.shape for t in expected]
    for a, b in zip(got, expected):
        assert torch.allclose(a, b, atol=1e-4 * max(1.0, b.abs().max().item()), rtol=0)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_fast_path_is_inference_only_and_folds_batchnorm() -> None:
    model = create_model("efficientnet_b0")
    fast = optimize(model)
    assert not fast.training
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    assert sum(isinstance(m, FastConv) for m in fast.modules()) == 2 + 16 * 3 - 1  # stem, head, blocks
    assert not any(p.requires_grad for p in fast.parameters())  # nothing to train
    with pytest.raises(UserError):
        fast.train()
    with pytest.raises(UserError):
        optimize(model, backend="tensorrt")
    with pytest.raises(UserError):
        optimize(nn.Linear(2, 2))


@pytest.mark.parametrize(("size", "kernel", "stride"), [(224, 3, 2), (112, 5, 2), (57, 5, 2), (8, 3, 2), (7, 3, 1)])
def test_same_padding_by_cropping_a_symmetric_convolution(size: int, kernel: int, stride: int) -> None:
    # pad p symmetrically, skip `crop` outputs: TensorFlow's asymmetric result, no padded copy
    p, crop, before, after = _axis_plan(size, kernel, stride)
    assert p >= after and (p - before) == crop * stride
    x = torch.randn(1, 2, size, size)
    w = torch.randn(2, 1, kernel, kernel)
    padded = torch.nn.functional.pad(x, (before, after, before, after))
    expected = torch.nn.functional.conv2d(padded, w, stride=stride, groups=2)
    got = torch.nn.functional.conv2d(x, w, stride=stride, padding=p, groups=2)
    out = -(-size // stride)
    assert torch.allclose(got[:, :, crop : crop + out, crop : crop + out], expected, atol=1e-5)


@pytest.mark.parametrize(
    ("height", "width", "kernel", "stride"), [(224, 224, 3, 2), (56, 56, 5, 2), (14, 15, 5, 2), (8, 7, 3, 2)]
)
def test_same_padding_by_a_zero_extended_kernel(height: int, width: int, kernel: int, stride: int) -> None:
    # one leading zero row/column in the kernel + symmetric padding by the larger side = TF 'same'
    conv = PaddedConv2d(4, 4, kernel, stride=stride, groups=4, input_size=height)
    fast = FastConv(conv, None, None)
    x = torch.randn(2, 4, height, width)
    plan = fast._plan(height, width)
    assert plan.pre_pad is None and plan.crop is None
    assert plan.extend == (int(height % 2 == 0), int(width % 2 == 0))
    assert fast._plan(height, width, "cuda").crop is not None  # on CUDA: a larger output, cropped
    (top, bottom), (left, right) = same_padding(height, kernel, stride), same_padding(width, kernel, stride)
    expected = F.conv2d(F.pad(x, (left, right, top, bottom)), conv.weight, conv.bias, stride, groups=4)
    assert torch.allclose(fast(x.contiguous(memory_format=torch.channels_last)), expected, atol=1e-5)


def test_fast_path_at_other_sizes_and_batches_reuses_its_buffers() -> None:
    # non-square and odd sizes (per-axis padding), batch sizes changing between calls
    model = _b0_ten_classes()
    fast = optimize(model)
    for batch, height, width in [(3, 64, 64), (1, 64, 64), (2, 65, 64), (3, 64, 64), (1, 48, 71)]:
        x = torch.randn(batch, 3, height, width)
        with torch.no_grad():
            expected = model(x)
        assert torch.allclose(fast(x), expected, atol=1e-4, rtol=0), (batch, height, width)


def test_fast_path_prepacks_onednn_weights_per_input_shape() -> None:
    # each convolution's weight is reordered into oneDNN's layout once per input shape (at most
    # PACKED_SHAPES kept); the results equal PyTorch's convolutions; a copy starts with no packed weights
    model = _b0_ten_classes()
    fast, reference = optimize(model), optimize(model, onednn=False)
    convs = [m for m in fast.modules() if isinstance(m, FastConv)]
    assert convs and all(conv.onednn for conv in convs)
    shapes = [(2, 64, 64), (1, 64, 64), (2, 72, 64), (3, 64, 64), (2, 64, 80), (2, 64, 64)]
    for n, h, w in shapes:
        x = torch.randn(n, 3, h, w)
        got, want = fast(x), reference(x)
        assert torch.allclose(got, want, atol=1e-5, rtol=0), (n, h, w)
    assert all(0 < len(conv._packed) <= PACKED_SHAPES for conv in convs)
    packed = next(iter(convs[1]._packed._packed.values()))
    assert packed.is_mkldnn
    x = torch.randn(2, 3, 64, 64)
    for twin in (copy.deepcopy(fast), pickle.loads(pickle.dumps(fast))):
        assert all(len(conv._packed) == 0 for conv in twin.modules() if isinstance(conv, FastConv))
        assert torch.allclose(twin(x), reference(x), atol=1e-5, rtol=0)


def test_calls_do_not_see_each_others_results() -> None:
    # residual sums are written in place: calls must not see each other's results, nor may a returned
    # feature map change when the model is called again
    model = _b0_ten_classes()
    features = _randomise_bn(create_model("efficientnet_b0", features_only=True))
    fast, fast_features = optimize(model), optimize(features)
    a, b = torch.randn(3, 3, 64, 64), torch.randn(2, 3, 80, 80)
    with torch.no_grad():
        expected_a, expected_b, maps_b = model(a), model(b), features(b)
    first = fast(a)
    assert torch.allclose(fast(b), expected_b, atol=1e-4, rtol=0)
    assert torch.allclose(first, expected_a, atol=1e-4, rtol=0)
    assert torch.allclose(fast(a), expected_a, atol=1e-4, rtol=0)
    got_b = fast_features(b)
    fast_features(a)  # must not overwrite the maps returned before
    for got, want in zip(got_b, maps_b, strict=True):
        assert torch.allclose(got, want, atol=1e-4 * max(1.0, want.abs().max().item()), rtol=0)


@functools.cache
def _onnxruntime_b0() -> tuple[nn.Module, bytes]:
    """A B0 at 64² (random BN statistics) and the ONNX model its onnxruntime backend runs (exported
    once, for 64² only: any size is the default, tested in tests/test_deploy.py)."""
    torch.manual_seed(0)
    model = _randomise_bn(create_model("efficientnet_b0", num_classes=10, resolution=64))
    return model, optimize(model, backend="onnxruntime", input_size=64).onnx_model


def _onnxruntime_case(threads: int, batch: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """That B0 behind the onnxruntime backend's runner with ``threads`` threads, an input and the model's output."""
    pytest.importorskip("onnxruntime")
    model, onnx_model = _onnxruntime_b0()
    fast = OrtModule(onnx_model, threads)
    x = torch.randn(batch, 3, 64, 64)
    with torch.no_grad():
        return fast, x, model(x)


def test_onnxruntime_backend_matches() -> None:
    fast, x, expected = _onnxruntime_case(threads=1, batch=2)
    assert torch.allclose(fast(x), expected, atol=1e-4, rtol=0)
    assert torch.allclose(fast(x[:1]), expected[:1], atol=1e-4, rtol=0)


def test_onnxruntime_runner_splits_batches_and_takes_channels_last_as_is() -> None:
    fast, x, expected = _onnxruntime_case(threads=2, batch=5)
    # 5 images in parts of 3 and 2, one on this thread and one on the pool's: the same outputs in order
    got = fast._run_split(x.numpy(), False)[0]
    assert torch.allclose(torch.from_numpy(got), expected, atol=1e-4, rtol=0)
    # a batch of several images always runs split (one-thread sessions), one image whole
    fresh = OrtModule(fast.onnx_model, 2)
    assert torch.allclose(fresh(x[:1]), expected[:1], atol=1e-4, rtol=0)  # one image: never split
    assert (False, 1) not in fresh._sessions
    outputs = [fresh(x) for _ in range(2)]
    assert (False, 1) in fresh._sessions
    assert all(torch.allclose(out, expected, atol=1e-4, rtol=0) for out in outputs)
    assert not OrtModule(fast.onnx_model, 2, split=False).split and not OrtModule(fast.onnx_model, 1).split
    # channels_last input goes in as NHWC, to a model that starts with a transpose
    assert (True, 1) not in fast._sessions and (True, 2) not in fast._sessions
    x_cl = x.contiguous(memory_format=torch.channels_last)
    assert torch.allclose(fast(x_cl), expected, atol=1e-4, rtol=0)  # split: one-thread sessions
    assert (True, 1) in fast._sessions and fast.session(True, 1).get_inputs()[0].shape[1:] == [64, 64, 3]
    assert torch.allclose(fast(x_cl[:1]), expected[:1], atol=1e-4, rtol=0)  # whole: the two-thread one
    assert (True, 2) in fast._sessions and fast.session(True, 2).get_inputs()[0].shape[1:] == [64, 64, 3]
    got = fast._run_split(x_cl.permute(0, 2, 3, 1).numpy(), True)[0]
    assert torch.allclose(torch.from_numpy(got), expected, atol=1e-4, rtol=0)
    # a copy (deepcopy, pickle) makes its own sessions and threads
    twin = copy.deepcopy(fast)
    assert not twin._sessions and torch.allclose(twin(x_cl), expected, atol=1e-4, rtol=0)


def test_functional_forms_for_compile_and_onnx_equal_the_model() -> None:
    # what backend="compile" traces (cropped 'same' convolutions) and what ONNX gets (asymmetric pads)
    torch.manual_seed(0)
    model = _randomise_bn(create_model("efficientnet_b0"))
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        expected = model(x)
    for crop in (True, False):
        functional = FastEfficientNet(model, export=True)
        for module in functional.modules():
            if isinstance(module, FastConv):
                module.crop_when_functional = crop
        assert torch.allclose(functional(x), expected, atol=1e-4, rtol=0)


def test_fast_path_from_a_model_in_memory_mode() -> None:
    torch.manual_seed(0)
    model = _randomise_bn(create_model("efficientnet_b0", memory_efficient=True))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
    assert torch.allclose(optimize(model)(x), expected, atol=1e-4, rtol=0)


def test_fast_path_takes_each_block_kind_from_its_registry() -> None:
    # every kind's inference form is one FastBlock built from its registry entry (the memory mode's
    # blocks too: they subclass the kinds' modules), its steps' fast layers under the steps' names
    from effnet.infer.fast import FastBlock, fast_block
    from effnet.models.blocks import KINDS

    with pytest.raises(UserError, match="not a registered block kind"):
        fast_block(nn.Conv2d(1, 1, 1), onednn=False, export=False)
    blocks = (
        "ds_r1_k3_s11_e1_i32_o16_se0.25,r2_k5_s22_e6_i16_o24_se0.25,cn_r1_k3_s22_e1_i24_o32,"
        "bn_r1_k3_s11_e0.25_i32_o64,ba_r2_k3_s22_e1_i64_o64"
    )
    kinds = ["ds", "mb", "cn", "bn", "ba"]
    x = torch.randn(2, 3, 64, 64)
    for memory in (False, True):
        torch.manual_seed(0)
        model = _randomise_bn(create_model("efficientnet_b0", blocks=blocks, num_classes=10, memory_efficient=memory))
        fast = optimize(model)
        assert all(type(block) is FastBlock for stage in fast.stages for block in stage)
        assert [stage[0].kind for stage in fast.stages] == kinds
        for stage, fast_stage in zip(model.stages, fast.stages):
            for block, fast_one in zip(stage, fast_stage):
                assert fast_one.present == block.present
                assert fast_one.ops == tuple(KINDS[fast_one.kind].step(name).op for name in block.present)
        assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
        with torch.no_grad():
            expected = model(x)
        assert torch.allclose(fast(x), expected, atol=1e-4, rtol=0), memory


def test_compiled_models_one_after_another() -> None:
    """A second compiled model in the same process, at another input size, compiles too (shapes are
    static: with automatic dynamic shapes the frozen recompilation had failed in Inductor)."""
    from effnet.zoo import description_from_blocks

    torch.manual_seed(0)
    outputs = []
    for blocks, size in (("r1_k3_s11_e1_i8_o8_se0.25,r1_k3_s22_e4_i8_o16", 32), ("r1_k5_s22_e1_i8_o12", 40)):
        model = _randomise_bn(create_model(description_from_blocks(blocks), num_classes=3))
        x = torch.randn(2, 3, size, size)
        with torch.no_grad():
            want = model(x)
            got = optimize(model, backend="compile")(x)
        outputs.append(float((got - want).abs().max()))
    assert max(outputs) <= 1e-4, outputs


def test_bfloat16_pooling_is_the_rounded_sum() -> None:
    """SE's pooled vector in bfloat16 (a sum over the rows of channels on CPU, ATen's mean being slow
    there) is the exact sum rounded once (float32 accumulation), with the 1/(H·W) left to the product
    after; elsewhere the mean."""
    from effnet.infer.fast import _pooled

    gen = torch.Generator().manual_seed(0)
    for shape in ((3, 40, 9, 7), (2, 8, 56, 56)):
        x = torch.rand(shape, generator=gen).bfloat16().contiguous(memory_format=torch.channels_last)
        total, scale = _pooled(x)
        exact = x.double().sum((2, 3))
        assert total.dtype == torch.bfloat16 and total.shape == exact.shape and scale == 1 / (shape[2] * shape[3])
        # the correctly rounded sum (bit for bit on AVX-512 here; a float32 accumulator could round twice)
        assert (total == exact.bfloat16()).float().mean() >= 0.99
        assert torch.allclose(total.double(), exact, rtol=2**-8, atol=0)  # within half a bfloat16 step
        assert torch.allclose(total.double() * scale, x.double().mean((2, 3)), rtol=2**-8, atol=0)
    plain = torch.rand(2, 8, 5, 5, generator=gen)
    mean, scale = _pooled(plain)
    assert torch.equal(mean, plain.mean((2, 3))) and scale == 1.0
