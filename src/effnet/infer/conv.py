"""The fast path's convolution: BatchNorm folded in, activation fused, TensorFlow 'same' padding at
about the cost of symmetric padding, the weight in oneDNN's own layout (:class:`PackedWeights`) and
residual sums in place. PyTorch's private oneDNN ops are called in one place, :func:`fused_conv2d`,
which falls back to :func:`torch.nn.functional.conv2d` where they are missing or untested.

Padding arithmetic comes from :mod:`effnet.models.padding` alone; this module only decides, per
input size and device, which of its plans a convolution runs (:meth:`FastConv._plan`), and gives
the export forms two ways to pad at any input size: the operator ``effnet::same_conv2d`` (written
to ONNX as a Conv with ``auto_pad=SAME_UPPER``, which is TensorFlow's rule, so ONNX Runtime works
the pads out from each input's shape) and :func:`same_pad` compiled by TorchScript (the pads
computed in the saved graph from the input's shape)."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from effnet.infer.fold import fold_batchnorm
from effnet.models.layers import ACTIVATIONS, PaddedConv2d
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


#: Input shapes per convolution whose oneDNN weight layout is kept (a few batch sizes or image sizes).
PACKED_SHAPES = 4

#: The torch releases (major, minor), lowest and highest, whose private oneDNN ops
#: :func:`fused_conv2d` was checked against; any other release runs the public convolution.
PRIVATE_OPS_TORCH = ((2, 13), (2, 14))


class PackedWeights:
    """A convolution's weight in oneDNN's own blocked layout, per input shape it was made for (what
    Inductor's freezing does; an eager oneDNN call otherwise reorders a plain weight on every call).
    At most :data:`PACKED_SHAPES` kept, the oldest dropped; a copy or pickle starts empty."""

    def __init__(self) -> None:
        self._packed: dict[tuple[object, ...], torch.Tensor] = {}

    def get(self, key: tuple[object, ...], pack: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The packed weight kept for ``key``, made by ``pack`` the first time."""
        packed = self._packed.get(key)
        if packed is None:
            packed = pack()
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


def torch_release(version: str | None = None) -> tuple[int, int] | None:
    """(major, minor) of a torch version string (this torch's by default), or None where it is unreadable."""
    parts = (version or torch.__version__).split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return None


@functools.cache
def private_ops_available() -> bool:
    """Whether :func:`fused_conv2d` may call PyTorch's private oneDNN ops here: this torch is a release
    within :data:`PRIVATE_OPS_TORCH`, built with oneDNN, and has the ops."""
    release = torch_release()
    if release is None or not PRIVATE_OPS_TORCH[0] <= release <= PRIVATE_OPS_TORCH[1]:
        return False
    try:
        ops = (torch.ops.mkldnn._convolution_pointwise, torch.ops.mkldnn._convolution_pointwise_)
        ops += (torch._C._nn.mkldnn_reorder_conv2d_weight,)
    except (AttributeError, RuntimeError):
        return False
    return all(ops) and torch.backends.mkldnn.is_available()


def onednn_ok(x: torch.Tensor) -> bool:
    """Whether oneDNN's fused convolutions take ``x`` (CPU, float32 or bfloat16, channels_last) here."""
    return (
        x.is_cpu
        and x.dtype in ONEDNN_DTYPES
        and x.is_contiguous(memory_format=torch.channels_last)
        and private_ops_available()
    )


def fused_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    padding: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
    *,
    act: str | None = None,
    residual: torch.Tensor | None = None,
    add_into_residual: bool = False,
    packed: PackedWeights | None = None,
) -> torch.Tensor:
    """``act(conv2d(x) + bias)``, or ``conv2d(x) + bias + residual`` (``act`` None), as one oneDNN kernel
    on a weight kept in oneDNN's layout in ``packed``; with ``add_into_residual`` the sum is written over
    ``residual`` (which must be dense, channels_last, of the output's shape and dtype, and of ``bias``'s).
    The only caller of PyTorch's private ops in effnet: where :func:`onednn_ok` refuses ``x`` or no
    ``packed`` is given, the same function through :func:`torch.nn.functional.conv2d`."""
    if packed is None or not onednn_ok(x) or (residual is not None and act is not None):
        y = F.conv2d(x, weight, bias, stride, padding, dilation, groups)
        y = ACTIVATIONS[act].apply(y) if act is not None else y
        return y if residual is None else y.add_(residual)
    key = (weight.data_ptr(), tuple(weight.shape), padding, tuple(x.shape))
    weight = packed.get(
        key,
        lambda: torch._C._nn.mkldnn_reorder_conv2d_weight(
            weight.contiguous().to_mkldnn(), list(padding), list(stride), list(dilation), groups, list(x.shape)
        ),
    )
    if residual is None:
        attr, scalars = ACTIVATIONS[act].onednn or ("none", ()) if act else ("none", ())
        return torch.ops.mkldnn._convolution_pointwise(
            x, weight, bias, list(padding), list(stride), list(dilation), groups, attr, list(scalars), ""
        )
    op = torch.ops.mkldnn._convolution_pointwise_ if add_into_residual else torch.ops.mkldnn._convolution_pointwise
    first, second = (residual, x) if add_into_residual else (x, residual)
    return op.binary(
        first, second, weight, bias, list(padding), list(stride), list(dilation), groups, "add", 1.0, None, [], None
    )


