"""Weights in and out: effnet's self-describing safetensors files, importers for timm, torchvision,
lukemelas EfficientNet-PyTorch and Keras layouts (one :class:`WeightFormat` each, registered in
:mod:`effnet.weights.formats`), the published checkpoints by name (:mod:`effnet.weights.pretrained`)
and their downloads and caches (:mod:`effnet.weights.hub`). Models are built with their weights
above this package, in :mod:`effnet.factory`."""

from effnet.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    LITE_MEAN,
    LITE_STD,
    Preprocessing,
    default_preprocessing,
)
from effnet.weights.formats import FORMATS, WEIGHT_FORMATS, detect_format, get_format
from effnet.weights.layout import WeightFormat
from effnet.weights.native import WeightsInfo, save_weights
from effnet.weights.pretrained import PRETRAINED, Pretrained, find_pretrained, get_pretrained, pretrained_names
from effnet.weights.source import imagenet_class_names

__all__ = [
    "FORMATS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LITE_MEAN",
    "LITE_STD",
    "PRETRAINED",
    "WEIGHT_FORMATS",
    "Preprocessing",
    "Pretrained",
    "WeightFormat",
    "WeightsInfo",
    "default_preprocessing",
    "detect_format",
    "find_pretrained",
    "get_format",
    "get_pretrained",
    "imagenet_class_names",
    "pretrained_names",
    "save_weights",
]
