"""Models built with their weights: :func:`create_model` (by name or description, optionally with a
published checkpoint), :func:`load_model` (a model and what it needs to predict, from a weight file or
a checkpoint's name) and :func:`load_weights` (any supported layout into a model). The one place above
both :mod:`effnet.models` and :mod:`effnet.weights`, which know nothing of each other's callers.

A checkpoint that is downloaded (:mod:`effnet.weights.hub`) is converted once, with its own
padding, preprocessing and classes, into a self-describing effnet file in effnet's cache; later
loads read that file and touch neither the network nor the libraries' caches."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from effnet.atomic import make_folder
from effnet.describe.blocks import MAX_CHANNELS
from effnet.describe.network import NetworkSpec
from effnet.errors import UserError, check_bool, check_whole_number
from effnet.models.efficientnet import MAX_CLASSES, EfficientNet
from effnet.models.profile import available_memory_bytes, profile
from effnet.preprocess import default_preprocessing
from effnet.weights.formats import get_format
from effnet.weights.hub import converted_path, is_hub_name
from effnet.weights.layout import WeightFormat
from effnet.weights.native import NATIVE, WeightsInfo, info_from_metadata, is_native, save_weights
from effnet.weights.pretrained import Pretrained, get_pretrained
from effnet.weights.source import (
    Source,
    fit,
    imagenet_class_names,
    pretrained_entry,
    read_converted,
    read_published,
    read_source,
    resolve_format,
    source_classes,
    source_tensor,
)
from effnet.zoo import resolve_description


def create_model(
    name_or_description: str | NetworkSpec,
    *,
    pretrained: bool | str = False,
    num_classes: int | None = None,
    in_chans: int = 3,
    padding: str | None = None,
    features_only: bool = False,
    memory_efficient: bool = False,
    **overrides: Any,
) -> EfficientNet:
    """Build a model by name (``efficientnet_b0``…``b8``, ``l2``, ``lite0``…``lite4``, other
    baselines) or from a description. ``overrides`` change description fields, e.g.
    ``drop_path_rate=0.0``, ``dropout=0.5``, ``resolution=320``, ``bn_eps=1e-5``.
    ``memory_efficient`` turns on the training memory mode (same parameters and function).
    ``num_classes`` (0–1,000,000) and ``in_chans`` (1–65,536) are checked, and the model is counted on
    the meta device first: one that cannot fit in memory is a :class:`UserError`, nothing allocated.

    ``pretrained=True`` loads the published checkpoint the name asks for (``tf_efficientnet_b3``,
    ``efficientnet_b3.ra2_in1k``; a bare name its publisher's default), ``pretrained="TAG"`` the
    one with that tag (``create_model("efficientnet_b3", pretrained="ns_jft_in1k")``): downloaded and
    converted once (:mod:`effnet.weights`), with its padding and BatchNorm eps; its preprocessing
    and class names are in ``model.pretrained_info``. ``num_classes`` (default: the checkpoint's, else
    1000) other than the checkpoint's gives a fresh classifier for fine-tuning.

    ``create_model("hf-hub:OWNER/NAME[@REVISION]", pretrained=True)`` loads the effnet weight file of
    any Hub repository (``effnet push`` makes one): the file describes its network, so scaled variants
    load too. ``create_model(NAME, pretrained="hf-hub:…")`` loads it into the model NAME, refused where
    the file holds another network."""
    check_bool("features_only", features_only)
    check_bool("memory_efficient", memory_efficient)
    if not isinstance(pretrained, (bool, str)):
        raise UserError(f"pretrained must be True, False or a tag, got {pretrained!r}", field="pretrained")
    if pretrained is not False:
        return _pretrained_model(
            name_or_description, pretrained, num_classes, in_chans, padding, features_only, memory_efficient, overrides
        )
    if is_hub_name(name_or_description):
        raise UserError(
            f"{name_or_description} names weights on the Hub: pass pretrained=True to load them", field="pretrained"
        )
    spec = resolve_description(name_or_description)
    if padding is not None:
        overrides["padding"] = padding
    if overrides:
        spec = spec.with_(**overrides)
    classes = 1000 if num_classes is None else num_classes
    check_fits(spec, num_classes=classes, in_chans=in_chans, features_only=features_only)
    return EfficientNet(
        spec,
        num_classes=classes,
        in_chans=in_chans,
        features_only=features_only,
        memory_efficient=memory_efficient,
    )


def _pretrained_model(
    name: str | NetworkSpec,
    pretrained: bool | str,
    num_classes: int | None,
    in_chans: int,
    padding: str | None,
    features_only: bool,
    memory_efficient: bool,
    overrides: dict[str, Any],
) -> EfficientNet:
    """:func:`create_model` with a checkpoint."""
    if not (isinstance(name, str) or is_hub_name(pretrained)) or not isinstance(pretrained, (bool, str)):
        raise UserError(
            "pretrained weights are asked for by a model name and pretrained=True or a tag (or any model and "
            'pretrained="hf-hub:OWNER/NAME")',
            field="pretrained",
        )
    if padding is not None:
        overrides["padding"] = padding
    if is_hub_name(name) or is_hub_name(pretrained):
        if is_hub_name(name) and pretrained is not True:
            raise UserError(
                f"pretrained must be True for {name} (a revision goes after '@': hf-hub:OWNER/NAME@REVISION), "
                f"got {pretrained!r}",
                field="pretrained",
            )
        hub, model = (str(name), None) if is_hub_name(name) else (str(pretrained), name)
        net, info = load_model(hub, num_classes=num_classes, model=model, **overrides)
        if in_chans != info.in_chans:
            raise UserError(
                f"in_chans must be {info.in_chans} for {hub} (its file's), got {in_chans!r}", field="in_chans"
            )
    else:
        entry = get_pretrained(name, None if pretrained is True else pretrained)
        if in_chans != 3:
            raise UserError(
                f"in_chans must be 3 for pretrained weights ({entry.name} takes RGB), got {in_chans!r}",
                field="in_chans",
            )
        net, info = load_model(entry.name, num_classes=num_classes, **overrides)
    if features_only:
        backbone = EfficientNet(net.spec, num_classes=0, in_chans=net.in_chans, features_only=True)
        state = net.state_dict()
        backbone.load_state_dict({key: state[key] for key in backbone.state_dict()})
        net = backbone
    if memory_efficient:
        net.set_memory_efficient(True)
    net.pretrained_info = info
    return net


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
    return fit(model, src, resolve_format(src, format), exclude_classifier)


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
    return _build(src, resolve_format(src, format), num_classes, model, overrides)


def _build(
    src: Source, fmt: WeightFormat, num_classes: int | None, model: str | NetworkSpec | None, overrides: dict
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
        file_classes = source_classes(src.tensors, fmt.layout, probe)  # None: the file has no classifier
        stem = source_tensor(src.tensors, fmt.layout, probe, "stem.conv")
        in_chans = int(stem.shape[1]) if stem is not None and stem.ndim == 4 else 3
        class_names = imagenet_class_names() if file_classes == 1000 else None
        preprocessing = own or fmt.preprocessing(spec, name if isinstance(name, str) else spec.name)
        extra = {"source_format": fmt.name}
        if entry is not None:
            extra.update(pretrained=entry.name, license=entry.license, published=entry.source.where())
    if overrides:
        spec = spec.with_(**overrides)
    classes = num_classes if num_classes is not None else (1000 if file_classes is None else file_classes)
    check_fits(spec, num_classes=classes, in_chans=in_chans, what=src.label)  # a crafted header must not allocate first
    net = EfficientNet(spec, num_classes=classes, in_chans=in_chans)
    fit(net, src, fmt, exclude_classifier=classes != file_classes)
    if classes != file_classes:
        class_names = None
    if overrides.get("resolution") and preprocessing.resolution != net.spec.resolution:
        preprocessing = replace(default_preprocessing(net.spec), mean=preprocessing.mean, std=preprocessing.std)
    info = WeightsInfo(net.spec, classes, class_names, preprocessing, src.label, in_chans, dict(extra))
    return net, info


def check_fits(
    spec: NetworkSpec,
    *,
    num_classes: int = 1000,
    in_chans: int = 3,
    what: str = "model",
    batch_size: int | None = None,
    resolution: int | None = None,
    features_only: bool = False,
    field: str | None = None,
) -> int:
    """Refuse, before anything is allocated, a model that cannot fit in this machine's memory, counted on
    the meta device: its weights alone (a model being built), or with ``batch_size`` images at
    ``resolution`` (:meth:`~effnet.models.profile.Profile.memory_bytes` of
    :func:`~effnet.models.profile.profile`, inference). The message names ``field`` (else the argument that
    makes the model large: num_classes or in_chans) or ``what`` (a file). Returns the multiply-adds of one
    image (with a batch) or 0."""
    check_whole_number("num_classes", num_classes, 0, high=MAX_CLASSES)
    check_whole_number("in_chans", in_chans, 1, high=MAX_CHANNELS)
    classes = 0 if features_only else num_classes
    if batch_size is None:  # the weights: building on the meta device costs what building costs
        with torch.device("meta"):
            params = sum(p.numel() for p in EfficientNet(spec, num_classes=classes, in_chans=in_chans).parameters())
        macs, size, need = 0, resolution or spec.resolution, params * 4
    else:
        counts = profile(spec, num_classes=classes, in_chans=in_chans, resolution=resolution)
        params, macs, size = counts.params, counts.macs, counts.resolution
        need = counts.memory_bytes(batch_size, training=False)
    free = available_memory_bytes()
    if free is None or need <= free:
        return macs
    if field is None:
        stem, classifier = in_chans * spec.stem_channels * spec.stem_kernel**2, spec.num_features * num_classes
        field = "num_classes" if classifier > params / 2 else "in_chans" if stem > params / 2 else None
    shown = {"num_classes": num_classes, "in_chans": in_chans, "batch_size": batch_size}.get(field or "")
    named = f"{field} {shown:,}" if shown is not None else (field or what)
    batch = f" at batch {batch_size}" if batch_size is not None else ""
    raise UserError(
        f"{named}: {spec.name} at {size} px with {num_classes:,} classes and {in_chans:,} input channels has "
        f"{params:,} parameters and needs ~{_size(need)}{batch}, {_size(free)} available",
        field=field or ("model" if what == "model" else None),
    )


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**30:,.1f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:,.1f} MiB"


def _read(source: str | Path | Mapping[str, torch.Tensor], argument: str) -> Source:
    if is_hub_name(source):
        return read_source(source, argument)  # any Hub repository: read from huggingface_hub's cache as it is
    entry = pretrained_entry(source) if isinstance(source, (str, Path)) else None
    if entry is not None and entry.source.remote:
        return read_converted(entry, _converted(entry))
    return read_source(source, argument, entry)


def _converted(entry: Pretrained) -> Path:
    """effnet's converted file of a downloaded checkpoint, made on first use."""
    path = converted_path(entry.name)
    if path.is_file():
        return path
    src, raw = read_published(entry)
    try:
        net, info = _build(src, get_format(entry.format), None, None, {})
        if info.num_classes != entry.num_classes:
            raise UserError(f"{entry.name} has {info.num_classes} classes, the checkpoint {entry.num_classes}")
    except UserError as err:
        raise UserError(f"{err}; {raw} holds another network: {entry.source.remedy(raw)}") from None
    make_folder(path.parent)
    save_weights(net, path, class_names=info.class_names, preprocessing=info.preprocessing, extra=info.extra)
    return path
