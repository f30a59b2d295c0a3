"""bfloat16 on the fast path: what is cast, and the bias corrections that take rounding back."""

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import effnet
from effnet.errors import UserError
from effnet.infer.conv import FastConv
from effnet.infer.fold import fold_batchnorm
from helpers import random_bn_stats


def _photo_error(model: torch.nn.Module, info) -> Callable[[torch.nn.Module], float]:
    """A fast form's logits' mean error relative to the float32 fast path's norm, on eight real photos."""
    import skimage.data

    transform = info.preprocessing.eval_transform()
    names = ("astronaut", "chelsea", "coffee", "rocket", "cat", "camera", "coins", "hubble_deep_field")
    x = torch.stack([transform(Image.fromarray(getattr(skimage.data, n)()).convert("RGB")) for n in names])
    want = effnet.optimize(model)(x)
    return lambda fast: float(((fast(x) - want).norm(dim=1) / want.norm(dim=1)).mean())


def test_bfloat16_fast_path(capsys, monkeypatch):
    import effnet.infer.hardware as hardware

    torch.manual_seed(0)
    model = random_bn_stats(effnet.create_model("efficientnet_b0", num_classes=10, resolution=64))
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


def test_bfloat16_bias_correction_reduces_the_error(monkeypatch):
    """Rounding the folded depthwise and projection weights shifts their outputs; the correction in the
    bias takes much of that shift back. A trained model (the ImageNet Lite0) on real photos: its logits' error."""
    import effnet.infer.fast as fast_module
    from effnet.factory import load_model
    from effnet.infer.hardware import native_on_cpu

    if not native_on_cpu(torch.bfloat16):
        pytest.skip("this CPU runs bfloat16 as float32")
    model, info = load_model("lite0-imagenet")
    error = _photo_error(model, info)

    corrected = effnet.optimize(model, dtype="bfloat16")
    rounded_start = fast_module.FastEfficientNet(model, onednn=True, dtype=torch.bfloat16, stem_in_float32=False)
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
    from effnet.factory import load_model
    from effnet.infer.hardware import native_on_cpu

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
