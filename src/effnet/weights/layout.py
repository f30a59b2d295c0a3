"""Weight layouts: how another library names the tensors of an EfficientNet, mapped onto effnet's.

A :class:`Layout` names the source module of each *part* of an effnet model (stem conv, a block's
depthwise BN, the classifier, …) and, where the source stores tensors differently (Keras' HWIO
kernels), converts them. :func:`convert_state_dict` walks the model, builds its complete new state
dict from the source and lists every disagreement; nothing is loaded here. A :class:`WeightFormat`
is a layout with how its source computed (padding, BatchNorm eps, preprocessing) and a detector;
:mod:`effnet.weights.formats` lists them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Set
from dataclasses import dataclass

import torch
from torch import nn

from effnet.describe.network import NetworkSpec
from effnet.errors import UserError
from effnet.models.blocks import KINDS, kind_of_block
from effnet.models.layers import ConvNormAct
from effnet.preprocess import Preprocessing, default_preprocessing


@dataclass(frozen=True)
class Part:
    """One module of an effnet model that holds tensors, with where it sits in the network."""

    prefix: str  # effnet module path, e.g. "stages.1.0.depthwise.bn"
    role: str  # stem.conv, stem.bn, head.conv, head.bn, classifier, and in blocks their steps' roles
    #            (effnet.models.blocks.Step.role) with the child: expand.conv, expand.bn, dw.conv, dw.bn,
    #            se.reduce, se.expand, project.conv, project.bn, …
    stage: int = -1
    index: int = -1  # block index within the stage
    flat: int = -1  # block index over the whole network
    has_expand: bool = False
    has_se: bool = False
    kind: str = "mb"  # the block's kind (a key of effnet.models.blocks.KINDS): "mb" MBConv, "fu" Fused-MBConv, …
    present: bool = True  # False: the model has no such module (features_only, no classifier, excluded)


def kind_of(module: nn.Module) -> str:
    """conv, dwconv, bn or linear."""
    if isinstance(module, nn.BatchNorm2d):
        return "bn"
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, nn.Conv2d):
        return "dwconv" if module.groups > 1 and module.groups == module.in_channels else "conv"
    raise TypeError(f"no weight layout for {type(module).__name__}")


def model_parts(
    model: nn.Module, *, exclude_classifier: bool = False, kinds: tuple[str, ...] = ("mb", "fu")
) -> Iterator[Part]:
    """The tensor-holding modules of an EfficientNet, in network order, each block's from its kind's
    registry entry (:data:`effnet.models.blocks.KINDS`: a step's parts are its role and the step's
    tensor-holding children, ``dw.conv``, ``se.reduce``, …); ``kinds`` are the block kinds the
    caller's layout names (others are a UserError)."""
    yield Part("stem.conv", "stem.conv")
    yield Part("stem.bn", "stem.bn")
    flat = 0
    for s, stage in enumerate(model.stages):
        for j, block in enumerate(stage):
            entry = kind_of_block(block)
            if entry is None or entry.kind not in kinds:
                names = " and ".join(KINDS[k].title for k in kinds)
                raise UserError(
                    f"model has a {type(block).__name__} block ({s}.{j}): only {names} blocks have this weight layout",
                    field="model",
                )
            steps = block.steps()
            roles = {step.role for step, _ in steps}
            where = {"stage": s, "index": j, "flat": flat, "kind": entry.kind}
            where.update(has_expand="expand" in roles, has_se=any(step.op == "se" for step, _ in steps))
            base = f"stages.{s}.{j}"
            for step, module in steps:
                for child, sub in module.named_children():
                    if any(True for _ in sub.parameters()) or any(True for _ in sub.buffers()):
                        yield Part(f"{base}.{step.name}.{child}", f"{step.role}.{child}", **where)
            if getattr(block, "shortcut", None) is not None:
                yield Part(f"{base}.shortcut.conv", "shortcut.conv", **where)
                yield Part(f"{base}.shortcut.bn", "shortcut.bn", **where)
            flat += 1
    if model.spec.head_channels:
        has_head = isinstance(model.head, ConvNormAct)
        yield Part("head.conv", "head.conv", present=has_head)
        yield Part("head.bn", "head.bn", present=has_head)
    has_classifier = isinstance(model.classifier, nn.Linear) and not exclude_classifier
    yield Part("classifier", "classifier", present=has_classifier)


class Layout:
    """A foreign state-dict layout. Subclasses name source modules; the defaults suit PyTorch ports."""

    name = "?"
    sep = "."
    #: Source module names of the parts outside the blocks (stem, head, classifier), by role.
    fixed: Mapping[str, str] = {}
    #: Block kinds the source has: MBConv ("mb") and, for EfficientNetV2 ports, Fused-MBConv ("fu").
    block_kinds: tuple[str, ...] = ("mb",)

    def module_key(self, part: Part, model: nn.Module) -> str:
        """The source module that holds one part's tensors."""
        return self.fixed[part.role] if part.role in self.fixed else self.block_key(part, model)

    def block_key(self, part: Part, model: nn.Module) -> str:
        """The source module of one part inside a block."""
        raise NotImplementedError

    def param_keys(self, prefix: str, name: str, kind: str) -> tuple[str, ...]:
        """Candidate source keys of one tensor (the first present is used)."""
        return (f"{prefix}{self.sep}{name}",)

    def convert(self, tensor: torch.Tensor, kind: str, name: str, target: torch.Tensor) -> torch.Tensor:
        """The source tensor in effnet's layout."""
        return tensor

    def ignored(self, key: str) -> bool:
        """Source tensors that carry nothing effnet needs (e.g. Keras' normalization layer)."""
        return False


