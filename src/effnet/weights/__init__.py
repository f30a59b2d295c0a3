"""Weights in and out: effnet's self-describing safetensors files, importers for timm, torchvision,
lukemelas EfficientNet-PyTorch and Keras layouts (one :class:`WeightFormat` each, registered in
:mod:`effnet.weights.formats`), pretrained weights available offline (:mod:`effnet.weights.pretrained`)."""

from effnet.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    LITE_MEAN,
    LITE_STD,
    Preprocessing,
    default_preprocessing,
)
from effnet.weights.format import WeightFormat
from effnet.weights.formats import FORMATS, WEIGHT_FORMATS, detect_format, get_format
from effnet.weights.load import imagenet_class_names, load_model, load_weights
from effnet.weights.native import WeightsInfo, save_weights
from effnet.weights.pretrained import PRETRAINED, Pretrained, pretrained_names

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
    "get_format",
    "imagenet_class_names",
    "load_model",
    "load_weights",
    "pretrained_names",
    "save_weights",
]
