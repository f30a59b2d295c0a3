"""Loading weights into effnet models: :func:`load_weights` (any layout, checked before anything is
loaded) and :func:`load_model` (a model and what it needs to predict, from a native file or a
published checkpoint's name).

A checkpoint that is downloaded (:mod:`effnet.weights.hub`) is converted once, with its own
padding, preprocessing and classes, into a self-describing effnet file in effnet's cache; later
loads read that file and touch neither the network nor the libraries' caches."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from effnet.describe.network import NetworkSpec
from effnet.errors import UserError
from effnet.models.efficientnet import EfficientNet, create_model
from effnet.preprocess import Preprocessing, default_preprocessing
from effnet.weights.files import as_state_dict, read_weights
from effnet.weights.format import WeightFormat
from effnet.weights.formats import FORMATS, WEIGHT_FORMATS, detect_format, get_format
from effnet.weights.hub import converted_path, make_folder
from effnet.weights.layout import Layout, Part, convert_state_dict
from effnet.weights.native import NATIVE, WeightsInfo, check_description, info_from_metadata, is_native, save_weights
from effnet.weights.pretrained import PRETRAINED, Pretrained, find_pretrained, named_pretrained, pretrained_names
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
class _Source:
    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str]
    label: str
    format: str | None = None  # known from the source itself (pretrained names)
    model: str | None = None  # likewise
    entry: Pretrained | None = None  # the published checkpoint it is


def _entry_of(source: str | Path) -> Pretrained | None:
    """The published checkpoint a source names: a checkpoint's name or alias, or (text that is no
    file) any name :func:`~effnet.weights.pretrained.find_pretrained` resolves."""
    exact = named_pretrained(str(source))
    if exact is not None or not isinstance(source, str) or Path(source).exists():
        return exact
    try:
        return find_pretrained(source)
    except UserError as err:
        raise UserError(f"{source} is no weight file, and {err}") from None


def _published(entry: Pretrained) -> tuple[_Source, Path]:
    """The checkpoint's file as its publisher lays it out (downloaded if need be), and its path."""
    path = entry.path()
    try:
        tensors, metadata = read_weights(path)
    except UserError as err:
        raise UserError(f"pretrained weights {entry.name}: {err}; {entry.source.remedy(path)}") from None
    return _Source(tensors, metadata, entry.name, entry.format, entry.model, entry), path


def _converted(entry: Pretrained) -> Path:
    """effnet's converted file of a downloaded checkpoint, made on first use."""
    path = converted_path(entry.name)
    if path.is_file():
        return path
    src, raw = _published(entry)
    try:
        net, info = _build(src, get_format(entry.format), None, None, {})
        if info.num_classes != entry.num_classes:
            raise UserError(f"{entry.name} has {info.num_classes} classes, the checkpoint {entry.num_classes}")
    except UserError as err:
        raise UserError(f"{err}; {raw} holds another network: {entry.source.remedy(raw)}") from None
    make_folder(path.parent)
    save_weights(net, path, class_names=info.class_names, preprocessing=info.preprocessing, extra=info.extra)
    return path


def _read(source: str | Path | Mapping[str, torch.Tensor], argument: str) -> _Source:
    if isinstance(source, Mapping):
        return _Source(as_state_dict(source, "state dict"), {}, "state dict")
    if not isinstance(source, (str, Path)):
        raise UserError(
            f"{argument} must be a weight file path, a pretrained name or a state dict, got {type(source).__name__}",
            field=argument,
        )
    entry = _entry_of(source)
    if entry is not None and entry.source.remote:
        path = _converted(entry)
        try:
            tensors, metadata = read_weights(path)
        except UserError as err:
            raise UserError(f"pretrained weights {entry.name}: {err}; delete {path} and run again") from None
        return _Source(tensors, metadata, entry.name, entry=entry)
    if entry is not None:  # a file already on this machine: converted in memory each time
        return _published(entry)[0]
    tensors, metadata = read_weights(source)
    return _Source(tensors, metadata, str(source))


def _resolve_format(src: _Source, format: str) -> WeightFormat:
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


def _file_classes(tensors: Mapping[str, torch.Tensor], layout: Layout | None, model: nn.Module) -> int | None:
    """The class count of the classifier in a source, if it has one."""
    weight = _source_tensor(tensors, layout, model, "classifier")
    return int(weight.shape[0]) if weight is not None and weight.ndim == 2 else None


def _source_tensor(tensors: Mapping[str, torch.Tensor], layout: Layout | None, model: nn.Module, role: str):
    """A source tensor of one model part (the weight), converted to effnet's layout, or None."""
    if layout is None:
        return tensors.get(f"{role}.weight")
    prefix = layout.module_key(Part(role, role), model)
    kind = "linear" if role == "classifier" else "conv"
    key = next((k for k in layout.param_keys(prefix, "weight", kind) if k in tensors), None)
    return None if key is None else layout.convert(tensors[key], kind, "weight", tensors[key])


def _guess_model(tensors: Mapping[str, torch.Tensor], layout: Layout | None, model: EfficientNet) -> str | None:
    """Which published model's tensors a source holds (classifier aside), if any."""
    stem = _source_tensor(tensors, layout, model, "stem.conv")
    for name in model_names():
        if stem is not None and get_description(name).stem_channels != stem.shape[0]:
            continue  # cheap test first: most candidates differ in their stem
        try:
            with torch.device("meta"):
                candidate = create_model(name, in_chans=model.in_chans, padding=model.spec.padding)
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


def _explain(model: EfficientNet, src: _Source, fmt: WeightFormat, problems: list[str]) -> str:
    hints = []
    file_classes = _file_classes(src.tensors, fmt.layout, model)
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


