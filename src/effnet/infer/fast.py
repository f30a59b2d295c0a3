"""The fast path's network: squeeze-excitation, blocks and the whole model rebuilt from folded
convolutions (:class:`~effnet.infer.conv.FastConv`) for inference alone.

Every block kind's inference form is one :class:`FastBlock` built from the kind's registry entry
(:data:`effnet.models.blocks.KINDS`: its steps and residual rule); the reduced-precision passes read
the same steps. :func:`exportable` is the functional form exporters trace."""

from __future__ import annotations

import copy
from typing import Any, TypeGuard

import torch
import torch.nn.functional as F
from torch import nn

from effnet.errors import UserError
from effnet.infer.conv import ANY_SIZE, FastConv, onednn_ok
from effnet.infer.fold import activation_name, correct_rounding_bias, expected_activation, expected_gated
from effnet.models.blocks import Block, kind_of_block
from effnet.models.layers import ACTIVATIONS, ConvNormAct, SqueezeExcite


def _pooled(x: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The mean over H and W as ``(total, scale)``, the mean being ``total · scale``. A bfloat16
    channels_last map on CPU is summed over its rows of channels (ATen accumulates in float32 and
    rounds once) and the 1/(H·W) is left to the product that follows: ATen's bfloat16 mean there
    converts the whole map to float32 first, which costs several times this sum (``benchmarks/SPEED.md``)."""
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
            s = ACTIVATIONS[self.act].apply(s) if self.act != "identity" else s
            return x * torch.sigmoid(F.conv2d(s, self.w2[:, :, None, None], self.b2))
        total, scale = _pooled(x)
        s = torch.addmm(self.b1, total, self.w1.t(), alpha=scale)  # F.linear's own product at scale 1
        s = ACTIVATIONS[self.act].apply(s) if self.act != "identity" else s
        gate = torch.sigmoid(F.linear(s, self.w2, self.b2))[:, :, None, None]
        if self.inplace and x.is_contiguous(memory_format=torch.channels_last):
            return x.mul_(gate)
        return x * gate  # a cropped view: the product is dense again, for the next convolution


def _fast_cna(module: nn.Module, *, pad_input: bool = False, onednn: bool, export: bool) -> FastConv:
    assert isinstance(module, ConvNormAct)
    return FastConv(
        module.conv, module.bn, activation_name(module.act), pad_input=pad_input, onednn=onednn, export=export
    )


class FastBlock(nn.Module):
    """A block for inference, built from its kind's registry entry (:data:`effnet.models.blocks.KINDS`):
    each convolution step a :class:`~effnet.infer.conv.FastConv`, each squeeze-excitation a
    :class:`FastSE` (in place unless it reads the block's input, which the residual reads too), under
    the step's own name. The ``identity`` residual is fused into a last convolution (or added after
    the last step); the ``projection`` one adds the folded shortcut, then the activation, in place."""

    def __init__(self, block: Block, onednn: bool, export: bool) -> None:
        super().__init__()
        entry = block.entry
        #: The block's kind and the ops of its present steps, in order.
        self.kind, self.residual = entry.kind, entry.residual
        self.present: tuple[str, ...] = tuple(block.present)
        self.ops: tuple[str, ...] = tuple(step.op for step, _ in block.steps())
        for index, (step, module) in enumerate(block.steps()):
            if step.op == "se":
                layer: nn.Module = FastSE(module, export, inplace=index > 0)
            else:
                layer = _fast_cna(module, onednn=onednn, export=export)
            setattr(self, step.name, layer)
        self.has_skip = block.has_skip
        shortcut = getattr(block, "shortcut", None)
        self.shortcut = _fast_cna(shortcut, onednn=onednn, export=export) if shortcut is not None else None
        self.out_act = activation_name(block.out_act) if entry.residual == "projection" else None
        #: Whether the last step is a convolution that adds the residual in its kernel.
        self.fused_residual = self.residual == "identity" and self.has_skip and self.ops[-1] != "se"

    def layers(self) -> list[nn.Module]:
        """The fast layers of the present steps, in order."""
        return [getattr(self, name) for name in self.present]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        last = len(self.present) - 1
        for index, name in enumerate(self.present):
            layer = getattr(self, name)
            out = layer(out, x) if index == last and self.fused_residual else layer(out)
        if self.residual == "identity":
            return out + x if self.has_skip and not self.fused_residual else out
        if self.has_skip:
            out = out + (x if self.shortcut is None else self.shortcut(x))
        return ACTIVATIONS[self.out_act].apply(out) if self.out_act is not None else out


def fast_block(block: nn.Module, onednn: bool, export: bool) -> FastBlock:
    """A block's inference form, from its kind's registry entry."""
    if kind_of_block(block) is None:
        raise UserError(f"optimize: {type(block).__name__} is not a registered block kind")
    return FastBlock(block, onednn, export)  # type: ignore[arg-type]


class FastEfficientNet(nn.Module):
    """The inference-only module :func:`~effnet.deploy.optimize.optimize` returns; same inputs and
    outputs as the model. With ``export``, the functional form that exporters and the compiler trace.
    ``stem_in_float32``: a reduced-precision network runs its stem (and the first depthwise layer
    where the stem feeds it directly) in float32 (:meth:`_float32_stem_convs`)."""

    def __init__(
        self,
        model: nn.Module,
        *,
        onednn: bool = False,
        export: bool = False,
        dtype: torch.dtype | None = None,
        stem_in_float32: bool = True,
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
        self.stages = nn.ModuleList(
            nn.Sequential(*[fast_block(block, onednn, export) for block in stage]) for stage in model.stages
        )
        self.head = (
            _fast_cna(model.head, onednn=onednn, export=export)
            if isinstance(model.head, ConvNormAct)
            else nn.Identity()
        )
        classifier = model.classifier
        self.classifier = copy.deepcopy(classifier).requires_grad_(False) if isinstance(classifier, nn.Linear) else None
        #: what the network computes in (inputs are cast to it); the classifier stays in float32
        self.dtype = dtype or next(model.parameters()).dtype
        in_float32 = self._float32_stem_convs() if stem_in_float32 and self.dtype != torch.float32 else []
        #: what inputs are cast to: float32 where the network starts in float32
        self.input_dtype = torch.float32 if in_float32 else self.dtype
        self._correct_rounding(model, keep=in_float32)  # a no-op in float32
        float32_tensors = {conv: (conv.weight, conv.bias) for conv in in_float32}
        biases = {conv: conv.bias for conv in self.modules() if isinstance(conv, FastConv) and conv.onednn}
        self.to(self.dtype)
        for conv, bias in biases.items():  # oneDNN adds a float32 bias before it rounds: biases stay float32
            conv.bias = bias
        for conv, (weight, bias) in float32_tensors.items():
            conv.weight, conv.bias = weight, bias
        if in_float32:
            in_float32[-1].output_dtype = self.dtype
        self._carry_rounded_biases()
        if self.classifier is not None:
            self.classifier.float()
        self.eval()

    def _float32_stem_convs(self) -> list[FastConv]:
        """The convolutions a reduced-precision model runs in float32: the stem and, where the stem
        feeds it directly, the first block's depthwise convolution. Rounding the stem's output (the
        depthwise filter's input) is the largest single source of bfloat16 error, and these two layers
        are a small share of the time (``benchmarks/SPEED.md``)."""
        if not isinstance(self.stem, FastConv):
            return []
        first = self.stages[0][0] if len(self.stages) and len(self.stages[0]) else None
        if (
            isinstance(self.stem_pool, nn.Identity)
            and isinstance(first, FastBlock)
            and first.ops[0] == "depthwise"
            and not first.has_skip  # a residual would be the float32 stem output
        ):
            return [self.stem, first.layers()[0]]
        return [self.stem]

    def _correct_rounding(self, model: nn.Module, keep: list[FastConv]) -> None:
        """Before the cast to a reduced precision (nothing in float32): every convolution whose input
        comes straight from a ConvNormAct (through a squeeze-excitation or not) gets the bias correction
        of :func:`effnet.infer.fold.correct_rounding_bias`: each depthwise step (fed by the block's
        expansion, or by the stem for the first block) and each block's last convolution step, read
        from the block kinds' steps."""
        feeds = model.stem if isinstance(model.stem, ConvNormAct) and isinstance(model.stem_pool, nn.Identity) else None

        def correct(conv: nn.Module | None, producer: nn.Module | None, se: nn.Module | None = None) -> None:
            if isinstance(conv, FastConv) and isinstance(producer, ConvNormAct) and conv not in keep:
                mean = expected_activation(producer)
                correct_rounding_bias(
                    conv, expected_gated(se, mean) if isinstance(se, SqueezeExcite) else mean, self.dtype
                )

        for stage, fast_stage in zip(model.stages, self.stages, strict=True):
            for block, fast in zip(stage, fast_stage, strict=True):
                steps = block.steps()
                last = max(i for i, (step, _) in enumerate(steps) if step.op != "se")
                producer: nn.Module | None = None  # the convolution step before, in this block
                se: nn.Module | None = None  # a squeeze-excitation since that one
                for index, (step, module) in enumerate(steps):
                    if step.op == "se":
                        se = module
                        continue
                    if step.op == "depthwise":  # fed by the step before, or by the stem for the first block
                        correct(
                            getattr(fast, step.name),
                            producer if producer is not None else feeds if index == 0 else None,
                            se,
                        )
                    elif index == last:  # the block's last convolution (its projection), fed by the step before
                        correct(getattr(fast, step.name), producer, se)
                    producer, se = module, None
                feeds = None  # later blocks' inputs are residual sums: no BatchNorm says their mean

    def _carry_rounded_biases(self) -> None:
        """After the cast to a reduced precision: a residual block's projection adds the residual in
        oneDNN's kernel, which takes its bias in the input's precision, so that bias is rounded (a
        per-channel error shared by every pixel and image, and the projection's bias correction lost
        with it). What rounding drops is carried down the residual stream instead: each such
        projection's float32 bias takes on what the stream lacks so far before it is rounded, and the
        convolution that next reads the stream (a block's first layer, the head) adds its weights times
        what the stream still lacks to its float32 bias: exact for 1×1 readers (inside the borders for
        others), no cost per call (its effect on the logits' error: ``benchmarks/SPEED.md``)."""
        if self.dtype == torch.float32:
            return
        rounded_off: torch.Tensor | None = None  # per stream channel: what rounding took off its biases (float64)

        def kept_float32(conv: object) -> TypeGuard[FastConv]:
            return isinstance(conv, FastConv) and conv.onednn and conv.bias.dtype == torch.float32

        def read(conv: object) -> None:  # ``conv`` reads the stream: its bias adds what the stream lacks
            if rounded_off is not None and kept_float32(conv):
                taps = conv.weight.double().sum((2, 3))  # out × in/groups, the weights as rounded
                shift = taps[:, 0] * rounded_off if conv.groups > 1 else taps @ rounded_off
                conv.bias = (conv.bias.double() + shift).float()

        for stage in self.stages:
            for block in stage:
                if not isinstance(block, FastBlock) or block.ops[0] == "se" or sum(op != "se" for op in block.ops) < 2:
                    # its input read by a squeeze-excitation, or by the one convolution that adds the residual
                    rounded_off = None
                    continue
                layers = block.layers()
                read(layers[0])
                project = layers[-1]
                if not (block.fused_residual and kept_float32(project)):
                    rounded_off = None  # a fresh output: its float32 bias is added before it is rounded
                    continue
                want = project.bias.double() + (rounded_off if rounded_off is not None else 0.0)
                project.bias = want.float()
                rounded_off = want - project.bias.to(self.dtype).double()
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
            # on the oneDNN path a later block may write its residual sum over a map: keep a copy
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
        x = self.stem_pool(self.stem(x))
        for stage in self.stages:
            x = stage(x)
        x = self.head(x).mean((2, 3)).float()
        return self.classifier(x) if self.classifier is not None else x


def exportable(model: nn.Module, *, any_size: str | None = None, dtype: torch.dtype | None = None) -> nn.Module:
    """What an exporter traces: an effnet model's folded, functional form (BatchNorm folded, no
    in-place writes); any other module as it is.

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
