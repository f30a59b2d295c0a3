"""The block-kind contract: every registered block kind, in every form effnet builds from a model,
computes what the eager model computes.

Forms: eager (the reference), training memory mode, gradient checkpointing, the CPU fast path
(float32), ONNX Runtime and TorchScript (effnet's own exports). Each kind is a tiny network of its
blocks (a stride-1 residual block at expansion 1, then a stage whose first block has stride 2 and a
channel change and whose second has a residual) at two input sizes: the model's own, even (strided
'same' layers pad asymmetrically), and an odd one (padding worked out per input, symmetric).
Eval-mode logits must agree within 1e-4; the training forms must also give eager's training output,
parameter gradients and BatchNorm statistics.

A kind registered without a description in :data:`BLOCK_STRINGS` fails here: add one there."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import effnet
from effnet import NetworkSpec, create_model, parse_blocks
from effnet.describe.blocks import BLOCK_KINDS
from effnet.export import export_model
from effnet.export.onnx import run_onnx
from effnet.export.torchscript import run_torchscript
from effnet.models.blocks import BLOCKS
from helpers import random_bn_stats

#: One network per block kind, in the block-string notation: a stride-1 residual block at expansion 1,
#: then two blocks (stride 2 with a channel change, then a residual) at the kind's usual expansion.
BLOCK_STRINGS: dict[str, str] = {
    "mb": "r1_k3_s11_e1_i8_o8_se0.25,r2_k5_s22_e4_i8_o16_se0.25",
    "fu": "r1_k3_s11_e1_i8_o8_se0.25_c1,r2_k3_s22_e4_i8_o16_se0.25_c1",
    "ds": "ds_r1_k3_s11_e1_i8_o8_se0.25,ds_r2_k5_s22_e1_i8_o16_se0.25",
    "cn": "cn_r1_k3_s11_e1_i8_o8_se0.25,cn_r2_k3_s22_e1_i8_o16",
    "bn": "bn_r1_k3_s11_e0.5_i8_o8_se0.25,bn_r2_k3_s22_e0.5_i8_o16_se0.25",
    "ba": "ba_r1_k3_s11_e1_i8_o8,ba_r2_k3_s22_e1_i8_o16_se0.25",
}
#: Every kind the notation or the builder knows: a kind registered later is covered (and fails
#: until it has a block string above).
KINDS = sorted(set(BLOCK_KINDS) | set(BLOCKS))
#: The model's own resolution (even: asymmetric 'same' padding) and an odd input size.
RESOLUTION = 32
SIZES = (RESOLUTION, 33)
BATCH = 2
CLASSES = 10

LOGITS_ATOL = 1e-4
GRAD_RTOL, GRAD_ATOL = 1e-4, 1e-5


def _random_bn(model: nn.Module, seed: int) -> nn.Module:
    """Non-trivial BatchNorm statistics, scales and shifts (eval mode), so that folding them is really tested."""
    random_bn_stats(model, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.weight.data.copy_(torch.rand(module.num_features, generator=gen) + 0.5)
            module.bias.data.copy_(torch.rand(module.num_features, generator=gen) * 0.6 - 0.3)
    return model


def _spec(kind: str) -> NetworkSpec:
    if kind not in BLOCK_STRINGS:
        pytest.fail(f"block kind {kind!r} is registered but has no block string in BLOCK_STRINGS: add one")
    # stochastic depth and dropout on, as in a real model: in eval mode every form must ignore them
    return NetworkSpec(
        name=f"contract_{kind}",
        blocks=BLOCK_STRINGS[kind],
        stem_channels=8,
        head_channels=32,
        resolution=RESOLUTION,
        dropout=0.2,
        drop_path_rate=0.2,
    )


@dataclass
class Case:
    """One kind's eval-mode model and the artefacts made from it once (fast path, exports)."""

    kind: str
    spec: NetworkSpec
    model: nn.Module
    folder: Path
    made: dict[str, Any] = field(default_factory=dict)

    def artefact(self, form: str) -> Any:
        if form not in self.made:
            if form == "fast":
                self.made[form] = effnet.optimize(self.model, dtype="float32")
            else:
                fmt = {"onnxruntime": "onnx", "torchscript": "torchscript"}[form]
                path = self.folder / f"{self.kind}.{fmt}"
                self.made[form] = (path, export_model(self.model, path, fmt))
        return self.made[form]

    def train_model(self, **options: Any) -> nn.Module:
        """A copy for training comparisons: the same weights, stochastic depth and dropout off."""
        model = create_model(self.spec.with_(drop_path_rate=0.0, dropout=0.0), num_classes=CLASSES, **options)
        model.load_state_dict(self.model.state_dict())
        return model.train()


@dataclass
class Reference:
    """Eager's results at one input size: eval logits, and one training step's output, parameter
    gradients and BatchNorm statistics."""

    x: torch.Tensor
    logits: torch.Tensor
    train_out: torch.Tensor
    grads: dict[str, torch.Tensor]
    buffers: dict[str, torch.Tensor]


def _loss_weights(out: torch.Tensor) -> torch.Tensor:
    return torch.randn(out.shape, generator=torch.Generator().manual_seed(2))


def _train_step(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict, dict]:
    out = model(x)
    (out * _loss_weights(out)).sum().backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    return out.detach(), grads, buffers