class FastConv(nn.Module):
    """A convolution with BatchNorm folded in and its activation fused (inference only).

    ``same`` convolutions keep TensorFlow's padding at any input size. Where it is asymmetric (one
    more row or column after than before: strided layers at even sizes) the kernel gets one
    leading zero row or column and the convolution pads symmetrically by the larger amount: the
    same sums, with no padded copy of the input and no cropped output. On CUDA the convolution
    pads symmetrically by enough and its output is cropped instead (a view). ``pad_input`` pads the input instead (cheaper for the stem's three channels). With
    ``export`` the module is functional (no in-place writes) and pads the input before the
    convolution, which the ONNX exporter turns into the Conv node's own asymmetric ``pads``. With
    ``onednn`` (CPU, float32 or bfloat16, channels_last inputs) it runs as oneDNN's fused kernel
    (:func:`fused_conv2d`) on a weight reordered once per input shape, and writes a residual sum over
    the residual. A bfloat16 convolution may keep a float32 ``bias``: oneDNN adds it before the output is rounded
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
        self.onednn = onednn and not export and (act is None or ACTIVATIONS[act].onednn is not None)
        self._plans: dict[tuple[int, int, str], _Plan] = {}
        self._extended: dict[tuple[tuple[int, int], torch.device, torch.dtype], torch.Tensor] = {}
        self._packed = PackedWeights()
        self._low_bias: tuple[tuple[torch.dtype, int], torch.Tensor] | None = None
        #: the functional form for torch.compile computes a larger output and crops it (a view the
        #: compiler fuses); ONNX gets the asymmetric pads in its Conv node instead
        self.crop_when_functional = False
        #: an export form's 'same' padding at any input size: None (the traced size), "onnx" or
        #: "torchscript" (see :data:`ANY_SIZE`)
        self.any_size: str | None = None
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

    def _conv(
        self, x: torch.Tensor, padding: tuple[int, int], residual: torch.Tensor | None, extend: tuple[int, int] = (0, 0)
    ) -> torch.Tensor:
        weight = self._weight(extend)
        if self.export:  # functional: no in-place writes
            y = F.conv2d(x, weight, self.bias, self.stride, padding, self.dilation, self.groups)
            y = ACTIVATIONS[self.act].apply(y) if self.act is not None else y
            return y if residual is None else y + residual
        # the residual sum written over the residual (the block's input, read by nobody after) where
        # oneDNN can: its adding kernel takes a bias in the input's precision only
        into_residual = (
            residual is not None
            and self.onednn
            and self.bias.dtype == x.dtype == residual.dtype
            and onednn_ok(residual)
            and tuple(residual.shape) == self._output_shape(x, padding, weight)
        )
        bias = self._bias_in(x.dtype) if residual is not None and not into_residual else self.bias
        return fused_conv2d(
            x, weight, bias, padding, self.stride, self.dilation, self.groups, act=self.act, residual=residual,
            add_into_residual=into_residual, packed=self._packed if self.onednn else None,
        )  # fmt: skip

    def _any_size(self, x: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
        """An export form's 'same' convolution whose padding follows each input's size."""
        if self.any_size == "onnx":
            y = same_conv2d(x, self.weight, self.bias, list(self.stride), self.groups)
        else:
            x = scripted_same_pad()(x, list(self.kernel), list(self.stride))
            y = F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)
        if self.act is not None:
            y = ACTIVATIONS[self.act].apply(y)
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
            x = F.pad(x, plan.pre_pad)  # keeps channels_last
        y = self._conv(x, plan.padding, residual if plan.crop is None else None, plan.extend)
        if plan.crop is not None:
            top, left, height, width = plan.crop
            y = y[:, :, top : top + height, left : left + width]
            if residual is not None:
                y = y + residual
        return y
