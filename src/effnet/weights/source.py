"""Fitting a weight source's tensors into an effnet model: the source read (a weight file, a state
dict, a published checkpoint's file, a Hub repository's file), its format resolved or detected, the
model's complete new state dict built and every tensor checked before anything is loaded, and a
mismatch explained.

Building models with weights (:func:`effnet.factory.load_model`, :func:`effnet.factory.load_weights`,
the converted copies of downloaded checkpoints) is :mod:`effnet.factory`'s, above this package."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from effnet.errors import UserError
from effnet.models.efficientnet import EfficientNet
from effnet.weights.files import as_state_dict, read_weights
from effnet.weights.formats import WEIGHT_FORMATS, detect_format, get_format
from effnet.weights.hub import hub_file, is_hub_name
from effnet.weights.layout import Layout, Part, WeightFormat, convert_state_dict
from effnet.weights.native import NATIVE, check_description, info_from_metadata, is_native
from effnet.weights.pretrained import Pretrained, find_pretrained, named_pretrained
from effnet.zoo import get_description, model_names, resolve_description


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names, in class-index order (package data)."""
    from importlib.resources import files

    text = files("effnet").joinpath("resources/imagenet_classes.txt").read_text(encoding="utf-8")
    names = [line for line in text.splitlines() if line]
    if len(names) != 1000:
        raise RuntimeError(f"imagenet_classes.txt has {len(names)} names, expected 1000")
    return names


@dataclass
class Source:
    """A weight source once read: its tensors, header metadata and a label for messages."""

    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str]
    label: str
    format: str | None = None  # known from the source itself (pretrained names)
    model: str | None = None  # likewise
    entry: Pretrained | None = None  # the published checkpoint it is


def pretrained_entry(source: str | Path) -> Pretrained | None:
    """The published checkpoint a source names: a checkpoint's name or alias, or (text that is no
    file) any name :func:`~effnet.weights.pretrained.find_pretrained` resolves."""
    exact = named_pretrained(str(source))
    if exact is not None or not isinstance(source, str) or Path(source).exists():
        return exact
    try:
        return find_pretrained(source)
    except UserError as err:
        raise UserError(f"{source} is no weight file, and {err}") from None


def read_hub(name: str, argument: str) -> Source:
    """The model file of a Hub repository, ``hf-hub:OWNER/NAME[@REVISION]``, read (downloaded into
    huggingface_hub's cache if need be; offline, from the cache only). A pickle is read only as plain
    tensors (:func:`~effnet.weights.files.read_torch`); an effnet file describes its own network."""
    path = hub_file(name, argument).locate(name)
    try:
        tensors, metadata = read_weights(path)
    except UserError as err:
        raise UserError(f"{name}: {err}") from None
    return Source(tensors, metadata, name)


def read_published(entry: Pretrained) -> tuple[Source, Path]:
    """The checkpoint's file as its publisher lays it out (downloaded if need be), and its path."""
    path = entry.path()
    try:
        tensors, metadata = read_weights(path)
    except UserError as err:
        raise UserError(f"pretrained weights {entry.name}: {err}; {entry.source.remedy(path)}") from None
    return Source(tensors, metadata, entry.name, entry.format, entry.model, entry), path


def read_source(
    source: str | Path | Mapping[str, torch.Tensor], argument: str, entry: Pretrained | None = None
) -> Source:
    """A weight file, a state dict or (``entry``) a published checkpoint already on this machine, read;
    a checkpoint on this machine is converted in memory each time."""
    if isinstance(source, Mapping):
        return Source(as_state_dict(source, "state dict"), {}, "state dict")
    if not isinstance(source, (str, Path)):
        raise UserError(
            f"{argument} must be a weight file path, a pretrained name or a state dict, got {type(source).__name__}",
            field=argument,
        )
    if entry is not None:
        return read_published(entry)[0]
    if is_hub_name(source):
        return read_hub(str(source), argument)
    tensors, metadata = read_weights(source)
    return Source(tensors, metadata, str(source))


def read_converted(entry: Pretrained, path: Path) -> Source:
    """effnet's converted file of a downloaded checkpoint, read."""
    try:
        tensors, metadata = read_weights(path)
    except UserError as err:
        raise UserError(f"pretrained weights {entry.name}: {err}; delete {path} and run again") from None
    return Source(tensors, metadata, entry.name, entry=entry)


def resolve_format(src: Source, format: str) -> WeightFormat:
    if format != "auto":
        return get_format(format)
    found = src.format or detect_format(src.tensors, src.metadata)
    if found is None:
        sample = ", ".join(list(src.tensors)[:3]) or "no tensors"
        raise UserError(
            f"format must be named: {src.label}: cannot tell which layout its keys are in ({sample}, …)",
            field="format",
        )
    return WEIGHT_FORMATS[found]


