"""The inference fast path: :func:`optimize` turns a built model into an inference-only module.

What it does to the plain model, each measured on CPU (see ``benchmarks/SPEED.md``):

- BatchNorm is folded into the convolution before it (weights scaled, a bias added).
- Tensors are channels_last throughout; activations run in place and each block's residual sum is
  written over its input by the projection itself (oneDNN's in-place convolution + add).
- Large outputs (FRESH_ALLOC_BYTES and up) go into memory kept between calls instead of fresh
  tensors, which glibc's malloc would page-fault in again on every call.
- TensorFlow 'same' padding of strided layers, asymmetric at even sizes (one more row and column
  after than before), costs about what symmetric padding costs: the kernel gets one leading zero
  row and column and the convolution pads symmetrically by the larger side. Same sums, no padded
  copy, no cropped output; only the stem's 3-channel input is copied into a zero-bordered buffer.
  (On CUDA, where fast depthwise kernels are 3×3 and 5×5 only, a larger output is cropped instead.)
- Optionally (``onednn=True``, CPU float32) the other convolutions run oneDNN's fused
  convolution + activation kernels; measured no faster here, so off by default.
- Squeeze-excitation runs as two small matrix products on the pooled vector and gates in place.
- The stem and the stages up to stride 16 may run a few images at a time, so that their wide
  activations stay in the last-level cache (chunk size from the cache's size). Whether that pays
  depends on the CPU (+6% on a Zen 4 VM, 2–5% slower on the Xeon measured before), so the first
  calls at each input shape alternate between whole batch and chunks, time them, and keep the faster.

``backend="compile"`` wraps the folded module's functional form in :func:`torch.compile` (Inductor,
weights frozen); ``backend="onnxruntime"`` exports it to ONNX (asymmetric padding as the Conv's own
``pads``, no Pad nodes) and runs it in ONNX Runtime (:class:`OrtModule`): channels_last inputs go
in as NHWC without a copy, and a batch may run split between one-thread sessions at once where
that is faster than splitting each operator between threads (timed on the first calls).
All backends compute the plain model's eval-mode function (within float rounding, ~1e-5).
"""

from __future__ import annotations

import copy
import functools
import io
import math
import statistics
import threading
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from effnet.errors import UserError
from effnet.models.blocks import DepthwiseSeparable, MBConv
from effnet.models.layers import ConvNormAct, PaddedConv2d, SqueezeExcite
from effnet.models.padding import axis_plan

BACKENDS = ("eager", "compile", "onnxruntime")

#: convolution outputs of this size and more go into memory the fast path keeps between calls
#: (oneDNN adds the result onto zeros there) instead of fresh tensors. glibc's malloc maps blocks
#: of 32 MiB and more afresh on every call and hands the top of its heap back to the system when
#: more than twice its mmap threshold is free there, so large fresh tensors are page-faulted in
#: again on every call: at batch 16 on B0 that was 14,000 faults (~57 MB) per call with a 32 MiB
#: limit and none with 16 MiB (benchmarks/SPEED.md).
FRESH_ALLOC_BYTES = 16 * 2**20

#: Images per chunk in the early stages aim to keep each chunk's widest activation within this
#: share of the last-level cache.
CHUNK_CACHE_SHARE = 0.6
#: Timed calls per candidate (each after an untimed one) before the faster way is kept for a shape.
TUNING_CALLS = 4
#: The same for ONNX Runtime's whole-batch and split runs, whose difference (~5-10%) is within the
#: call-to-call noise of a shared machine (split calls ±20%): 4 timed calls each chose wrongly in
#: one full benchmark run, 8 chose right in 6 of 6 probes.
ORT_TUNING_CALLS = 8


@functools.cache
def _last_level_cache_bytes() -> int:
    """The largest CPU cache (Linux sysfs, read once), or 32 MiB where it cannot be read."""
    units = {"K": 2**10, "M": 2**20}
    sizes = []
    for path in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        try:
            text = path.read_text().strip().upper()
            sizes.append(int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text))
        except (OSError, ValueError):
            continue
    return max(sizes, default=32 * 2**20)


#: oneDNN post-op name and scalars of each activation module oneDNN can fuse into a convolution.
_ONEDNN_ACTS: dict[str, tuple[str, list[float]]] = {
    "silu": ("swish", []),
    "relu": ("relu", []),
    "relu6": ("hardtanh", [0.0, 6.0]),
    "hard_swish": ("hardswish", []),
}


