"""Weights in and out: effnet's self-describing safetensors files, importers for timm, torchvision,
lukemelas EfficientNet-PyTorch and Keras layouts, pretrained weights available offline."""

from effnet.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    LITE_MEAN,
    LITE_STD,
    Preprocessing,
    default_preprocessing,
)
from effnet.weights.load import (
    FORMATS,
    PRETRAINED,
    detect_format,
    imagenet_class_names,
    load_model,
    load_weights,
    pretrained_names,
)
from effnet.weights.native import WeightsInfo, save_weights

__all__ = [
    "FORMATS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LITE_MEAN",
    "LITE_STD",
    "PRETRAINED",
    "Preprocessing",
    "WeightsInfo",
    "default_preprocessing",
    "detect_format",
    "imagenet_class_names",
    "load_model",
    "load_weights",
    "pretrained_names",
    "save_weights",
]