def source_classes(tensors: Mapping[str, torch.Tensor], layout: Layout | None, model: nn.Module) -> int | None:
    """The class count of the classifier in a source, if it has one."""
    weight = source_tensor(tensors, layout, model, "classifier")
    return int(weight.shape[0]) if weight is not None and weight.ndim == 2 else None


def source_tensor(
    tensors: Mapping[str, torch.Tensor], layout: Layout | None, model: nn.Module, role: str
) -> torch.Tensor | None:
    """A source tensor of one model part (the weight), converted to effnet's layout, or None."""
    if layout is None:
        return tensors.get(f"{role}.weight")
    prefix = layout.module_key(Part(role, role), model)
    kind = "linear" if role == "classifier" else "conv"
    key = next((k for k in layout.param_keys(prefix, "weight", kind) if k in tensors), None)
    return None if key is None else layout.convert(tensors[key], kind, "weight", tensors[key])


def _guess_model(tensors: Mapping[str, torch.Tensor], layout: Layout | None, model: EfficientNet) -> str | None:
    """Which published model's tensors a source holds (classifier aside), if any."""
    stem = source_tensor(tensors, layout, model, "stem.conv")
    for name in model_names():
        if stem is not None and get_description(name).stem_channels != stem.shape[0]:
            continue  # cheap test first: most candidates differ in their stem
        try:
            spec = resolve_description(name).with_(padding=model.spec.padding)
            with torch.device("meta"):
                candidate = EfficientNet(spec, in_chans=model.in_chans)
            _, problems = convert_state_dict(candidate, tensors, layout, exclude_classifier=True)
        except (UserError, ValueError, TypeError):
            continue
        if not problems:
            return candidate.spec.name
    return None


def _classifier_names(model: EfficientNet) -> set[str]:
    """What the classifier is called in effnet and in every registered layout."""
    part = Part("classifier", "classifier")
    layouts = (fmt.layout for fmt in WEIGHT_FORMATS.values() if fmt.layout is not None)
    return {"classifier", *(layout.module_key(part, model) for layout in layouts)}


def _explain(model: EfficientNet, src: Source, fmt: WeightFormat, problems: list[str]) -> str:
    hints = []
    file_classes = source_classes(src.tensors, fmt.layout, model)
    if file_classes is not None and file_classes != model.num_classes:
        hints.append(f"file has {file_classes} classes, model {model.num_classes}")
    classifier = _classifier_names(model)
    if not all(any(name in p for name in classifier) for p in problems):
        if is_native(src.metadata):
            held = info_from_metadata(src.metadata, src.label).spec.name
        else:
            held = _guess_model(src.tensors, fmt.layout, model)
        if held and held != model.spec.name:
            hints.append(f"file looks like {held}, model is {model.spec.name}")
        detected = detect_format(src.tensors, src.metadata)
        if detected and detected != fmt.name:
            hints.append(f"its keys are in the {detected} layout, not {fmt.name}")
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    hint = f" — {'; '.join(hints)}" if hints else ""
    return f"{src.label} does not fit {model.spec.name}{hint}: {problems[0]}{more}"


def _set_bn_eps(model: EfficientNet, eps: float) -> None:
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.eps = eps
    if model.spec.bn_eps != eps:
        model.spec = model.spec.with_(bn_eps=eps)


def fit(model: EfficientNet, src: Source, fmt: WeightFormat, exclude_classifier: bool) -> EfficientNet:
    """Load ``src`` (in ``fmt``) into ``model``, every tensor checked first, and set BatchNorm eps to what
    the source computes with; ``exclude_classifier`` keeps the model's own classifier."""
    described = info_from_metadata(src.metadata, src.label).spec if fmt is NATIVE and is_native(src.metadata) else None
    if fmt.padding is not None and model.spec.padding != fmt.padding:
        raise UserError(
            f"model has {model.spec.padding!r} padding, {fmt.name} weights were trained with {fmt.padding!r}: "
            f"build the model with padding={fmt.padding!r}",
            field="model",
        )
    eps = fmt.bn_eps_for(described if described is not None else model.spec)
    state, problems = convert_state_dict(model, src.tensors, fmt.layout, exclude_classifier=exclude_classifier)
    if problems:
        raise UserError(_explain(model, src, fmt, problems))
    if described is not None:
        check_description(described, model.spec, src.label)
    model.load_state_dict(state, strict=True)
    _set_bn_eps(model, eps)
    return model
