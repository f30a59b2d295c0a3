"""The fast path's convolution: BatchNorm folded in, activation fused, TensorFlow 'same' padding at
about the cost of symmetric padding, the weight in oneDNN's own layout (:class:`PackedWeights`),
large outputs in kept memory where that is faster and residual sums in place.

Padding arithmetic comes from :mod:`effnet.models.padding` alone; this module only decides, per
input size and device, which of its plans a convolution runs (:meth:`FastConv._plan`), and gives
the export forms two ways to pad at any input size: the operator ``effnet::same_conv2d`` (written
to ONNX as a Conv with ``auto_pad=SAME_UPPER``, which is TensorFlow's rule, so ONNX Runtime works
the pads out from each input's shape) and :func:`same_pad` compiled by TorchScript (the pads
computed in the saved graph from the input's shape)."""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from effnet.infer.fold import ACTIVATIONS, ONEDNN_ACTIVATIONS, fold_batchnorm
from effnet.infer.pool import KeptMemory, keeps
from effnet.models.layers import PaddedConv2d
from effnet.models.padding import axis_plan, same_padding

#: How an export form pads its 'same' convolutions: at the traced size only, or at any size for ONNX
#: (``effnet::same_conv2d``) or TorchScript (:func:`same_pad`, scripted).
ANY_SIZE = ("onnx", "torchscript")


def same_pad(x: torch.Tensor, kernel: list[int], stride: list[int]) -> torch.Tensor:
    """``x`` zero-padded TensorFlow's 'same' way for its own height and width (TorchScript-compatible)."""
    top, bottom = same_padding(x.size(2), kernel[0], stride[0])
    left, right = same_padding(x.size(3), kernel[1], stride[1])
    return F.pad(x, [left, right, top, bottom])


@functools.cache
def scripted_same_pad() -> torch.jit.ScriptFunction:
    """:func:`same_pad` compiled by TorchScript, so that a traced module pads for each input's size."""
    return torch.jit.script(same_pad)


@torch.library.custom_op("effnet::same_conv2d", mutates_args=())
def same_conv2d(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, stride: list[int], groups: int
) -> torch.Tensor:
    """A convolution with TensorFlow 'same' padding at any input size, as one operator: what the
    ONNX export writes as a Conv with ``auto_pad=SAME_UPPER`` (:mod:`effnet.export.onnx`)."""
    return F.conv2d(same_pad(x, list(weight.shape[2:]), stride), weight, bias, stride, 0, 1, groups)


