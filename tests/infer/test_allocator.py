"""glibc's malloc set up once through mallopt (opt-out, other C libraries untouched), and the one gateway
to PyTorch's private oneDNN ops with its public fallback."""

import json

import pytest
import torch
from torch import nn

import effnet.infer.allocator as allocator
import effnet.infer.conv as conv_module
from effnet import create_model
from effnet.deploy.optimize import optimize
from effnet.infer.conv import FastConv, PackedWeights, fused_conv2d, torch_release


class _FakeLibc:
    """Records mallopt calls instead of making them."""

    def __init__(self, answer: int = 1) -> None:
        self.calls: list[tuple[int, int]] = []
        self.answer = answer
        outer = self

        def mallopt(param: int, value: int) -> int:
            outer.calls.append((param, value))
            return outer.answer

        self.mallopt = mallopt


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> _FakeLibc:
    """A process whose allocator nobody has touched yet, glibc faked, no MALLOC_* or opt-out in the environment."""
    libc = _FakeLibc()
    monkeypatch.setattr(allocator, "_state", None)
    monkeypatch.setattr(allocator, "glibc", lambda: libc)
    for name in (*allocator.ENVIRONMENT, allocator.OPT_OUT_ENV, "GLIBC_TUNABLES"):
        monkeypatch.delenv(name, raising=False)
    return libc


def test_allocator_is_tuned_once_and_stays_tuned(fresh: _FakeLibc) -> None:
    assert allocator.allocator_state() == "off"
    assert allocator.tune_allocator() == "tuned"
    assert sorted(fresh.calls) == sorted(allocator.TUNED.values())
    assert all(0 <= value < 2**31 for _, value in fresh.calls)  # mallopt takes a C int
    assert allocator.tune_allocator() == "tuned" and len(fresh.calls) == len(allocator.TUNED)  # once per process
    assert allocator.tune_allocator(enabled=False) == "tuned"  # set process-wide: not undone
    assert allocator.allocator_state() == "tuned"


@pytest.mark.parametrize("value", ["0", "false", "No", "off"])
def test_allocator_opt_out_by_argument_or_environment(fresh: _FakeLibc, monkeypatch, value: str) -> None:
    assert allocator.tune_allocator(enabled=False) == "off" and not fresh.calls
    monkeypatch.setenv(allocator.OPT_OUT_ENV, value)
    assert allocator.tune_allocator() == "off" and not fresh.calls
    monkeypatch.setenv(allocator.OPT_OUT_ENV, "1")
    assert allocator.tune_allocator() == "tuned" and len(fresh.calls) == len(allocator.TUNED)


def test_allocator_left_alone_elsewhere(fresh: _FakeLibc, monkeypatch: pytest.MonkeyPatch) -> None:
    # the user's own MALLOC_* settings win
    monkeypatch.setenv("MALLOC_TOP_PAD_", "1048576")
    assert allocator.tune_allocator() == "environment" and not fresh.calls
    # another C library (musl, macOS, Windows): nothing is called
    monkeypatch.setattr(allocator, "_state", None)
    monkeypatch.delenv("MALLOC_TOP_PAD_")
    monkeypatch.setattr(allocator, "glibc", lambda: None)
    assert allocator.tune_allocator() == "unsupported" and not fresh.calls
    # a glibc that refuses a value
    monkeypatch.setattr(allocator, "_state", None)
    monkeypatch.setattr(allocator, "glibc", lambda: _FakeLibc(answer=0))
    assert allocator.tune_allocator() == "unsupported"


def test_glibc_is_detected_here() -> None:
    import platform

    if platform.libc_ver()[0] != "glibc":
        assert allocator.glibc() is None
    else:
        assert allocator.glibc() is not None and hasattr(allocator.glibc(), "mallopt")


def test_optimize_and_predict_tune_the_allocator_unless_told_not_to(fresh: _FakeLibc, cli, tmp_path) -> None:
    from PIL import Image

    model = create_model("efficientnet_b0", num_classes=3, resolution=32).eval()
    optimize(model, tune_allocator=False)
    assert allocator.allocator_state() == "off" and not fresh.calls
    optimize(model)
    assert allocator.allocator_state() == "tuned" and len(fresh.calls) == len(allocator.TUNED)
    # predict says it in its report and in its --json
    path = tmp_path / "red.png"
    Image.new("RGB", (40, 30), (200, 30, 30)).save(path)
    code, out, err = cli("predict", str(path), "--weights", "lite0-imagenet", "--top", "1", "--json")
    assert code == 0, err
    assert [record["allocator"] for record in json.loads(out)] == ["tuned"]
    code, out, err = cli("predict", str(path), "--weights", "lite0-imagenet", "--top", "1")
    assert code == 0 and out.splitlines()[-1] == "allocator: tuned", (out, err)


def test_private_ops_have_a_public_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    assert torch_release("2.14.1+cu130") == (2, 14) and torch_release("2.13.0") == (2, 13)
    assert torch_release("nightly") is None and torch_release("3") is None
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 8, 9, 9, generator=gen).contiguous(memory_format=torch.channels_last)
    residual = torch.randn(2, 8, 9, 9, generator=gen).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(8, 8, 3, 3, generator=gen).contiguous(memory_format=torch.channels_last)
    bias = torch.randn(8, generator=gen)
    args = (x, weight, bias, (1, 1), (1, 1), (1, 1), 1)
    plain = torch.nn.functional.conv2d(x, weight, bias, padding=1)
    cases = (
        (lambda: {"act": "relu"}, plain.relu()),
        (lambda: {"residual": residual}, plain + residual),
        (lambda: {"residual": residual.clone(), "add_into_residual": True}, plain + residual),
    )
    for kwargs, want in cases:
        packed = PackedWeights()
        got = fused_conv2d(*args, packed=packed, **kwargs())
        assert torch.allclose(got, want, atol=1e-4), kwargs()
        assert len(packed) == int(conv_module.private_ops_available())
        public = fused_conv2d(*args, packed=None, **kwargs())  # no packed weights: the public convolution
        assert torch.allclose(public, want, atol=1e-4), kwargs()
    if conv_module.private_ops_available():  # the sum written over the residual, no new tensor
        into = residual.clone()
        out = fused_conv2d(*args, residual=into, add_into_residual=True, packed=PackedWeights())
        assert out.data_ptr() == into.data_ptr() and torch.allclose(into, plain + residual, atol=1e-4)
    # a torch release outside the checked range (or missing ops): the whole fast path runs public convolutions
    torch.manual_seed(0)
    model = create_model("efficientnet_b0", num_classes=10).eval()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
    monkeypatch.setattr(conv_module, "private_ops_available", lambda: False)
    fast = optimize(model)
    assert torch.allclose(fast(x), expected, atol=1e-4, rtol=0)
    assert all(len(conv._packed) == 0 for conv in fast.modules() if isinstance(conv, FastConv))