def _activation_name(module: nn.Module) -> str | None:
    """The activation a module computes, by name; None for identity."""
    from effnet.models import memory as efficient

    if isinstance(module, nn.Identity):
        return None
    if isinstance(module, nn.SiLU | efficient.MemoryEfficientSiLU):
        return "silu"
    if isinstance(module, nn.ReLU6):
        return "relu6"
    if isinstance(module, nn.ReLU):
        return "relu"
    if isinstance(module, nn.Hardswish):
        return "hard_swish"
    if isinstance(module, nn.GELU):
        return "gelu"
    raise UserError(f"optimize: unsupported activation {type(module).__name__}")


_ACT_FUNCS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "silu": lambda x: F.silu(x, inplace=True),
    "relu": lambda x: F.relu(x, inplace=True),
    "relu6": lambda x: F.hardtanh(x, 0.0, 6.0, inplace=True),
    "hard_swish": lambda x: F.hardswish(x, inplace=True),
    "gelu": F.gelu,
}


def _fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of ``bn(conv(x))`` as one convolution (BN in eval mode)."""
    weight = conv.weight.detach().clone()
    bias = (
        conv.bias.detach().clone()
        if conv.bias is not None
        else torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device)
    )
    if bn is None:
        return weight.contiguous(memory_format=torch.channels_last), bias
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    weight = weight * scale.reshape(-1, 1, 1, 1)
    bias = (bias - bn.running_mean) * scale + bn.bias.detach()
    return weight.contiguous(memory_format=torch.channels_last), bias


class _Plan:
    """How one 'same' convolution with asymmetric padding is run at one input size."""

    __slots__ = ("pre_pad", "padding", "crop", "extend")

    def __init__(
        self,
        pre_pad: tuple[int, int, int, int] | None,
        padding: tuple[int, int],
        crop: tuple[int, int, int, int] | None = None,
        extend: tuple[int, int] = (0, 0),
    ) -> None:
        self.pre_pad = pre_pad  # (left, right, top, bottom) zero padding of the input, or None
        self.padding = padding  # symmetric padding (h, w) the convolution itself applies
        self.crop = crop  # (top, left, height, width) of the output to keep, or None
        self.extend = extend  # zero rows (top) and columns (left) prepended to the kernel


def _zero_border(t: torch.Tensor, pad: tuple[int, int, int, int]) -> None:
    """Zero the border (left, right, top, bottom) of ``t`` in place."""
    left, right, top, bottom = pad
    for region in (t[:, :, :top], t[:, :, t.shape[2] - bottom :], t[:, :, :, :left], t[:, :, :, t.shape[3] - right :]):
        if region.numel():
            region.zero_()


class _Pool:
    """Memory kept between calls for large convolution outputs: one flat tensor per thread and
    slot. Slots: ``expand`` (a block's expansion, then the head), ``dw`` (the depthwise output)
    and ``out`` (the stem's and a block's output; a block without a residual reads its input
    before it writes its output, one with a residual adds its output to that input in place)."""

    def __init__(self) -> None:
        self._buffers: dict[tuple[int, str], torch.Tensor] = {}

    def channels_last(self, shape: tuple[int, int, int, int], like: torch.Tensor, slot: str) -> torch.Tensor:
        """A channels_last tensor of ``shape`` (dtype and device of ``like``) in ``slot``."""
        n, c, h, w = shape
        key = (threading.get_ident(), slot)
        buf = self._buffers.get(key)
        if buf is None or buf.numel() < n * c * h * w or buf.dtype != like.dtype or buf.device != like.device:
            buf = like.new_empty(n * c * h * w)
            self._buffers[key] = buf
        return buf[: n * c * h * w].view(n, h, w, c).permute(0, 3, 1, 2)


def _onednn_ok(x: torch.Tensor) -> bool:
    """Whether oneDNN's in-place convolution takes ``x`` (CPU, float32, channels_last)."""
    return (
        x.is_cpu
        and x.dtype == torch.float32
        and x.is_contiguous(memory_format=torch.channels_last)
        and torch.backends.mkldnn.is_available()
    )


class FastConv(nn.Module):
    """A convolution with BatchNorm folded in and its activation fused (inference only).

    ``same`` convolutions keep TensorFlow's padding at any input size. Where it is asymmetric (one
    more row or column after than before: strided layers at even sizes) the kernel gets one
    leading zero row or column and the convolution pads symmetrically by the larger amount: the
    same sums, with no padded copy of the input and no cropped output. On CUDA the convolution
    pads symmetrically by enough and its output is cropped instead (a view; not yet measured on a
    GPU). ``pad_input`` copies the input into a zero-bordered buffer (cheaper for the stem's three
    channels)."""

    def __init__(
        self,
        conv: nn.Conv2d,
        bn: nn.BatchNorm2d | None,
        act: str | None,
        *,
        pad_input: bool = False,
        onednn: bool = False,
        export: bool = False,
    ) -> None:
        super().__init__()
        weight, bias = _fold_bn(conv, bn)
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)
        self.stride = tuple(conv.stride)
        self.dilation = tuple(conv.dilation)
        self.groups = conv.groups
        self.kernel = tuple(conv.kernel_size)
        self.same = isinstance(conv, PaddedConv2d)
        self.padding = (0, 0) if self.same else tuple(conv.padding)  # type: ignore[arg-type]
        self.act = act
        self.pad_input = pad_input
        self.export = export
        self.onednn = onednn and not export and act in (None, *_ONEDNN_ACTS)
        self._plans: dict[tuple[int, int, str], _Plan] = {}
        self._extended: dict[tuple[tuple[int, int], torch.device, torch.dtype], torch.Tensor] = {}
        #: pad_input's zero-bordered copy of the input, kept between calls (a fresh large tensor
        #: costs page faults, far more than the copy), and per thread the layout whose border is zero
        self._inputs = _Pool()
        self._borders: dict[int, tuple[int, torch.Size, tuple[int, int, int, int]]] = {}
        #: the functional form for torch.compile computes a larger output and crops it (a view the
        #: compiler fuses); ONNX gets the asymmetric pads in its Conv node instead
        self.crop_when_functional = False
        #: the model's kept memory (eager CPU path): an output of FRESH_ALLOC_BYTES or more goes
        #: into ``slot`` there; a residual sum is written over the residual (the block's input)
        self.pool: _Pool | None = None
        self.slot = "expand"

    def extra_repr(self) -> str:
        out, inp = self.weight.shape[0], self.weight.shape[1] * self.groups
        return (
            f"{inp}, {out}, kernel={self.kernel}, stride={self.stride}, groups={self.groups}, act={self.act}, "
            f"same={self.same}, onednn={self.onednn}"
        )

    def _plan(self, height: int, width: int, device: str = "cpu") -> _Plan:
        plan = self._plans.get((height, width, device))
        if plan is None:
            ph, ch, top, bottom = axis_plan(height, self.kernel[0], self.stride[0])
            pw, cw, left, right = axis_plan(width, self.kernel[1], self.stride[1])
            out_h, out_w = math.ceil(height / self.stride[0]), math.ceil(width / self.stride[1])
            if (top, bottom, left, right) == (ph, ph, pw, pw):
                plan = _Plan(None, (ph, pw))
            elif (self.export and self.crop_when_functional) or (device == "cuda" and not self.pad_input):
                # on CUDA too: cuDNN keeps its k3/k5 depthwise kernels, the crop is a view
                plan = _Plan(None, (ph, pw), crop=(ch, cw, out_h, out_w))
            elif self.export or self.pad_input:
                plan = _Plan((left, right, top, bottom), (0, 0))
            else:  # after − before is 0 or 1 per axis: one leading zero row/column in the kernel
                plan = _Plan(None, (bottom, right), extend=(bottom - top, right - left))
            self._plans[(height, width, device)] = plan
        return plan

    def _weight(self, extend: tuple[int, int]) -> torch.Tensor:
        """The folded kernel, with ``extend`` leading zero rows and columns."""
        if extend == (0, 0):
            return self.weight
        key = (extend, self.weight.device, self.weight.dtype)
        weight = self._extended.get(key)
        if weight is None:
            weight = F.pad(self.weight, (extend[1], 0, extend[0], 0)).contiguous(memory_format=torch.channels_last)
            self._extended[key] = weight
        return weight

    def _output_shape(self, x: torch.Tensor, padding: tuple[int, int], weight: torch.Tensor) -> tuple[int, ...]:
        n, _, h, w = x.shape
        (kh, kw), (sh, sw), (dh, dw) = weight.shape[2:], self.stride, self.dilation
        return (
            n,
            weight.shape[0],
            (h + 2 * padding[0] - dh * (kh - 1) - 1) // sh + 1,
            (w + 2 * padding[1] - dw * (kw - 1) - 1) // sw + 1,
        )

    def _into_kept_memory(
        self, x: torch.Tensor, padding: tuple[int, int], residual: torch.Tensor | None, weight: torch.Tensor
    ) -> torch.Tensor | None:
        """oneDNN's convolution adding in place: onto the residual (the block input, read by nobody
        after), or, for an output of FRESH_ALLOC_BYTES or more, onto zeros in the kept memory.
        None where neither applies (then a fresh tensor is cheaper)."""
        if self.pool is None or not _onednn_ok(x):
            return None
        shape = self._output_shape(x, padding, weight)
        if residual is not None:
            if self.act is not None or not _onednn_ok(residual) or tuple(residual.shape) != shape:
                return None
            other = residual
        elif math.prod(shape) * x.element_size() >= FRESH_ALLOC_BYTES:
            other = self.pool.channels_last(shape, x, self.slot).zero_()  # type: ignore[arg-type]
        else:
            return None
        y = torch.ops.mkldnn._convolution_pointwise_.binary(
            other, x, weight, self.bias, list(padding), list(self.stride), list(self.dilation), self.groups,
            "add", 1.0, None, [], None,
        )  # fmt: skip
        return _ACT_FUNCS[self.act](y) if self.act is not None else y

    def _conv(
        self, x: torch.Tensor, padding: tuple[int, int], residual: torch.Tensor | None, extend: tuple[int, int] = (0, 0)
    ) -> torch.Tensor:
        weight = self._weight(extend)
        if (y := self._into_kept_memory(x, padding, residual, weight)) is not None:
            return y
        if self.onednn and x.is_cpu and x.dtype == torch.float32:
            if residual is not None and self.act is None:
                return torch.ops.mkldnn._convolution_pointwise.binary(
                    x, residual, weight, self.bias, list(padding), list(self.stride), list(self.dilation),
                    self.groups, "add", 1.0, None, [], None,
                )  # fmt: skip
            attr, scalars = _ONEDNN_ACTS[self.act] if self.act else ("none", [])
            y = torch.ops.mkldnn._convolution_pointwise(
                x, weight, self.bias, list(padding), list(self.stride), list(self.dilation), self.groups,
                attr, scalars, "",
            )  # fmt: skip
        else:
            y = F.conv2d(x, weight, self.bias, self.stride, padding, self.dilation, self.groups)
            if self.act is not None:
                y = _ACT_FUNCS[self.act](y)
        if residual is not None:
            y = y + residual if self.export else y.add_(residual)
        return y

    def _padded_input(self, x: torch.Tensor, pad: tuple[int, int, int, int]) -> torch.Tensor:
        """``x`` copied into a channels_last buffer with a zero border (left, right, top, bottom),
        kept between calls; the border is zeroed again only when the buffer or its layout changes."""
        n, c, h, w = x.shape
        left, right, top, bottom = pad
        out = self._inputs.channels_last((n, c, h + top + bottom, w + left + right), x, "in")
        layout = (out.data_ptr(), out.shape, pad)
        if self._borders.get(threading.get_ident()) != layout:
            _zero_border(out, pad)
            self._borders[threading.get_ident()] = layout
        out[:, :, top : top + h, left : left + w].copy_(x)
        return out

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        if not self.same:
            return self._conv(x, self.padding, residual)  # type: ignore[arg-type]
        plan = self._plan(int(x.shape[-2]), int(x.shape[-1]), x.device.type)
        if plan.pre_pad is not None and self.export:
            y = _AsymmetricConv.apply(x, self.weight, self.bias, plan.pre_pad, self.stride, self.dilation, self.groups)
            y = _ACT_FUNCS[self.act](y) if self.act is not None else y
            return y + residual if residual is not None else y
        if plan.pre_pad is not None:
            is_cl = x.is_contiguous(memory_format=torch.channels_last)
            x = self._padded_input(x, plan.pre_pad) if is_cl else F.pad(x, plan.pre_pad)
        y = self._conv(x, plan.padding, residual if plan.crop is None else None, plan.extend)
        if plan.crop is not None:
            top, left, height, width = plan.crop
            y = y[:, :, top : top + height, left : left + width]
            if residual is not None:
                y = y + residual
        return y