@pytest.fixture(scope="module")
def case(kind: str, tmp_path_factory: pytest.TempPathFactory) -> Case:
    spec = _spec(kind)
    assert {block.kind for block in parse_blocks(BLOCK_STRINGS[kind])} == {kind}, BLOCK_STRINGS[kind]
    torch.manual_seed(0)
    model = _random_bn(create_model(spec, num_classes=CLASSES), seed=1)
    return Case(kind, spec, model, tmp_path_factory.mktemp(f"contract_{kind}"))


@pytest.fixture(scope="module")
def reference(case: Case, size: int) -> Reference:
    x = torch.randn(BATCH, 3, size, size, generator=torch.Generator().manual_seed(size))
    with torch.no_grad():
        logits = case.model(x)
    train_out, grads, buffers = _train_step(case.train_model(), x)
    return Reference(x, logits, train_out, grads, buffers)


def _assert_logits(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    assert tuple(got.shape) == tuple(want.shape), what
    diff = (got.float() - want).abs().max().item()
    assert diff <= LOGITS_ATOL, f"{what}: logits {diff:.2e} from eager"


def _assert_training(model: nn.Module, ref: Reference, *, buffers: bool) -> None:
    """One training step of ``model`` gives eager's output and gradients (and BatchNorm statistics)."""
    out, grads, kept = _train_step(model, ref.x)
    _assert_logits(out, ref.train_out, "training output")
    assert set(grads) == set(ref.grads)
    for name, grad in ref.grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=GRAD_RTOL, atol=GRAD_ATOL, msg=lambda m, n=name: f"{n}: {m}")
    if buffers:
        for name, value in ref.buffers.items():
            torch.testing.assert_close(kept[name].float(), value.float(), rtol=1e-5, atol=1e-6, msg=name)


def _eager(case: Case, ref: Reference) -> None:
    """The reference itself: a function of its weights alone, per image, with a gradient for every parameter."""
    assert torch.isfinite(ref.logits).all() and tuple(ref.logits.shape) == (BATCH, CLASSES)
    again = create_model(case.spec, num_classes=CLASSES).eval()
    again.load_state_dict(case.model.state_dict())
    with torch.no_grad():
        assert torch.equal(again(ref.x), ref.logits)
        _assert_logits(case.model(ref.x[1:]), ref.logits[1:], "one image alone")
    assert set(ref.grads) == {name for name, _ in case.model.named_parameters()}


def _memory_mode(case: Case, ref: Reference) -> None:
    model = case.train_model(memory_efficient=True)
    assert model.memory_efficient
    with torch.no_grad():
        _assert_logits(model.eval()(ref.x), ref.logits, "eval")
    _assert_training(model.train(), ref, buffers=True)


def _checkpointing(case: Case, ref: Reference) -> None:
    model = case.train_model()
    model.set_grad_checkpointing(True)
    with torch.no_grad():
        _assert_logits(model.eval()(ref.x), ref.logits, "eval")
    calls: list[int] = []
    for stage in model.stages:
        for block in stage:
            block.register_forward_pre_hook(lambda *_: calls.append(1))
    # checkpointing runs each block's forward again in backward, so BatchNorm statistics move twice
    _assert_training(model.train(), ref, buffers=False)
    assert len(calls) == 2 * sum(len(stage) for stage in model.stages), "blocks were not checkpointed"


def _fast(case: Case, ref: Reference) -> None:
    fast = case.artefact("fast")
    x = ref.x.clone()
    for call, layout in enumerate((torch.contiguous_format, torch.contiguous_format, torch.channels_last)):
        # later calls reuse what the first ones set up; any input layout
        _assert_logits(fast(x.contiguous(memory_format=layout)), ref.logits, f"call {call + 1}")
    assert torch.equal(x, ref.x), "the fast path changed its input"


def _onnxruntime(case: Case, ref: Reference) -> None:
    path, report = case.artefact("onnxruntime")
    assert report.max_abs_diff <= LOGITS_ATOL, report
    (got,) = run_onnx(path, [ref.x])
    _assert_logits(got, ref.logits, "onnxruntime")


def _torchscript(case: Case, ref: Reference) -> None:
    path, report = case.artefact("torchscript")
    assert report.max_abs_diff <= LOGITS_ATOL, report
    (got,) = run_torchscript(path, [ref.x])
    _assert_logits(got, ref.logits, "torchscript")


CHECKS = {
    "eager": _eager,
    "memory_mode": _memory_mode,
    "checkpointing": _checkpointing,
    "fast": _fast,
    "onnxruntime": _onnxruntime,
    "torchscript": _torchscript,
}
FORMS = tuple(CHECKS)


def test_every_registered_kind_has_a_block_string() -> None:
    assert set(BLOCK_STRINGS) == set(BLOCK_KINDS) == set(BLOCKS)


@pytest.mark.parametrize("size", SIZES, scope="module")
@pytest.mark.parametrize("form", FORMS)
# under pytest-xdist's --dist loadgroup a kind's cases run in one worker, which exports its model once
@pytest.mark.parametrize(
    "kind",
    [pytest.param(kind, marks=pytest.mark.xdist_group(f"block_contract_{kind}")) for kind in KINDS],
    scope="module",
)
def test_block_kind_in_every_form_matches_eager(
    kind: str, form: str, size: int, case: Case, reference: Reference
) -> None:
    CHECKS[form](case, reference)