def _shape(t: torch.Tensor) -> str:
    return "×".join(str(d) for d in t.shape) or "scalar"


def convert_state_dict(
    model: nn.Module,
    source: Mapping[str, torch.Tensor],
    layout: Layout | None,
    *,
    exclude_classifier: bool = False,
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The model's complete new state dict from ``source`` and every disagreement found, in order.

    ``layout=None`` means effnet's own keys (any block kind)."""
    target = model.state_dict()
    problems: list[str] = []
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()

    def take(key: str, skeys: tuple[str, ...], kind: str, name: str) -> None:
        want = target[key]
        found = next((k for k in skeys if k in source), None)
        if found is None:
            if name == "num_batches_tracked":
                out[key] = want.clone()
                return
            problems.append(f"file has no tensor {skeys[0]!r} (model's {key}, {_shape(want)})")
            return
        used.add(found)
        tensor = source[found]
        if not isinstance(tensor, torch.Tensor):
            problems.append(f"file entry {found!r} is not a tensor")
            return
        tensor = layout.convert(tensor, kind, name, want) if layout is not None else tensor
        if tuple(tensor.shape) != tuple(want.shape):
            problems.append(f"tensor {found!r} is {_shape(tensor)} in the file, model's {key} is {_shape(want)}")
            return
        # a model on the meta device gets CPU tensors, or meta ones from a meta source (shapes only)
        device = want.device if want.device.type != "meta" else "meta" if tensor.device.type == "meta" else "cpu"
        out[key] = tensor.detach().to(dtype=want.dtype, device=device)

    if layout is None:
        skip = ("classifier.",) if exclude_classifier else ()
        for key in target:
            if key.startswith(skip):
                out[key] = target[key].clone()
                used.add(key)
                continue
            take(key, (key,), "", key.rsplit(".", 1)[-1])
        if exclude_classifier:
            used.update(k for k in source if k.startswith("classifier."))
    else:
        for part in model_parts(model, exclude_classifier=exclude_classifier, kinds=layout.block_kinds):
            sprefix = layout.module_key(part, model)
            if not part.present:
                used.update(k for k in source if k.startswith(sprefix + layout.sep))
                try:
                    kept = model.get_submodule(part.prefix)
                except AttributeError:  # features_only: no head, no classifier
                    continue
                for name, tensor in kept.state_dict().items():
                    out[f"{part.prefix}.{name}"] = tensor.clone()
                continue
            module = model.get_submodule(part.prefix)
            kind = kind_of(module)
            for name in module.state_dict():
                take(f"{part.prefix}.{name}", layout.param_keys(sprefix, name, kind), kind, name)
        for key in target:
            if key not in out and not problems:
                problems.append(f"model tensor {key} has no counterpart in the {layout.name} layout")
    for key in source:
        if key not in used and (layout is None or not layout.ignored(key)):
            problems.append(f"file has tensor {key!r} that the model has no place for")
    return out, problems


@dataclass(frozen=True)
class WeightFormat:
    """One weight format effnet reads."""

    name: str
    about: str
    #: Whether a source is in this format, from its tensor names and its header metadata.
    detect: Callable[[Set[str], Mapping[str, str]], bool]
    #: How the source names and stores tensors; None: effnet's own names (any block kind).
    layout: Layout | None
    #: The BatchNorm epsilon the source computes with: a constant or a rule on the model's description.
    bn_eps: float | Callable[[NetworkSpec], float]
    #: The padding the source's weights were trained with ("same", "symmetric"); None: either.
    padding: str | None = None
    #: Where ``padding`` is None: the padding a model of this name is built with (timm: ``tf_`` → 'same').
    padding_for_model: Callable[[str], str] | None = None
    #: The source's own evaluation preprocessing for a model (description, name as given), where it
    #: differs from the official one (timm's V2-S/M/L: mean = std = 0.5, crop 1.0); None: official.
    preprocessing_for_model: Callable[[NetworkSpec, str], Preprocessing | None] | None = None

    def bn_eps_for(self, spec: NetworkSpec) -> float:
        """The BatchNorm epsilon for a model of this description."""
        return self.bn_eps(spec) if callable(self.bn_eps) else self.bn_eps

    def preprocessing(self, spec: NetworkSpec, model_name: str) -> Preprocessing:
        """How the source evaluates ``spec`` (built as ``model_name``)."""
        own = self.preprocessing_for_model(spec, model_name) if self.preprocessing_for_model else None
        return own if own is not None else default_preprocessing(spec)

    def model_padding(self, model_name: str) -> str | None:
        """The padding to build ``model_name`` with for these weights (None: its description's)."""
        return self.padding if self.padding_for_model is None else self.padding_for_model(model_name)