def _load(model: EfficientNet, src: _Source, fmt: WeightFormat, exclude_classifier: bool) -> EfficientNet:
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


def load_weights(
    model: EfficientNet,
    path_or_state_dict: str | Path | Mapping[str, torch.Tensor],
    format: str = "auto",
    *,
    exclude_classifier: bool = False,
) -> EfficientNet:
    """Load weights of any supported layout into ``model`` and return it.

    ``path_or_state_dict``: a weight file (safetensors, ``.pth``/``.pt`` read with
    ``weights_only=True``, Keras HDF5), a state dict, or a pretrained name (``lite0-imagenet``).
    ``format``: auto or a name in :data:`~effnet.weights.formats.WEIGHT_FORMATS` (native, timm,
    torchvision, lukemelas, keras). The complete new state dict is built and every key and shape
    checked before anything is loaded; a mismatch raises :class:`UserError` naming the first tensor
    that disagrees. BatchNorm eps is set to what the source computes with (the format's rule: timm
    1e-3 for 'same'-padded tf_ models, 1e-5 for symmetric ones; torchvision 1e-5, b5–b7 1e-3;
    lukemelas/Keras 1e-3; native: the file's description). ``exclude_classifier`` keeps the model's
    own classifier (fine-tuning to other classes).
    """
    src = _read(path_or_state_dict, "path_or_state_dict")
    if not isinstance(model, EfficientNet):
        raise UserError(f"model must be an effnet EfficientNet, got {type(model).__name__}", field="model")
    return _load(model, src, _resolve_format(src, format), exclude_classifier)


def load_model(
    path_or_name: str | Path,
    *,
    num_classes: int | None = None,
    model: str | NetworkSpec | None = None,
    format: str = "auto",
    **overrides: Any,
) -> tuple[EfficientNet, WeightsInfo]:
    """A ready model and its :class:`WeightsInfo` from a native weight file or a pretrained name.

    ``num_classes`` different from the file's gives a fresh classifier for fine-tuning (everything
    else loaded; also used for files without a classifier, such as Keras "notop" files). A foreign
    file (timm, torchvision, lukemelas, Keras) needs ``model`` (a name or description), built with
    the padding its format was trained with (timm names starting with ``tf_`` get 'same' padding,
    others symmetric). ``overrides`` change description fields that do not change tensors
    (``drop_path_rate``, ``dropout``, ``resolution``, …).
    """
    src = _read(path_or_name, "path_or_name")
    return _build(src, _resolve_format(src, format), num_classes, model, overrides)


def _build(
    src: _Source, fmt: WeightFormat, num_classes: int | None, model: str | NetworkSpec | None, overrides: dict
) -> tuple[EfficientNet, WeightsInfo]:
    """:func:`load_model` once the source is read and its format known."""
    class_names: list[str] | None
    if fmt is NATIVE and is_native(src.metadata):
        info = info_from_metadata(src.metadata, src.label)
        spec, file_classes, in_chans = info.spec, info.num_classes, info.in_chans
        if model is not None:  # the caller's architecture, checked against the file when loading
            spec = resolve_description(model).with_(padding=info.spec.padding)
        class_names, preprocessing, extra = info.class_names, info.preprocessing, info.extra
    else:
        name = model if model is not None else src.model
        if name is None:
            raise UserError(
                f"model must be named: {src.label} is not an effnet weight file (name its model and format, "
                "or convert it first)",
                field="model",
            )
        spec = resolve_description(name)
        entry = src.entry  # a published checkpoint says how it was trained and is evaluated
        padding = (
            entry.padding
            if entry and entry.padding
            else fmt.model_padding(name if isinstance(name, str) else spec.name)
        )
        if padding is not None and "padding" not in overrides:
            spec = spec.with_(padding=padding)
        own = entry.preprocessing if entry else None
        if own is not None and own.resolution != spec.resolution:
            spec = spec.with_(resolution=own.resolution)
        with torch.device("meta"):
            probe = EfficientNet(spec, num_classes=1)
        file_classes = _file_classes(src.tensors, fmt.layout, probe)  # None: the file has no classifier
        stem = _source_tensor(src.tensors, fmt.layout, probe, "stem.conv")
        in_chans = int(stem.shape[1]) if stem is not None and stem.ndim == 4 else 3
        class_names = imagenet_class_names() if file_classes == 1000 else None
        preprocessing = own or fmt.preprocessing(spec, name if isinstance(name, str) else spec.name)
        extra = {"source_format": fmt.name}
        if entry is not None:
            extra.update(pretrained=entry.name, license=entry.license, published=entry.source.where())
    if overrides:
        spec = spec.with_(**overrides)
    classes = num_classes if num_classes is not None else (1000 if file_classes is None else file_classes)
    net = EfficientNet(spec, num_classes=classes, in_chans=in_chans)
    _load(net, src, fmt, exclude_classifier=classes != file_classes)
    if classes != file_classes:
        class_names = None
    if overrides.get("resolution") and preprocessing.resolution != net.spec.resolution:
        preprocessing = replace(default_preprocessing(net.spec), mean=preprocessing.mean, std=preprocessing.std)
    info = WeightsInfo(net.spec, classes, class_names, preprocessing, src.label, in_chans, dict(extra))
    return net, info


#: FORMATS, PRETRAINED, Preprocessing, detect_format and pretrained_names stay importable from here
#: for one release; their homes are formats, pretrained and effnet.preprocess.
__all__ = [
    "FORMATS",
    "PRETRAINED",
    "Preprocessing",
    "WeightsInfo",
    "detect_format",
    "imagenet_class_names",
    "load_model",
    "load_weights",
    "pretrained_names",
]