class _AsymmetricConv(torch.autograd.Function):
    """Zero padding (left, right, top, bottom) then a convolution; exported as ONE ONNX Conv with
    asymmetric ``pads`` (ONNX allows them), so ONNX Runtime runs no Pad node."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, pad: tuple, stride: tuple,
                dilation: tuple, groups: int) -> torch.Tensor:  # fmt: skip
        return F.conv2d(F.pad(x, pad), weight, bias, stride, 0, dilation, groups)

    @staticmethod
    def symbolic(
        g: Any, x: Any, weight: Any, bias: Any, pad: tuple, stride: tuple, dilation: tuple, groups: int
    ) -> Any:
        left, right, top, bottom = pad
        return g.op(
            "Conv", x, weight, bias, pads_i=[top, left, bottom, right], strides_i=list(stride),
            dilations_i=list(dilation), group_i=groups, kernel_shape_i=list(weight.type().sizes()[2:]),
        )  # fmt: skip


class FastSE(nn.Module):
    """Squeeze-excitation on the pooled vector as two matrix products; the gate multiplies in place."""

    def __init__(self, se: SqueezeExcite, export: bool = False) -> None:
        super().__init__()
        self.register_buffer("w1", se.reduce.weight.detach().flatten(1).clone())
        self.register_buffer("b1", se.reduce.bias.detach().clone())
        self.register_buffer("w2", se.expand.weight.detach().flatten(1).clone())
        self.register_buffer("b2", se.expand.bias.detach().clone())
        self.act = _activation_name(se.act) or "identity"
        self.export = export

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.export:  # 1×1 convolutions: ONNX Runtime keeps its blocked layout through them
            s = F.conv2d(F.adaptive_avg_pool2d(x, 1), self.w1[:, :, None, None], self.b1)
            s = _ACT_FUNCS[self.act](s) if self.act != "identity" else s
            return x * torch.sigmoid(F.conv2d(s, self.w2[:, :, None, None], self.b2))
        s = F.linear(x.mean((2, 3)), self.w1, self.b1)
        s = _ACT_FUNCS[self.act](s) if self.act != "identity" else s
        gate = torch.sigmoid(F.linear(s, self.w2, self.b2))[:, :, None, None]
        if not self.export and x.is_contiguous(memory_format=torch.channels_last):
            return x.mul_(gate)
        return x * gate  # a cropped view: the product is dense again, for the next convolution


def _use_pool(pool: _Pool | None, **slots: FastConv | None) -> None:
    """Let these convolutions keep large outputs in ``pool``, each in the named slot."""
    for slot, conv in slots.items():
        if conv is not None:
            conv.pool, conv.slot = pool, slot


def _fast_cna(module: nn.Module, *, pad_input: bool = False, onednn: bool, export: bool) -> FastConv:
    assert isinstance(module, ConvNormAct)
    return FastConv(
        module.conv, module.bn, _activation_name(module.act), pad_input=pad_input, onednn=onednn, export=export
    )


class FastMBConv(nn.Module):
    """MBConv for inference: expand → depthwise → SE → project with the residual fused."""

    def __init__(self, block: MBConv, onednn: bool, export: bool, pool: _Pool | None = None) -> None:
        super().__init__()
        kw = {"onednn": onednn, "export": export}
        self.expand = _fast_cna(block.expand, **kw) if block.expand is not None else None
        self.depthwise = _fast_cna(block.depthwise, **kw)
        self.se = FastSE(block.se, export) if block.se is not None else None
        self.project = _fast_cna(block.project, **kw)
        self.has_skip = block.has_skip
        if not export:
            _use_pool(pool, expand=self.expand, dw=self.depthwise, out=self.project)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.depthwise(self.expand(x) if self.expand is not None else x)
        if self.se is not None:
            out = self.se(out)
        return self.project(out, x if self.has_skip else None)


class FastDepthwiseSeparable(nn.Module):
    """Depthwise-separable block for inference."""

    def __init__(self, block: DepthwiseSeparable, onednn: bool, export: bool, pool: _Pool | None = None) -> None:
        super().__init__()
        kw = {"onednn": onednn, "export": export}
        self.depthwise = _fast_cna(block.depthwise, **kw)
        self.se = FastSE(block.se, export) if block.se is not None else None
        self.pointwise = _fast_cna(block.pointwise, **kw)
        self.has_skip = block.has_skip
        if not export:
            _use_pool(pool, dw=self.depthwise, out=self.pointwise)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.depthwise(x)
        if self.se is not None:
            out = self.se(out)
        return self.pointwise(out, x if self.has_skip else None)


def _convert_generic(module: nn.Module, onednn: bool, export: bool) -> nn.Module:
    """Any other block: its own forward, with each ConvNormAct and SE swapped for the fast ones."""
    for name, child in list(module.named_children()):
        if isinstance(child, ConvNormAct):
            setattr(module, name, _fast_cna(child, onednn=onednn, export=export))
        elif isinstance(child, SqueezeExcite):
            setattr(module, name, FastSE(child, export))
        else:
            _convert_generic(child, onednn, export)
    return module


def _convert_block(block: nn.Module, onednn: bool, export: bool, pool: _Pool) -> nn.Module:
    if isinstance(block, MBConv):
        return FastMBConv(block, onednn, export, pool)
    if isinstance(block, DepthwiseSeparable):
        return FastDepthwiseSeparable(block, onednn, export, pool)
    return _convert_generic(copy.deepcopy(block), onednn, export)


def _early_stages(spec: Any) -> tuple[int, list[int]]:
    """How many leading stages run at a stride below 16 (the stage reaching 16 included), and the
    element count per image of each one's widest activation at the description's resolution."""
    size = math.ceil(spec.resolution / spec.stem_stride)
    reduction = spec.stem_stride
    if spec.stem_pool:
        size, reduction = math.ceil(size / 2), reduction * 2
    widths = [spec.stem_channels * size * size]
    for index, block in enumerate(spec.blocks):
        wide = block.in_channels * max(block.expand_ratio, 1)
        widths.append(int(wide * size * size))
        size, reduction = math.ceil(size / block.stride), reduction * block.stride
        widths.append(int(block.out_channels * max(block.expand_ratio, 1) * size * size))
        if reduction >= 16:
            return index + 1, widths
    return 0, []


class FastEfficientNet(nn.Module):
    """The inference-only module :func:`optimize` returns; same inputs and outputs as the model."""

    def __init__(self, model: nn.Module, *, onednn: bool = False, export: bool = False) -> None:
        super().__init__()
        self.spec = model.spec
        self.num_classes = model.num_classes
        self.features_only = model.features_only
        self.feature_info = model.feature_info
        self._feature_stages = list(model._feature_stages)
        self.export = export
        self.channels_last_input = not export
        # the stem's input has few channels: padding it is cheaper than cropping the wide output
        self.stem = _fast_cna(model.stem, pad_input=True, onednn=onednn, export=export)
        self.stem_pool = copy.deepcopy(model.stem_pool)
        pool = _Pool()  # shared by all blocks: they run one after another
        self.stages = nn.ModuleList(
            nn.Sequential(*[_convert_block(block, onednn, export, pool) for block in stage]) for stage in model.stages
        )
        self.head = (
            _fast_cna(model.head, onednn=onednn, export=export)
            if isinstance(model.head, ConvNormAct)
            else nn.Identity()
        )
        if not export:
            _use_pool(pool, out=self.stem, expand=self.head if isinstance(self.head, FastConv) else None)
        classifier = model.classifier
        self.classifier = copy.deepcopy(classifier).requires_grad_(False) if isinstance(classifier, nn.Linear) else None
        self._early_stages, self._early_widths = _early_stages(model.spec)
        #: per input shape: whether the early stages run in chunks (timed on CPU, never on CUDA)
        self.tuner = ShapeTuner()
        self.eval()

    def train(self, mode: bool = True) -> FastEfficientNet:
        if mode:
            raise UserError("an optimized model is for inference only; train the model it was made from")
        return super().train(False)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last_input else x

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> Any:
        x = self._prepare(x)
        if self.features_only:
            x = self.stem(x)
            # on the CPU path later layers may overwrite a map (kept memory, residual sums in place)
            keep = (lambda t: t.clone()) if _onednn_ok(x) and not self.export else (lambda t: t)
            maps: list[torch.Tensor] = [keep(x)] if -1 in self._feature_stages else []
            x = self.stem_pool(x)
            for index, stage in enumerate(self.stages):
                x = stage(x)
                if index in self._feature_stages:
                    maps.append(keep(x))
            return maps
        return self._classify(x) if self.export else self._classify_tuned(x)

    def _classify(self, x: torch.Tensor, chunk: int = 0) -> torch.Tensor:
        """The whole network on a prepared input; with ``chunk``, the stem and the early stages run
        ``chunk`` images at a time, so that their wide activations stay in cache."""
        if chunk:
            early = None
            for start in range(0, x.shape[0], chunk):
                y = self.stem_pool(self.stem(x[start : start + chunk]))
                for stage in self.stages[: self._early_stages]:
                    y = stage(y)
                if early is None:  # a chunk's result may sit in kept memory: copy it out
                    early = y.new_empty((x.shape[0], *y.shape[1:])).contiguous(memory_format=torch.channels_last)
                early[start : start + chunk].copy_(y)
            x = early  # type: ignore[assignment]
            rest = self.stages[self._early_stages :]
        else:
            x = self.stem_pool(self.stem(x))
            rest = self.stages
        for stage in rest:
            x = stage(x)
        x = self.head(x).mean((2, 3))
        return self.classifier(x) if self.classifier is not None else x

    def _classify_tuned(self, x: torch.Tensor) -> torch.Tensor:
        """Whole batch or early stages in chunks, whichever ran faster here for this input shape
        (decided on the first calls, which alternate between the two; both give the same results)."""
        key = (x.device.type, *x.shape)
        if self.tuner.choice(key) is None and not (x.device.type == "cpu" and self._chunk_size(x)):
            self.tuner.decide(key, False)  # no chunks worth trying for this input: nothing to time
        return self.tuner.run(key, lambda chunked: self._classify(x, self._chunk_size(x) if chunked else 0))

    def _chunk_size(self, x: torch.Tensor) -> int:
        """Images per chunk for the early stages (0: not worth trying for this input)."""
        scale = x.shape[2] * x.shape[3] / self.spec.resolution**2
        widest = max(self._early_widths, default=0) * scale * x.element_size()
        if not widest:  # no stage reaches stride 16: nothing to run in chunks
            return 0
        chunk = max(int(CHUNK_CACHE_SHARE * _last_level_cache_bytes() // widest), 1)
        return chunk if chunk * 2 <= x.shape[0] else 0


class ShapeTuner:
    """Picks, per input key, the faster of two ways to compute the same thing. The first calls run
    the two ways in turn, two calls at a time, and time the second of each pair (the first absorbs
    what the other way left behind: cold caches, another thread pool still spinning); after
    ``timed`` timed calls of each, the way with the shorter median is kept for that key."""

    def __init__(self, timed: int = TUNING_CALLS) -> None:
        self.timed = timed
        self._timings: dict[Any, tuple[list[float], list[float]]] = {}
        self._calls: dict[Any, int] = {}
        self._chosen: dict[Any, bool] = {}

    @property
    def calls_to_decide(self) -> int:
        """Calls of a key before its way is kept."""
        return 4 * self.timed

    def choice(self, key: Any) -> bool | None:
        """The way kept for ``key`` (False: the first, True: the second); None while undecided."""
        return self._chosen.get(key)

    def kept(self) -> dict[Any, bool]:
        """Every key decided so far and its way (True: the second)."""
        return dict(self._chosen)

    def decide(self, key: Any, second: bool) -> None:
        """Keep a way for ``key`` without timing (when only one is possible there)."""
        self._chosen[key] = second

    def run(self, key: Any, call: Callable[[bool], Any]) -> Any:
        """``call(second)`` with the way kept for ``key``, or, while tuning, with the way whose turn it is."""
        if key in self._chosen:
            return call(self._chosen[key])
        index = self._calls.get(key, 0)
        self._calls[key] = index + 1
        use_second = bool(index // 2 % 2)
        start = time.perf_counter()
        out = call(use_second)
        if index % 2:
            first, second = self._timings.setdefault(key, ([], []))
            (second if use_second else first).append(time.perf_counter() - start)
            if len(second) >= self.timed:
                self._chosen[key] = statistics.median(second) < statistics.median(first)
                del self._timings[key], self._calls[key]
        return out


class OrtModule(nn.Module):
    """An ONNX model run by ONNX Runtime behind a module's call: torch tensors in, torch tensors out.

    With ``split`` and ``threads`` > 1, a batch may instead be split into ``threads`` parts that
    run at once in one-thread sessions (ONNX Runtime releases the GIL while it runs): whole images
    per thread skip the synchronisation after every operator that splitting each operator between
    threads pays on a network of many small layers. The first calls per input shape time both ways
    and keep the faster. With ``channels_last``, channels_last inputs go in as they lie (NHWC) to a
    copy of the model that starts with a transpose, which ONNX Runtime folds into its own layout
    change, instead of being copied to NCHW first. Sessions are made on first use of each kind."""

    def __init__(
        self, onnx_model: bytes, threads: int | None = None, *, split: bool = True, channels_last: bool = True
    ) -> None:
        super().__init__()
        self.onnx_model = onnx_model
        self.threads = threads or torch.get_num_threads()
        self.split = split and self.threads > 1
        self.channels_last = channels_last
        self._sessions: dict[tuple[bool, int], Any] = {}
        self._lock = threading.Lock()
        #: per input layout and shape: whether the batch runs split between threads
        self.tuner = ShapeTuner(ORT_TUNING_CALLS)
        self._pool: ThreadPoolExecutor | None = None
        self.session(False, self.threads)  # a broken model fails here, not on the first call

    def session(self, nhwc: bool, threads: int) -> Any:
        """The session for NHWC or NCHW input with ``threads`` intra-op threads (made once)."""
        key = (nhwc, threads)
        with self._lock:
            if key not in self._sessions:
                model = _nhwc_input(self.onnx_model) if nhwc else self.onnx_model
                self._sessions[key] = ort_session(model, threads)
            return self._sessions[key]

    def forward(self, x: torch.Tensor) -> Any:
        x = x.detach().cpu()
        nhwc = self.channels_last and x.dim() == 4 and not x.is_contiguous()
        nhwc = nhwc and x.is_contiguous(memory_format=torch.channels_last)
        # numpy's copy, not torch's: torch's OpenMP threads would spin on after it, on the cores
        # ONNX Runtime is about to use (that halved its speed at batch 1)
        array = x.permute(0, 2, 3, 1).numpy() if nhwc else np.ascontiguousarray(x.numpy())
        if self.split and array.shape[0] > 1:
            key = (nhwc, *array.shape)
            outputs = self.tuner.run(
                key, lambda split: self._run_split(array, nhwc) if split else self._run(array, nhwc)
            )
        else:
            outputs = self._run(array, nhwc)
        tensors = [torch.from_numpy(out) for out in outputs]
        return tensors if len(tensors) > 1 else tensors[0]

    def _run(self, array: np.ndarray, nhwc: bool) -> list[np.ndarray]:
        session = self.session(nhwc, self.threads)
        return session.run(None, {session.get_inputs()[0].name: array})

    def _run_split(self, array: np.ndarray, nhwc: bool) -> list[np.ndarray]:
        """The batch in up to ``threads`` parts at once, one on this thread; outputs concatenated."""
        session = self.session(nhwc, 1)
        name = session.get_inputs()[0].name
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads - 1, thread_name_prefix="effnet-ort")
        parts = np.array_split(array, min(self.threads, array.shape[0]))
        pending = [self._pool.submit(session.run, None, {name: part}) for part in parts[1:]]
        results = [session.run(None, {name: parts[0]})] + [future.result() for future in pending]
        return [np.concatenate(outs) for outs in zip(*results, strict=True)]

    def __getstate__(self) -> dict[str, Any]:  # sessions, lock and threads are not copied; made anew
        return {**self.__dict__, "_sessions": {}, "_lock": None, "_pool": None, "tuner": ShapeTuner(self.tuner.timed)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__({**state, "_lock": threading.Lock()})


def _nhwc_input(onnx_model: bytes) -> bytes:
    """The same model taking its image input as NHWC: a Transpose to NCHW placed first."""
    import onnx

    model = onnx.load_from_string(onnx_model)
    graph = model.graph
    image = graph.input[0]
    inner = f"{image.name}_nchw"
    for node in graph.node:
        node.input[:] = [inner if name == image.name else name for name in node.input]
    graph.node.insert(0, onnx.helper.make_node("Transpose", [image.name], [inner], perm=[0, 3, 1, 2]))
    dims = [copy.deepcopy(dim) for dim in image.type.tensor_type.shape.dim]
    for dim, source in zip(image.type.tensor_type.shape.dim, (dims[0], dims[2], dims[3], dims[1]), strict=True):
        dim.CopyFrom(source)
    return model.SerializeToString()


def ort_session(onnx_model: bytes | str, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session with all graph optimisations and ``threads`` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(onnx_model, options, providers=["CPUExecutionProvider"])


def onnx_bytes(module: nn.Module, example: torch.Tensor, opset: int = 17) -> bytes:
    """``module`` exported to ONNX (batch axis dynamic), as bytes."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter's notices
        torch.onnx.export(
            module,
            (example,),
            buffer,
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )
    return buffer.getvalue()


