"""effnet's own weight files: safetensors whose header says everything needed to predict.

Header metadata (all strings): ``format`` = "effnet", ``format_version``, ``description`` (the
network description JSON: block strings, scaling, padding, eps…), ``num_classes``, ``in_chans``,
``class_names`` (JSON list, optional), ``preprocessing`` (JSON), plus any ``extra`` entries.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field

from torch import nn

from effnet.atomic import atomic_write
from effnet.describe.network import NetworkSpec
from effnet.errors import UserError
from effnet.models.efficientnet import MAX_CLASSES
from effnet.preprocess import Preprocessing, default_preprocessing
from effnet.weights.layout import WeightFormat

FORMAT = "effnet"
FORMAT_VERSION = "1"
#: Bounds on a header's counts (ImageNet-21k has 21,843 classes; images have a few channels): a crafted
#: header must not make effnet build a classifier no machine holds.
MAX_IN_CHANS = 64
_RESERVED = {"format", "format_version", "description", "num_classes", "in_chans", "class_names", "preprocessing"}


@dataclass(frozen=True)
class WeightsInfo:
    """What a weight file says about its model: enough to build it and to predict with it."""

    spec: NetworkSpec
    num_classes: int
    class_names: list[str] | None
    preprocessing: Preprocessing
    source: str
    in_chans: int = 3
    extra: dict[str, str] = field(default_factory=dict)


def weights_header(
    model: nn.Module,
    *,
    class_names: list[str] | None = None,
    preprocessing: Preprocessing | None = None,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """The header that describes ``model`` (all strings): a native file's safetensors metadata, and
    an ONNX export's ``metadata_props`` (:func:`info_from_metadata` reads both)."""
    spec = getattr(model, "spec", None)
    if not isinstance(model, nn.Module) or not isinstance(spec, NetworkSpec):
        raise UserError(
            f"model must be an effnet model (a module with its description, .spec), got {type(model).__name__}",
            field="model",
        )
    num_classes = int(getattr(model, "num_classes", 0))
    if class_names is not None:
        if isinstance(class_names, (str, bytes)) or not isinstance(class_names, Sequence):
            raise UserError(f"class_names must be a list of names, got {type(class_names).__name__}",
                            field="class_names")  # fmt: skip
        if not all(isinstance(name, str) for name in class_names):
            bad = next(name for name in class_names if not isinstance(name, str))
            raise UserError(f"class_names must hold strings, got {bad!r}", field="class_names")
        class_names = list(class_names)
        if len(class_names) != num_classes:
            raise UserError(
                f"class_names lists {len(class_names)} class names for a model with {num_classes} classes",
                field="class_names",
            )
    if preprocessing is not None and not isinstance(preprocessing, Preprocessing):
        raise UserError(f"preprocessing must be a Preprocessing, got {type(preprocessing).__name__}",
                        field="preprocessing")  # fmt: skip
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "description": spec.to_json(indent=None),
        "num_classes": str(num_classes),
        "in_chans": str(int(getattr(model, "in_chans", 3))),
        "preprocessing": (preprocessing or default_preprocessing(spec)).to_json(),
    }
    if class_names is not None:
        metadata["class_names"] = json.dumps(class_names)
    if extra is not None and not isinstance(extra, Mapping):
        raise UserError(f"extra must be a mapping of names to text, got {type(extra).__name__}", field="extra")
    for key, value in (extra or {}).items():
        if key in _RESERVED:
            raise UserError(f"extra metadata key {key!r} is reserved", field="extra")
        metadata[str(key)] = str(value)
    return metadata


def save_weights(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    class_names: list[str] | None = None,
    preprocessing: Preprocessing | None = None,
    extra: dict[str, str] | None = None,
) -> None:
    """Write a self-describing safetensors file (atomically: a temporary file, then rename)."""
    from safetensors.torch import save_file

    metadata = weights_header(model, class_names=class_names, preprocessing=preprocessing, extra=extra)
    tensors = {key: t.detach().to("cpu").contiguous().clone() for key, t in model.state_dict().items()}
    atomic_write(path, write_path=lambda tmp: save_file(tensors, tmp, metadata=metadata))


def is_native(metadata: Mapping[str, str]) -> bool:
    """Whether a safetensors header is effnet's."""
    return metadata.get("format") == FORMAT


def info_from_metadata(metadata: dict[str, str], source: str) -> WeightsInfo:
    """The :class:`WeightsInfo` in a native file's header."""
    if not is_native(metadata):
        raise UserError(f"{source}: not an effnet weight file (no effnet header); convert it with `effnet convert`")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{source}: effnet weight format version {metadata.get('format_version')!r} is not supported")
    try:
        spec = NetworkSpec.from_json(metadata["description"])
        num_classes = int(metadata["num_classes"])
        in_chans = int(metadata.get("in_chans", "3"))
        names = json.loads(metadata["class_names"]) if "class_names" in metadata else None
    except (KeyError, ValueError) as err:
        raise UserError(f"{source}: damaged effnet header ({err})") from None
    if not 0 <= num_classes <= MAX_CLASSES or not 1 <= in_chans <= MAX_IN_CHANS:
        raise UserError(
            f"{source}: damaged effnet header: {num_classes} classes and {in_chans} input channels (at most "
            f"{MAX_CLASSES:,} and {MAX_IN_CHANS})"
        )
    if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
        raise UserError(f"{source}: damaged effnet header: class_names is not a list of names")
    if names is not None and len(names) != num_classes:
        raise UserError(f"{source}: header has {len(names)} class names for {num_classes} classes")
    if "preprocessing" in metadata:
        try:
            preprocessing = Preprocessing.from_json(metadata["preprocessing"])
        except UserError as err:
            raise UserError(f"{source}: {err}") from None
    else:
        preprocessing = default_preprocessing(spec)
    extra = {k: v for k, v in metadata.items() if k not in _RESERVED}
    return WeightsInfo(spec, num_classes, names, preprocessing, source, in_chans, extra)


def check_description(file_spec: NetworkSpec, model_spec: NetworkSpec, source: str) -> None:
    """Refuse a native file whose network computes differently from the model's (beyond its tensors)."""
    for name in ("activation", "padding"):
        have, want = getattr(file_spec, name), getattr(model_spec, name)
        if have != want:
            raise UserError(
                f"{source} holds {file_spec.name} with {name} {have!r}, the model ({model_spec.name}) has {want!r}"
            )


def _detect(keys: Set[str], metadata: Mapping[str, str]) -> bool:
    return is_native(metadata) or "stem.conv.weight" in keys


def _described_eps(spec: NetworkSpec) -> float:
    return spec.bn_eps


NATIVE = WeightFormat(
    name="native",
    about="effnet's self-describing safetensors (or a state dict with effnet's own names)",
    detect=_detect,
    layout=None,
    bn_eps=_described_eps,
)
