"""The inference fast path: :func:`optimize` turns a built model into an inference-only module.

What it does to the plain model, each measured on CPU (see ``benchmarks/SPEED.md``):

- BatchNorm is folded into the convolution before it (weights scaled, a bias added).
- Tensors are channels_last throughout; activations and residual sums run in place. Optionally
  (``onednn=True``, CPU float32) each convolution, its activation and a residual sum run as one
  fused oneDNN kernel; on this machine's build that measured no faster, so it is off by default.
- TensorFlow 'same' padding of strided layers, asymmetric at the built size, costs what symmetric
  padding costs: the expansion before a strided depthwise convolution writes its activation straight
  into a zero-bordered buffer kept between calls (no padded copy, no fresh page-faulting tensor);
  without an expansion the convolution pads symmetrically by enough and its output is cropped (a
  view); the stem's 3-channel input is copied once into such a buffer.
- Squeeze-excitation runs as two small matrix products on the pooled vector and gates in place.

``backend="compile"`` wraps the folded module's functional form in :func:`torch.compile` (Inductor,
weights frozen); ``backend="onnxruntime"`` exports it to ONNX (asymmetric padding as the Conv's own
``pads``, no Pad nodes) and runs it in an ONNX Runtime session.
All backends compute the plain model's eval-mode function (within float rounding, ~1e-5).
"""

from __future__ import annotations

import copy
import io
import math
import threading
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from effnet.build.blocks import DepthwiseSeparable, MBConv
from effnet.build.layers import ConvNormAct, PaddedConv2d, SqueezeExcite, same_padding, same_padding_by_crop
from effnet.errors import UserError

BACKENDS = ("eager", "compile", "onnxruntime")

#: forward_padded computes densely over the padded grid up to this fraction of extra positions
DENSE_PAD_MAX_EXTRA = 0.05

#: oneDNN post-op name and scalars of each activation module oneDNN can fuse into a convolution.
_ONEDNN_ACTS: dict[str, tuple[str, list[float]]] = {
    "silu": ("swish", []),
    "relu": ("relu", []),
    "relu6": ("hardtanh", [0.0, 6.0]),
    "hard_swish": ("hardswish", []),
}


def _activation_name(module: nn.Module) -> str | None:
    """The activation a module computes, by name; None for identity."""
    from effnet.build import efficient

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


_ACT_OUT: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "silu": lambda x, out: torch.ops.aten.silu.out(x, out=out),
    "relu": lambda x, out: torch.ops.aten.relu.out(x, out=out),
    "relu6": lambda x, out: torch.ops.aten.hardtanh.out(x, 0.0, 6.0, out=out),
    "hard_swish": lambda x, out: torch.ops.aten.hardswish.out(x, out=out),
    "gelu": lambda x, out: torch.ops.aten.gelu.out(x, out=out),
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
        return weight, bias
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    weight = weight * scale.reshape(-1, 1, 1, 1)
    bias = (bias - bn.running_mean) * scale + bn.bias.detach()
    return weight.contiguous(memory_format=torch.channels_last), bias


class _Plan:
    """How one strided 'same' convolution is run at one input size."""

    __slots__ = ("pre_pad", "padding", "crop")

    def __init__(
        self,
        pre_pad: tuple[int, int, int, int] | None,
        padding: tuple[int, int],
        crop: tuple[int, int, int, int] | None,
    ) -> None:
        self.pre_pad = pre_pad  # (left, right, top, bottom) zero padding of the input, or None
        self.padding = padding  # symmetric padding (h, w) the convolution itself applies
        self.crop = crop  # (top, left, height, width) of the output to keep, or None


def _axis_plan(size: int, kernel: int, stride: int) -> tuple[int, int, int, int]:
    """(symmetric padding, crop offset, pad before, pad after) giving TF 'same' along one axis."""
    before, after = same_padding(size, kernel, stride)
    if before == after:
        return before, 0, before, after
    padding, crop = same_padding_by_crop(size, kernel, stride)
    return padding, crop, before, after


def _zero_border(t: torch.Tensor, pad: tuple[int, int, int, int]) -> None:
    """Zero the border (left, right, top, bottom) of ``t`` in place."""
    left, right, top, bottom = pad
    for region in (t[:, :, :top], t[:, :, t.shape[2] - bottom :], t[:, :, :, :left], t[:, :, :, t.shape[3] - right :]):
        if region.numel():
            region.zero_()


class _Pool:
    """Scratch memory reused between calls, one flat tensor per thread, shared by layers whose
    outputs are consumed at once: on CPU a fresh large tensor costs page faults, often more than
    the convolution writing it."""

    def __init__(self) -> None:
        self._buffers: dict[int, torch.Tensor] = {}

    def get(self, numel: int, like: torch.Tensor) -> torch.Tensor:
        key = threading.get_ident()
        buf = self._buffers.get(key)
        if buf is None or buf.numel() < numel or buf.dtype != like.dtype or buf.device != like.device:
            buf = like.new_empty(numel)
            self._buffers[key] = buf
        return buf[:numel]