def optimize(
    model: nn.Module,
    *,
    backend: str = "eager",
    input_size: int | None = None,
    threads: int | None = None,
    onednn: bool = False,
) -> nn.Module:
    """An inference-only module computing ``model``'s eval-mode function, faster.

    ``backend``: ``"eager"`` (folded, fused PyTorch module), ``"compile"`` (that module through
    :func:`torch.compile`, weights frozen) or ``"onnxruntime"`` (exported to ONNX and run in an
    ONNX Runtime session with ``threads`` threads; ``input_size`` picks the exported resolution,
    the model's own by default). ``onednn=True`` runs each convolution, its activation and residual
    sum as one oneDNN kernel on CPU (measured no faster than PyTorch's own kernels on this build).
    The model itself is left unchanged; inputs may be any layout (converted to channels_last)."""
    from effnet.models.efficientnet import EfficientNet

    if not isinstance(model, EfficientNet):
        raise UserError(f"optimize expects an effnet model, got {type(model).__name__}")
    if backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    onednn = onednn and device.type == "cpu" and dtype == torch.float32 and torch.backends.mkldnn.is_available()
    if backend == "eager":
        return FastEfficientNet(model, onednn=onednn).to(device)
    if backend == "compile":
        # the functional (export) form: no in-place tricks or buffers, the compiler plans memory itself
        fast = FastEfficientNet(model, onednn=False, export=True).to(device)
        fast.channels_last_input = True
        for module in fast.modules():
            if isinstance(module, FastConv):  # a cropped view fuses into the consumer; a pad is a copy
                module.crop_when_functional = True
        return torch.compile(fast, options={"freezing": True})  # type: ignore[return-value]
    if model.features_only:
        raise UserError("the onnxruntime backend supports classification models, not features_only")
    size = input_size or model.spec.resolution
    fast = FastEfficientNet(model, onednn=False, export=True).cpu().float()
    example = torch.randn(1, model.in_chans, size, size)
    return OrtModule(onnx_bytes(fast, example), threads)
