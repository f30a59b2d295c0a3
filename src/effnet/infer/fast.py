"""The fast path's network: squeeze-excitation, blocks and the whole model rebuilt from folded
convolutions (:class:`~effnet.infer.conv.FastConv`) for inference alone.

Each block kind's inference form is chosen through :data:`FAST_BLOCKS`, keyed like
:data:`effnet.models.blocks.BLOCKS`; a kind without an entry runs its own forward with its layers
swapped for fast ones. :func:`exportable` is the functional form exporters trace."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, TypeGuard, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from effnet.errors import UserError
from effnet.infer.chunks import chunk_size, early_stages, widest_bytes
from effnet.infer.conv import ANY_SIZE, FastConv, onednn_ok
from effnet.infer.fold import ACTIVATIONS, activation_name, correct_rounding_bias, expected_activation, expected_gated
from effnet.infer.pool import KeptMemory, keeps
from effnet.infer.tuner import ShapeTuner
from effnet.models.blocks import BLOCKS, DepthwiseSeparable, FusedMBConv, MBConv
from effnet.models.layers import ConvNormAct, SqueezeExcite


def _pooled(x: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The mean over H and W as ``(total, scale)``, the mean being ``total · scale``. A bfloat16
    channels_last map on CPU is summed over its rows of channels (ATen accumulates in float32 and
    rounds once) and the 1/(H·W) is left to the product that follows: ATen's bfloat16 mean there
    converted the whole map to float32 first (1.5–2.5× a matrix product with a row of ones on a Zen 4;
    4–8× this sum on an AMX Xeon, where the sum is 1.3–3.5× faster than the product; ``benchmarks/SPEED.md``)."""
    if x.dtype != torch.bfloat16 or not x.is_cpu or not x.is_contiguous(memory_format=torch.channels_last):
        return x.mean((2, 3)), 1.0
    n, c, h, w = x.shape
    rows = x.permute(0, 2, 3, 1).reshape(n, h * w, c)  # a view of channels_last memory
    return rows.sum(1), 1 / (h * w)


class FastSE(nn.Module):
    """Squeeze-excitation on the pooled vector as two matrix products; the gate multiplies in place."""

    def __init__(self, se: SqueezeExcite, export: bool = False, *, inplace: bool = True) -> None:
        super().__init__()
        #: Whether the gate may multiply its input in place (not where the input is also the residual).
        self.inplace = inplace
        self.register_buffer("w1", se.reduce.weight.detach().flatten(1).clone())
        self.register_buffer("b1", se.reduce.bias.detach().clone())
        self.register_buffer("w2", se.expand.weight.detach().flatten(1).clone())
        self.register_buffer("b2", se.expand.bias.detach().clone())
        self.act = activation_name(se.act) or "identity"
        self.export = export

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.export:
            # a mean over the whole map (written to ONNX as GlobalAveragePool) and 1×1 convolutions:
            # ONNX Runtime keeps its blocked layout through both; any input size
            s = F.conv2d(x.mean((2, 3), keepdim=True), self.w1[:, :, None, None], self.b1)
            s = ACTIVATIONS[self.act](s) if self.act != "identity" else s
            return x * torch.sigmoid(F.conv2d(s, self.w2[:, :, None, None], self.b2))
        total, scale = _pooled(x)
        s = torch.addmm(self.b1, total, self.w1.t(), alpha=scale)  # F.linear's own product at scale 1
        s = ACTIVATIONS[self.act](s) if self.act != "identity" else s
        gate = torch.sigmoid(F.linear(s, self.w2, self.b2))[:, :, None, None]
        if self.inplace and x.is_contiguous(memory_format=torch.channels_last):
            return x.mul_(gate)
        return x * gate  # a cropped view: the product is dense again, for the next convolution


def _fast_cna(module: nn.Module, *, pad_input: bool = False, onednn: bool, export: bool) -> FastConv:
    assert isinstance(module, ConvNormAct)
    return FastConv(
        module.conv, module.bn, activation_name(module.act), pad_input=pad_input, onednn=onednn, export=export
    )