@same_conv2d.register_fake
def _same_conv2d_shape(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, stride: list[int], groups: int
) -> torch.Tensor:
    n, _, height, width = x.shape
    return x.new_empty((n, weight.shape[0], -(-height // stride[0]), -(-width // stride[1])))


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


#: Input shapes per convolution whose oneDNN weight layout is kept (a batch, its chunks, a last chunk).
PACKED_SHAPES = 4


class PackedWeights:
    """A convolution's weight in oneDNN's own blocked layout, per input shape it was made for (what
    Inductor's freezing does; an eager oneDNN call otherwise reorders a plain weight on every call).
    At most :data:`PACKED_SHAPES` kept, the oldest dropped; a copy or pickle starts empty."""

    def __init__(self) -> None:
        self._packed: dict[tuple[object, ...], torch.Tensor] = {}

    def get(self, conv: FastConv, weight: torch.Tensor, padding: tuple[int, int], x: torch.Tensor) -> torch.Tensor:
        """``weight`` (CPU, float32 or bfloat16) laid out for ``conv`` on inputs shaped like ``x``."""
        key = (weight.data_ptr(), tuple(weight.shape), padding, tuple(x.shape))
        packed = self._packed.get(key)
        if packed is None:
            packed = torch._C._nn.mkldnn_reorder_conv2d_weight(
                weight.contiguous().to_mkldnn(), list(padding), list(conv.stride), list(conv.dilation), conv.groups,
                list(x.shape),
            )  # fmt: skip
            if len(self._packed) >= PACKED_SHAPES:
                del self._packed[next(iter(self._packed))]
            self._packed[key] = packed
        return packed

    def __len__(self) -> int:
        return len(self._packed)

    def __deepcopy__(self, memo: dict[int, object]) -> PackedWeights:
        return PackedWeights()

    def __reduce__(self) -> tuple[type[PackedWeights], tuple[()]]:
        return PackedWeights, ()


#: What the fast path's oneDNN convolutions compute in (bfloat16 where the CPU has its instructions).
ONEDNN_DTYPES = (torch.float32, torch.bfloat16)


def onednn_ok(x: torch.Tensor) -> bool:
    """Whether oneDNN's fused convolutions take ``x`` (CPU, float32 or bfloat16, channels_last)."""
    return (
        x.is_cpu
        and x.dtype in ONEDNN_DTYPES
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
    channels). With ``export`` the module is functional (no in-place writes, no kept memory) and
    pads the input before the convolution, which the ONNX exporter turns into the Conv node's own
    asymmetric ``pads``. With ``onednn`` (CPU, float32 or bfloat16, channels_last inputs) it runs as
    oneDNN's fused kernel on a weight reordered once per input shape; measured on a Zen 2 VM with glibc
    tuned, that reorder on every call had cost 3% of the fast path (``benchmarks/SPEED.md``). A
    bfloat16 convolution may keep a float32 ``bias``: oneDNN adds it before the output is rounded
    (only its kernel adding a residual sum takes a bias in the input's precision alone)."""

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
        weight, bias = fold_batchnorm(conv, bn)
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
        self.onednn = onednn and not export and act in (None, *ONEDNN_ACTIVATIONS)
        self._plans: dict[tuple[int, int, str], _Plan] = {}
        self._extended: dict[tuple[tuple[int, int], torch.device, torch.dtype], torch.Tensor] = {}
        self._packed = PackedWeights()
        self._low_bias: tuple[tuple[torch.dtype, int], torch.Tensor] | None = None
        #: pad_input's zero-bordered copy of the input, kept between calls (a fresh large tensor
        #: costs page faults, far more than the copy)
        self._inputs = KeptMemory()
        #: the functional form for torch.compile computes a larger output and crops it (a view the
        #: compiler fuses); ONNX gets the asymmetric pads in its Conv node instead
        self.crop_when_functional = False
        #: an export form's 'same' padding at any input size: None (the traced size), "onnx" or
        #: "torchscript" (see :data:`ANY_SIZE`)
        self.any_size: str | None = None
        #: the model's kept memory (eager CPU path): an output that :func:`~effnet.infer.pool.keeps`
        #: goes into ``slot`` there; a residual sum is written over the residual (the block's input)
        self.pool: KeptMemory | None = None
        self.slot = "expand"
        #: the output cast to this dtype (the last float32 convolution of a reduced-precision model)
        self.output_dtype: torch.dtype | None = None

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

    def _bias_in(self, dtype: torch.dtype) -> torch.Tensor:
        """The bias in ``dtype``, which oneDNN's adding kernel needs (a residual sum's rounding dwarfs the bias's)."""
        if self.bias.dtype == dtype:
            return self.bias
        key = (dtype, self.bias.data_ptr())
        if self._low_bias is None or self._low_bias[0] != key:
            self._low_bias = (key, self.bias.to(dtype))
        return self._low_bias[1]

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
        after), or, for an output the pool keeps, onto zeros in the kept memory. None where neither
        applies (then a fresh tensor is cheaper)."""
        if self.pool is None or not onednn_ok(x) or self.bias.dtype != x.dtype:
            return None  # oneDNN's adding convolution takes a bias in the input's precision only
        shape = self._output_shape(x, padding, weight)
        if residual is not None:
            if self.act is not None or not onednn_ok(residual) or tuple(residual.shape) != shape:
                return None
            other = residual
        elif self.pool.active and keeps(math.prod(shape) * x.element_size()):
            other = self.pool.channels_last(shape, x, self.slot).zero_()  # type: ignore[arg-type]
        else:
            return None
        y = torch.ops.mkldnn._convolution_pointwise_.binary(
            other, x, self._packed.get(self, weight, padding, x), self.bias, list(padding), list(self.stride),
            list(self.dilation), self.groups, "add", 1.0, None, [], None,
        )  # fmt: skip
        return ACTIVATIONS[self.act](y) if self.act is not None else y

    def _conv(
        self, x: torch.Tensor, padding: tuple[int, int], residual: torch.Tensor | None, extend: tuple[int, int] = (0, 0)
    ) -> torch.Tensor:
        weight = self._weight(extend)
        if (y := self._into_kept_memory(x, padding, residual, weight)) is not None:
            return y
        if self.onednn and onednn_ok(x):
            weight = self._packed.get(self, weight, padding, x)
            if residual is not None and self.act is None:
                return torch.ops.mkldnn._convolution_pointwise.binary(
                    x, residual, weight, self._bias_in(x.dtype), list(padding), list(self.stride), list(self.dilation),
                    self.groups, "add", 1.0, None, [], None,
                )  # fmt: skip
            attr, scalars = ONEDNN_ACTIVATIONS[self.act] if self.act else ("none", [])
            y = torch.ops.mkldnn._convolution_pointwise(
                x, weight, self.bias, list(padding), list(self.stride), list(self.dilation), self.groups,
                attr, scalars, "",
            )  # fmt: skip
        else:
            y = F.conv2d(x, weight, self.bias, self.stride, padding, self.dilation, self.groups)
            if self.act is not None:
                y = ACTIVATIONS[self.act](y)
        if residual is not None:
            y = y + residual if self.export else y.add_(residual)
        return y

    def _any_size(self, x: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
        """An export form's 'same' convolution whose padding follows each input's size."""
        if self.any_size == "onnx":
            y = same_conv2d(x, self.weight, self.bias, list(self.stride), self.groups)
        else:
            x = scripted_same_pad()(x, list(self.kernel), list(self.stride))
            y = F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)
        if self.act is not None:
            y = ACTIVATIONS[self.act](y)
        return y if residual is None else y + residual

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        y = self._forward(x, residual)
        return y if self.output_dtype is None else y.to(self.output_dtype)

    def _forward(self, x: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
        if not self.same:
            return self._conv(x, self.padding, residual)  # type: ignore[arg-type]
        if self.any_size is not None:
            return self._any_size(x, residual)
        plan = self._plan(int(x.shape[-2]), int(x.shape[-1]), x.device.type)
        if plan.pre_pad is not None:
            if self.export or not x.is_contiguous(memory_format=torch.channels_last):
                x = F.pad(x, plan.pre_pad)
            else:
                x = self._inputs.padded_copy(x, plan.pre_pad)
        y = self._conv(x, plan.padding, residual if plan.crop is None else None, plan.extend)
        if plan.crop is not None:
            top, left, height, width = plan.crop
            y = y[:, :, top : top + height, left : left + width]
            if residual is not None:
                y = y + residual
        return y
