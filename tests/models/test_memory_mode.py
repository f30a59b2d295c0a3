"""Training memory mode: the same function and gradients, fewer bytes kept for backward."""

import copy
import io
import warnings

import pytest
import torch
from torch import nn

from effnet import create_model
from effnet.models.memory import MemoryEfficientMBConv, MemoryEfficientSiLU


def _saved_activation_bytes(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Bytes of the distinct non-parameter storages autograd keeps for backward."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            kept[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x)
    return out, sum(kept.values())


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal up to float rounding, relative to the tensor's scale."""
    return (a - b).abs().max().item() <= 1e-5 * a.abs().max().item() + 1e-7


def _pair(name: str, **kwargs: object) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    plain = create_model(name, drop_path_rate=0.0, dropout=0.0, num_classes=10, **kwargs).train()
    lean = copy.deepcopy(plain)
    lean.set_memory_efficient(True)
    return plain, lean


@pytest.mark.parametrize("padding", ["same", "symmetric"])
def test_memory_mode_same_forward_gradients_and_state(padding: str) -> None:
    plain, lean = _pair("efficientnet_b0", padding=padding)
    assert list(plain.state_dict()) == list(lean.state_dict())
    x = torch.randn(3, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    target = torch.randint(0, 10, (3,))
    for model in (plain, lean):
        nn.functional.cross_entropy(model(x), target).backward()
    assert torch.allclose(plain(x), lean(x), atol=1e-5)
    for (name, p), q in zip(plain.named_parameters(), lean.parameters()):
        assert _close(p.grad, q.grad), name
    # BatchNorm running statistics and counters advance identically
    for (name, a), b in zip(plain.state_dict().items(), lean.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), name


def test_memory_mode_keeps_far_fewer_bytes() -> None:
    plain, lean = _pair("efficientnet_b0")
    x = torch.randn(2, 3, 96, 96)
    _, plain_bytes = _saved_activation_bytes(plain, x)
    _, lean_bytes = _saved_activation_bytes(lean, x)
    # each expanded tensor kept once instead of three or four times
    assert lean_bytes < 0.4 * plain_bytes, (lean_bytes, plain_bytes)
    plain.set_grad_checkpointing(True)
    _, checkpointed = _saved_activation_bytes(plain, x)
    assert checkpointed < 0.15 * plain_bytes


def test_memory_mode_by_create_model_and_switch_off() -> None:
    model = create_model("efficientnet_b0", memory_efficient=True)
    assert model.memory_efficient and isinstance(model.stages[1][0], MemoryEfficientMBConv)
    assert isinstance(model.stages[1][0].se.act, MemoryEfficientSiLU)
    model.set_memory_efficient(False)
    assert not model.memory_efficient
    assert type(model.stages[1][0]).__name__ == "MBConv" and type(model.stem.act) is nn.SiLU


def test_memory_mode_eval_and_no_grad_are_plain() -> None:
    plain, lean = _pair("efficientnet_b0")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(plain.eval()(x), lean.eval()(x))


def test_other_block_kinds_and_activations_still_train() -> None:
    # ReLU6 (lite) is left alone; MobileNet/ResNet-style blocks get the BN+SiLU fusion only
    plain, lean = _pair("lite0")
    x = torch.randn(2, 3, 64, 64)
    _, a = _saved_activation_bytes(plain, x)
    out, b = _saved_activation_bytes(lean, x)
    assert a == b
    out.sum().backward()
    torch.manual_seed(0)
    model = create_model(
        "efficientnet_b0", blocks="ds_r1_k3_s11_e1_i32_o16_se0.25,cn_r1_k3_s22_e1_i16_o24", memory_efficient=True
    )
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_trace_and_onnx_export_work_with_memory_mode_off() -> None:
    model = create_model("efficientnet_b0", num_classes=10, resolution=64, memory_efficient=True)
    model.set_memory_efficient(False)
    model.eval()
    x = torch.randn(1, 3, 64, 64)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, x)
        assert torch.allclose(traced(x), model(x), atol=1e-5)
        buffer = io.BytesIO()
        torch.onnx.export(model, (x,), buffer, dynamo=False, opset_version=17)
    assert len(buffer.getvalue()) > 1_000_000


def test_memory_mode_with_per_block_checkpointing_same_gradients() -> None:
    plain, lean = _pair("efficientnet_b0")
    lean.set_grad_checkpointing(True)
    x = torch.randn(2, 3, 64, 64)
    plain(x).square().sum().backward()
    lean(x).square().sum().backward()
    for (name, p), q in zip(plain.named_parameters(), lean.parameters()):
        assert _close(p.grad, q.grad), name


@pytest.mark.parametrize(
    "blocks",
    [
        "r2_k3_s22_e4_i16_o32_se0.25_c1",
        "ds_r2_k3_s22_e1_i16_o32_se0.25",
        "bn_r2_k3_s22_e0.5_i16_o64_se0.25",
        "ba_r2_k3_s22_e1_i16_o32_se0.25",
    ],
)
def test_memory_mode_applies_to_every_block_kind(blocks: str) -> None:
    """Memory mode comes from a kind's steps: other kinds than MBConv keep fewer bytes too, with the
    same output and gradients."""
    from effnet import NetworkSpec

    spec = NetworkSpec(name="k", blocks=blocks, stem_channels=16, head_channels=64, resolution=32)
    torch.manual_seed(0)
    plain = create_model(spec.with_(drop_path_rate=0.0, dropout=0.0), num_classes=10).train()
    lean = copy.deepcopy(plain)
    lean.set_memory_efficient(True)
    assert type(lean.stages[0][0]).__name__ == f"MemoryEfficient{type(plain.stages[0][0]).__name__}"
    x = torch.randn(2, 3, 32, 32)
    (plain_out, plain_bytes), (lean_out, lean_bytes) = (_saved_activation_bytes(m, x) for m in (plain, lean))
    assert torch.allclose(plain_out, lean_out, atol=1e-5)
    assert lean_bytes < 0.8 * plain_bytes, (lean_bytes, plain_bytes)
    for out in (plain_out, lean_out):
        out.square().sum().backward()
    for (name, p), q in zip(plain.named_parameters(), lean.parameters()):
        assert _close(p.grad, q.grad), name
    lean.set_memory_efficient(False)
    assert type(lean.stages[0][0]) is type(plain.stages[0][0])