class FastConv(nn.Module):
    """A convolution with BatchNorm folded in and its activation fused (inference only).

    ``same`` convolutions keep TensorFlow's asymmetric padding at any input size; ``crop`` says
    whether they may compute a slightly larger output and crop it (free when the next layer reads a
    strided view) rather than pad the input (one copy)."""

    def __init__(
        self,
        conv: nn.Conv2d,
        bn: nn.BatchNorm2d | None,
        act: str | None,
        *,
        crop: bool = True,
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
        self.crop = crop
        self.export = export
        self.onednn = onednn and not export and act in (None, *_ONEDNN_ACTS)
        self._plans: dict[tuple[int, int], _Plan] = {}
        #: padded input buffers kept between calls (one per thread): a fresh large tensor costs
        #: page faults, far more than the activation written into it; their borders stay zero
        self.reuse_buffers = not export
        #: the functional form for torch.compile crops too (ONNX gets asymmetric Conv pads instead)
        self.crop_when_functional = False
        self._workspace: dict[tuple[int, str], torch.Tensor] = {}
        #: set on 1×1 expansions whose output the block consumes at once: computed as one matrix
        #: product into the model's shared scratch memory instead of a fresh tensor
        self.pool: _Pool | None = None

    def extra_repr(self) -> str:
        out, inp = self.weight.shape[0], self.weight.shape[1] * self.groups
        return (
            f"{inp}, {out}, kernel={self.kernel}, stride={self.stride}, groups={self.groups}, act={self.act}, "
            f"same={self.same}, onednn={self.onednn}"
        )

    def _plan(self, height: int, width: int) -> _Plan:
        plan = self._plans.get((height, width))
        if plan is None:
            ph, ch, top, bottom = _axis_plan(height, self.kernel[0], self.stride[0])
            pw, cw, left, right = _axis_plan(width, self.kernel[1], self.stride[1])
            out_h, out_w = math.ceil(height / self.stride[0]), math.ceil(width / self.stride[1])
            if (top, bottom, left, right) == (ph, ph, pw, pw):
                plan = _Plan(None, (ph, pw), None)
            elif self.crop and (not self.export or self.crop_when_functional):
                plan = _Plan(None, (ph, pw), (ch, cw, out_h, out_w))
            else:
                plan = _Plan((left, right, top, bottom), (0, 0), None)
            self._plans[(height, width)] = plan
        return plan

    def _pointwise_into_pool(self, x: torch.Tensor) -> torch.Tensor | None:
        """The 1×1 convolution as ``bias + x @ Wᵀ`` written into scratch memory (None: not applicable)."""
        if self.pool is None or not x.is_cpu or not x.is_contiguous(memory_format=torch.channels_last):
            return None
        n, c, h, w = x.shape
        out_c = self.weight.shape[0]
        out = self.pool.get(n * h * w * out_c, x).view(n * h * w, out_c)
        rows = x.permute(0, 2, 3, 1).reshape(n * h * w, c)
        torch.addmm(self.bias, rows, self.weight.reshape(out_c, c).t(), out=out)
        return out.view(n, h, w, out_c).permute(0, 3, 1, 2)

    def _conv(self, x: torch.Tensor, padding: tuple[int, int], residual: torch.Tensor | None) -> torch.Tensor:
        if residual is None and (y := self._pointwise_into_pool(x)) is not None:
            return _ACT_FUNCS[self.act](y) if self.act is not None else y
        if self.onednn and x.is_cpu and x.dtype == torch.float32:
            if residual is not None and self.act is None:
                return torch.ops.mkldnn._convolution_pointwise.binary(
                    x, residual, self.weight, self.bias, list(padding), list(self.stride), list(self.dilation),
                    self.groups, "add", 1.0, None, [], None,
                )  # fmt: skip
            attr, scalars = _ONEDNN_ACTS[self.act] if self.act else ("none", [])
            y = torch.ops.mkldnn._convolution_pointwise(
                x, self.weight, self.bias, list(padding), list(self.stride), list(self.dilation), self.groups,
                attr, scalars, "",
            )  # fmt: skip
        else:
            y = F.conv2d(x, self.weight, self.bias, self.stride, padding, self.dilation, self.groups)
            if self.act is not None:
                y = _ACT_FUNCS[self.act](y)
        if residual is not None:
            y = y + residual if self.export else y.add_(residual)
        return y

    def forward_padded(self, x: torch.Tensor, pad: tuple[int, int, int, int]) -> torch.Tensor:
        """This 1×1 convolution and its activation with a zero border (left, right, top, bottom): the
        next strided 'same' convolution then needs no padded copy of its (wide) input.

        On a large grid the narrow input is copied into a zero-bordered buffer, the matrix product and
        activation run densely over the padded grid (activation in place), and the border, where the
        result is act(bias), is zeroed again: a pass over the narrow input instead of an extra one over
        the wide output. On a small grid (border > 5% of it) the activation writes the interior."""
        left, right, top, bottom = pad
        n, _, h, w = x.shape
        extra = (h + top + bottom) * (w + left + right) / (h * w) - 1
        dense = self.kernel == (1, 1) and self.groups == 1 and x.is_contiguous(memory_format=torch.channels_last)
        # small grids: computing the border costs more than a strided write
        if not dense or extra > DENSE_PAD_MAX_EXTRA:
            y = self._pointwise_into_pool(x)
            if y is None:
                y = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
            out, inner = self._padded_buffer(y.shape, y, pad, "out", zero=True)
            if self.act is None:
                inner.copy_(y)
            else:
                _ACT_OUT[self.act](y, inner)
            return out
        padded_x, inner_x = self._padded_buffer(x.shape, x, pad, "in", zero=True)
        inner_x.copy_(x)
        n, c, hp, wp = padded_x.shape
        out_c = self.weight.shape[0]
        out, _ = self._padded_buffer((n, out_c, hp, wp), x, (0, 0, 0, 0), "dense", zero=False)
        rows = padded_x.permute(0, 2, 3, 1).reshape(n * hp * wp, c)
        torch.addmm(self.bias, rows, self.weight.reshape(out_c, c).t(), out=out.permute(0, 2, 3, 1).view(-1, out_c))
        if self.act is not None:
            _ACT_FUNCS[self.act](out)
        _zero_border(out, pad)
        return out

    def _padded_buffer(
        self, size: Any, like: torch.Tensor, pad: tuple[int, int, int, int], slot: str, zero: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A channels_last tensor of ``size`` (dtype and device of ``like``) plus a border (zeroed when
        made if ``zero``), kept between calls (per thread and slot), and its interior view."""
        n, c, h, w = size
        left, right, top, bottom = pad
        shape = (n, c, h + top + bottom, w + left + right)
        key = (threading.get_ident(), slot) if self.reuse_buffers else None
        out = self._workspace.get(key) if key is not None else None
        if out is None or out.shape != shape or out.dtype != like.dtype or out.device != like.device:
            out = torch.empty((n, shape[2], shape[3], c), dtype=like.dtype, device=like.device).permute(0, 3, 1, 2)
            if zero:
                _zero_border(out, pad)
            if key is not None:
                self._workspace[key] = out
        return out, out[:, :, top : top + h, left : left + w]

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        if not self.same:
            return self._conv(x, self.padding, residual)  # type: ignore[arg-type]
        plan = self._plan(int(x.shape[-2]), int(x.shape[-1]))
        if plan.pre_pad is not None and self.export:
            y = _AsymmetricConv.apply(x, self.weight, self.bias, plan.pre_pad, self.stride, self.dilation, self.groups)
            y = _ACT_FUNCS[self.act](y) if self.act is not None else y
            return y + residual if residual is not None else y
        if plan.pre_pad is not None:
            if self.export or not x.is_contiguous(memory_format=torch.channels_last):
                x = F.pad(x, plan.pre_pad)
            else:
                padded, inner = self._padded_buffer(x.shape, x, plan.pre_pad, "in", zero=True)
                inner.copy_(x)
                x = padded
        y = self._conv(x, plan.padding, residual if plan.crop is None else None)
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


def _fast_cna(module: nn.Module, *, crop: bool, onednn: bool, export: bool) -> FastConv:
    assert isinstance(module, ConvNormAct)
    return FastConv(module.conv, module.bn, _activation_name(module.act), crop=crop, onednn=onednn, export=export)


class FastMBConv(nn.Module):
    """MBConv for inference: expand → depthwise (cropped 'same') → SE → project with the residual fused."""

    def __init__(self, block: MBConv, onednn: bool, export: bool, pool: _Pool | None = None) -> None:
        super().__init__()
        kw = {"onednn": onednn, "export": export}
        self.expand = _fast_cna(block.expand, crop=True, **kw) if block.expand is not None else None
        # after an expansion, asymmetric 'same' padding is written by the expansion's activation
        # (forward_padded); without one, the depthwise output is cropped instead
        self.depthwise = _fast_cna(block.depthwise, crop=block.expand is None, **kw)
        self.pad_in_expand = block.expand is not None and self.depthwise.same and not export
        if self.expand is not None and not export and self.expand.kernel == (1, 1) and self.expand.groups == 1:
            self.expand.pool = pool
        self.se = FastSE(block.se, export) if block.se is not None else None
        self.project = _fast_cna(block.project, crop=True, **kw)
        self.has_skip = block.has_skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        plan = self.depthwise._plan(int(x.shape[-2]), int(x.shape[-1])) if self.pad_in_expand else None
        if plan is not None and plan.pre_pad is not None:
            out = self.depthwise._conv(self.expand.forward_padded(x, plan.pre_pad), plan.padding, None)
        else:
            out = self.expand(x) if self.expand is not None else x
            out = self.depthwise(out)
        if self.se is not None:
            out = self.se(out)
        return self.project(out, x if self.has_skip else None)


class FastDepthwiseSeparable(nn.Module):
    """Depthwise-separable block for inference."""

    def __init__(self, block: DepthwiseSeparable, onednn: bool, export: bool) -> None:
        super().__init__()
        kw = {"onednn": onednn, "export": export}
        self.depthwise = _fast_cna(block.depthwise, crop=True, **kw)
        self.se = FastSE(block.se, export) if block.se is not None else None
        self.pointwise = _fast_cna(block.pointwise, crop=True, **kw)
        self.has_skip = block.has_skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.depthwise(x)
        if self.se is not None:
            out = self.se(out)
        out = self.pointwise(out)
        return out + x if self.has_skip else out


def _convert_generic(module: nn.Module, onednn: bool, export: bool) -> nn.Module:
    """Any other block: its own forward, with each ConvNormAct and SE swapped for the fast ones."""
    for name, child in list(module.named_children()):
        if isinstance(child, ConvNormAct):
            setattr(module, name, _fast_cna(child, crop=False, onednn=onednn, export=export))
        elif isinstance(child, SqueezeExcite):
            setattr(module, name, FastSE(child, export))
        else:
            _convert_generic(child, onednn, export)
    return module


def _convert_block(block: nn.Module, onednn: bool, export: bool, pool: _Pool) -> nn.Module:
    if isinstance(block, MBConv):
        return FastMBConv(block, onednn, export, pool)
    if isinstance(block, DepthwiseSeparable):
        return FastDepthwiseSeparable(block, onednn, export)
    return _convert_generic(copy.deepcopy(block), onednn, export)


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
        self.stem = _fast_cna(model.stem, crop=False, onednn=onednn, export=export)
        self.stem_pool = copy.deepcopy(model.stem_pool)
        pool = _Pool()  # one scratch buffer for every block's expansion: they run one after another
        self.stages = nn.ModuleList(
            nn.Sequential(*[_convert_block(block, onednn, export, pool) for block in stage]) for stage in model.stages
        )
        self.head = (
            _fast_cna(model.head, crop=False, onednn=onednn, export=export)
            if isinstance(model.head, ConvNormAct)
            else nn.Identity()
        )
        classifier = model.classifier
        self.classifier = copy.deepcopy(classifier).requires_grad_(False) if isinstance(classifier, nn.Linear) else None
        self.eval()

    def train(self, mode: bool = True) -> FastEfficientNet:
        if mode:
            raise UserError("an optimized model is for inference only; train the model it was made from")
        return super().train(False)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last_input else x

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> Any:
        x = self.stem(self._prepare(x))
        if self.features_only:
            maps: list[torch.Tensor] = [x] if -1 in self._feature_stages else []
            x = self.stem_pool(x)
            for index, stage in enumerate(self.stages):
                x = stage(x)
                if index in self._feature_stages:
                    maps.append(x)
            return maps
        x = self.stem_pool(x)
        for stage in self.stages:
            x = stage(x)
        x = self.head(x).mean((2, 3))
        return self.classifier(x) if self.classifier is not None else x


class OrtModule(nn.Module):
    """An ONNX Runtime session behind a module's call: torch tensors in, torch tensors out."""

    def __init__(self, session: Any, output_names: list[str]) -> None:
        super().__init__()
        self.session = session
        self.input_name = session.get_inputs()[0].name
        self.output_names = output_names

    def forward(self, x: torch.Tensor) -> Any:
        outputs = self.session.run(None, {self.input_name: x.detach().cpu().contiguous().numpy()})
        tensors = [torch.from_numpy(out) for out in outputs]
        return tensors if len(tensors) > 1 else tensors[0]


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
    from effnet.build.model import EfficientNet

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
                module.crop = module.crop_when_functional = True
        return torch.compile(fast, options={"freezing": True})  # type: ignore[return-value]
    if model.features_only:
        raise UserError("the onnxruntime backend supports classification models, not features_only")
    size = input_size or model.spec.resolution
    fast = FastEfficientNet(model, onednn=False, export=True).cpu().float()
    example = torch.randn(1, model.in_chans, size, size)
    return OrtModule(ort_session(onnx_bytes(fast, example), threads), ["output"])