def _use_pool(pool: KeptMemory | None, **slots: FastConv | None) -> None:
    """Let these convolutions keep large outputs in ``pool``, each in the named slot."""
    for slot, conv in slots.items():
        if conv is not None:
            conv.pool, conv.slot = pool, slot


#: Makes a block's inference form from the block, ``onednn``, ``export`` and the model's kept memory.
FastBlock = Callable[[nn.Module, bool, bool, KeptMemory], nn.Module]

#: The inference form of each block kind (a key of :data:`effnet.models.blocks.BLOCKS`) that has one.
FAST_BLOCKS: dict[str, FastBlock] = {}

_Make = TypeVar("_Make", bound=Callable[..., nn.Module])


def register_fast_block(kind: str) -> Callable[[_Make], _Make]:
    """Decorator (on a class or function taking :data:`FastBlock`'s arguments): the inference form
    of block kind ``kind``."""

    def add(make: _Make) -> _Make:
        if kind not in BLOCKS:
            raise ValueError(f"block kind {kind!r} has no module (effnet.models.blocks.BLOCKS)")
        FAST_BLOCKS[kind] = make
        return make

    return add


@register_fast_block("mb")
class FastMBConv(nn.Module):
    """MBConv for inference: expand → depthwise → SE → project with the residual fused."""

    def __init__(self, block: MBConv, onednn: bool, export: bool, pool: KeptMemory | None = None) -> None:
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


@register_fast_block("fu")
class FastFusedMBConv(nn.Module):
    """Fused-MBConv for inference: k×k expand → SE → project with the residual fused (at expansion
    1: SE on the block's input, not in place since the input is also the residual, then the k×k)."""

    def __init__(self, block: FusedMBConv, onednn: bool, export: bool, pool: KeptMemory | None = None) -> None:
        super().__init__()
        kw = {"onednn": onednn, "export": export}
        self.expand = _fast_cna(block.expand, **kw) if block.expand is not None else None
        self.se = FastSE(block.se, export, inplace=block.expand is not None) if block.se is not None else None
        self.project = _fast_cna(block.project, **kw)
        self.has_skip = block.has_skip
        if not export:
            _use_pool(pool, expand=self.expand, out=self.project)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.expand(x) if self.expand is not None else x
        if self.se is not None:
            out = self.se(out)
        return self.project(out, x if self.has_skip else None)


@register_fast_block("ds")
class FastDepthwiseSeparable(nn.Module):
    """Depthwise-separable block for inference."""

    def __init__(self, block: DepthwiseSeparable, onednn: bool, export: bool, pool: KeptMemory | None = None) -> None:
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


def _fast_layers(module: nn.Module, onednn: bool, export: bool) -> nn.Module:
    """``module`` with each ConvNormAct and SE inside it swapped for the fast ones (in place)."""
    for name, child in list(module.named_children()):
        if isinstance(child, ConvNormAct):
            setattr(module, name, _fast_cna(child, onednn=onednn, export=export))
        elif isinstance(child, SqueezeExcite):
            setattr(module, name, FastSE(child, export))
        else:
            _fast_layers(child, onednn, export)
    return module


def _block_kind(block: nn.Module) -> str | None:
    """The kind ``block`` was built as (its class or a base of it in BLOCKS: the training memory
    mode subclasses the blocks), or None."""
    kinds = {cls: kind for kind, cls in BLOCKS.items()}
    return next((kinds[cls] for cls in type(block).__mro__ if cls in kinds), None)


def _projection(block: nn.Module) -> nn.Module | None:
    """A fast block's last convolution (its projection, or a depthwise-separable block's pointwise one)."""
    return getattr(block, "project", None) or getattr(block, "pointwise", None)


def fast_block(block: nn.Module, onednn: bool, export: bool, pool: KeptMemory) -> nn.Module:
    """A block's inference form: its kind's entry in :data:`FAST_BLOCKS`, else a copy of the block
    running its own forward with fast layers."""
    make = FAST_BLOCKS.get(_block_kind(block) or "")
    return make(block, onednn, export, pool) if make else _fast_layers(copy.deepcopy(block), onednn, export)


class FastEfficientNet(nn.Module):
    """The inference-only module :func:`~effnet.infer.optimize.optimize` returns; same inputs and
    outputs as the model. With ``export``, the functional form that exporters and the compiler trace."""

    def __init__(
        self,
        model: nn.Module,
        *,
        onednn: bool = False,
        export: bool = False,
        dtype: torch.dtype | None = None,
        float32_start: bool = True,
    ) -> None:
        super().__init__()
        self.spec = model.spec
        self.in_chans = model.in_chans
        self.num_classes = model.num_classes
        self.features_only = model.features_only
        self.feature_info = model.feature_info
        self._feature_stages = list(model._feature_stages)
        self.export = export
        self.channels_last_input = not export
        # the stem's input has few channels: padding it is cheaper than cropping the wide output
        self.stem = _fast_cna(model.stem, pad_input=True, onednn=onednn, export=export)
        self.stem_pool = copy.deepcopy(model.stem_pool)
        pool = self._pool = KeptMemory()  # shared by all blocks: they run one after another
        self.stages = nn.ModuleList(
            nn.Sequential(*[fast_block(block, onednn, export, pool) for block in stage]) for stage in model.stages
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
        self._early_stages, self._early_widths = early_stages(model.spec)
        #: per input shape: its way, of :meth:`ways` (timed on CPU, never on CUDA)
        self.tuner = ShapeTuner()
        self._ways_of: dict[tuple[Any, ...], list[tuple[bool, bool]]] = {}  # per input key: its ways, as tuned
        #: what the network computes in (inputs are cast to it); the classifier stays in float32
        self.dtype = dtype or next(model.parameters()).dtype
        start = self._float32_start() if float32_start and self.dtype != torch.float32 else []
        #: what inputs are cast to: float32 where the network starts in float32
        self.input_dtype = torch.float32 if start else self.dtype
        self._correct_rounding(model, keep=start)  # a no-op in float32
        kept = {conv: (conv.weight, conv.bias) for conv in start}
        biases = {conv: conv.bias for conv in self.modules() if isinstance(conv, FastConv) and conv.onednn}
        self.to(self.dtype)
        for conv, bias in biases.items():  # oneDNN adds a float32 bias before it rounds: biases stay float32
            conv.bias = bias
        for conv, (weight, bias) in kept.items():
            conv.weight, conv.bias = weight, bias
        if start:
            start[-1].output_dtype = self.dtype
        self._carry_rounded_biases()
        if self.classifier is not None:
            self.classifier.float()
        self.eval()

    def _float32_start(self) -> list[FastConv]:
        """The convolutions a reduced-precision model runs in float32: the stem and, where the stem
        feeds it directly, the first block's depthwise convolution. Rounding the stem's output (the
        depthwise filter's input) was the largest single source of bfloat16 error: keeping both in
        float32 took the logits' error from 2.5% to 1.9% of their norm (Lite0s, ImageNet and CIFAR-10)
        for 4% of B0's bfloat16 time on a Zen 4 (``benchmarks/SPEED.md``)."""
        if not isinstance(self.stem, FastConv):
            return []
        first = self.stages[0][0] if len(self.stages) and len(self.stages[0]) else None
        depthwise = getattr(first, "depthwise", None)
        if (
            isinstance(self.stem_pool, nn.Identity)
            and isinstance(depthwise, FastConv)
            and getattr(first, "expand", None) is None
            and not getattr(first, "has_skip", True)  # a residual would be the float32 stem output
        ):
            return [self.stem, depthwise]
        return [self.stem]

    def _correct_rounding(self, model: nn.Module, keep: list[FastConv]) -> None:
        """Before the cast to a reduced precision (nothing in float32): every convolution whose input
        comes straight from a ConvNormAct (through a squeeze-excitation or not) gets the bias correction
        of :func:`effnet.infer.fold.correct_rounding_bias`: each depthwise layer (fed by the block's
        expansion, or by the stem for the first block) and each block's projection."""
        feeds = model.stem if isinstance(model.stem, ConvNormAct) and isinstance(model.stem_pool, nn.Identity) else None

        def correct(conv: nn.Module | None, producer: nn.Module | None, se: nn.Module | None = None) -> None:
            if isinstance(conv, FastConv) and isinstance(producer, ConvNormAct) and conv not in keep:
                mean = expected_activation(producer)
                correct_rounding_bias(
                    conv, expected_gated(se, mean) if isinstance(se, SqueezeExcite) else mean, self.dtype
                )

        for stage, fast_stage in zip(model.stages, self.stages, strict=True):
            for block, fast in zip(stage, fast_stage, strict=True):
                expand = getattr(block, "expand", None)
                correct(getattr(fast, "depthwise", None), expand if isinstance(block, MBConv) and expand else feeds)
                # the projection's input: the depthwise layer's output (the expansion's in a fused block), gated
                producer = getattr(block, "depthwise", None) or (expand if isinstance(block, FusedMBConv) else None)
                se = getattr(block, "se", None)
                correct(_projection(fast), producer, se)
                feeds = None  # later blocks' inputs are residual sums: no BatchNorm says their mean

    def _carry_rounded_biases(self) -> None:
        """After the cast to a reduced precision: a residual block's projection adds the residual in
        oneDNN's kernel, which takes its bias in the input's precision, so that bias is rounded (a
        per-channel error shared by every pixel and image, and the projection's bias correction lost
        with it). What rounding drops is carried down the residual stream instead: each such
        projection's float32 bias takes on what the stream lacks so far before it is rounded, and the
        convolution that next reads the stream (a block's first layer, the head) adds its weights times
        what the stream still lacks to its float32 bias: exact for 1×1 readers (inside the borders for
        others), no cost per call. Measured on Lite0 (ImageNet) in bfloat16: the logits' error went from
        1.35% to 1.23% of their norm on the photos, 1.90% to 1.76% on CIFAR-10 images (``benchmarks/SPEED.md``)."""
        if self.dtype == torch.float32:
            return
        lacking: torch.Tensor | None = None  # per stream channel: what the rounded biases left out (float64)

        def kept_float32(conv: object) -> TypeGuard[FastConv]:
            return isinstance(conv, FastConv) and conv.onednn and conv.bias.dtype == torch.float32

        def read(conv: object) -> None:  # ``conv`` reads the stream: its bias adds what the stream lacks
            if lacking is not None and kept_float32(conv):
                taps = conv.weight.double().sum((2, 3))  # out × in/groups, the weights as rounded
                shift = taps[:, 0] * lacking if conv.groups > 1 else taps @ lacking
                conv.bias = (conv.bias.double() + shift).float()

        for stage in self.stages:
            for block in stage:
                first = getattr(block, "expand", None) or getattr(block, "depthwise", None)
                if not isinstance(block, FastMBConv | FastDepthwiseSeparable | FastFusedMBConv) or first is None:
                    lacking = None  # read otherwise (the block's own forward, or SE on its input): not carried
                    continue
                read(first)
                project = _projection(block)
                if not (block.has_skip and kept_float32(project)):
                    lacking = None  # a fresh output: its float32 bias is added before it is rounded
                    continue
                want = project.bias.double() + (lacking if lacking is not None else 0.0)
                project.bias = want.float()
                lacking = want - project.bias.to(self.dtype).double()
        read(self.head)

    def train(self, mode: bool = True) -> FastEfficientNet:
        if mode:
            raise UserError("an optimized model is for inference only; train the model it was made from")
        return super().train(False)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.input_dtype)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last_input else x

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> Any:
        x = self._prepare(x)
        if self.features_only:
            x = self.stem(x)
            # on the CPU path later layers may overwrite a map (kept memory, residual sums in place)
            keep = (lambda t: t.clone()) if onednn_ok(x) and not self.export else (lambda t: t)
            maps: list[torch.Tensor] = []
            if -1 in self._feature_stages:  # a float32 stem's map is cast, which copies it already
                maps.append(keep(x) if x.dtype == self.dtype else x.to(self.dtype))
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
        x = self.head(x).mean((2, 3)).float()
        return self.classifier(x) if self.classifier is not None else x

    def ways(self, x: torch.Tensor) -> list[tuple[bool, bool]]:
        """The ways this input may run, as (early stages in chunks, large outputs in kept memory):
        chunks where :func:`~effnet.infer.chunks.chunk_size` finds them worth trying, kept memory or
        fresh tensors where some output is large enough to be kept (CPU)."""
        chunks = [False, True] if x.device.type == "cpu" and self._chunk_size(x) else [False]
        widest = widest_bytes(x, self._early_widths, self.spec.resolution, self.dtype) * x.shape[0]
        large = not self._early_widths or keeps(int(widest))
        # in bfloat16 only the float32 start may use kept memory (oneDNN's adding kernel takes a bias in
        # the input's precision, and bfloat16 convolutions keep float32 biases).
        # Fresh tensors are numbered first, so that the tuner keeps them in a tie: where first calls time
        # the two alike (chunks, whose outputs stay under glibc's mmap threshold) fresh tensors ran 1.06×
        # (default glibc) and 1.14× (tuned) faster sustained on a Zen 5, B0 batch 16, as kept memory's
        # zeroing pass predicts; where fresh tensors page-fault (the whole batch, default glibc) kept
        # memory wins by far more than a tie (benchmarks/SPEED.md)
        kept = [False, True] if onednn_ok(x) and large else [True]
        return [(chunked, keep) for keep in kept for chunked in chunks]

    def _classify_tuned(self, x: torch.Tensor) -> torch.Tensor:
        """Whole batch or early stages in chunks, large outputs in kept memory or fresh tensors:
        whichever way ran fastest here for this input shape (decided on the first calls, which go
        through the ways in turn; all give the same results)."""
        key = (x.device.type, *x.shape)
        ways = self._ways_of.get(key)
        if ways is None:  # worked out once per key: this runs on every call
            ways = self._ways_of[key] = self.ways(x)

        def call(way: int) -> torch.Tensor:
            chunked, kept = ways[way]
            with self._pool.using(kept):
                return self._classify(x, self._chunk_size(x) if chunked else 0)

        return self.tuner.run(key, call, len(ways))

    def first_call_choices(self) -> dict[tuple[Any, ...], str]:
        """Per input key (device, N, C, H, W) decided so far: the way kept, in words."""
        out = {}
        for key, way in self.tuner.kept().items():
            if key not in self._ways_of:  # kept by decide() before any call
                continue
            chunked, kept = self._ways_of[key][way]
            out[key] = (
                f"{'early stages in chunks' if chunked else 'whole batch'}, {'kept memory' if kept else 'fresh tensors'}"
            )
        return out

    def _chunk_size(self, x: torch.Tensor) -> int:
        """Images per chunk for the early stages (0: not worth trying for this input)."""
        return chunk_size(x, self._early_widths, self.spec.resolution, self.dtype)


def exportable(model: nn.Module, *, any_size: str | None = None, dtype: torch.dtype | None = None) -> nn.Module:
    """What an exporter traces: an effnet model's folded, functional form (BatchNorm folded, no
    in-place writes or kept memory); any other module as it is.

    ``any_size`` None: 'same' padding for the traced size (each asymmetric padding a pad right
    before its convolution, which the ONNX exporter moves into the Conv node); ``"onnx"`` or
    ``"torchscript"``: padding worked out from each input's size in the exported graph
    (:data:`effnet.infer.conv.ANY_SIZE`). ``dtype``: what the network computes in (the classifier
    stays in float32)."""
    from effnet.models.efficientnet import EfficientNet

    if not isinstance(model, EfficientNet):
        return model
    if any_size not in (None, *ANY_SIZE):
        raise UserError(f"any_size must be one of {', '.join(ANY_SIZE)} or None, got {any_size!r}", field="any_size")
    form = FastEfficientNet(model, export=True, dtype=dtype)
    for module in form.modules():
        if isinstance(module, FastConv):
            module.any_size = any_size
    return form
