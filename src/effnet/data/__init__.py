"""Training data: datasets (scikit-learn's digits, image folders), resumable sampling and the training
augmentation. Evaluation images go through :mod:`effnet.preprocess`."""

from effnet.data.datasets import (
    DataSplits,
    DataWarning,
    FileImages,
    ImageSource,
    MemoryImages,
    load_digits_splits,
    load_folder_splits,
    load_splits,
)
from effnet.data.sampling import (
    ResumableSampler,
    ShardSampler,
    TransformedDataset,
    default_workers,
    make_eval_loader,
    make_train_loader,
    sample_seed,
)
from effnet.data.transforms import Augmentation, batch_mixer, train_transform

__all__ = [
    "Augmentation",
    "batch_mixer",
    "DataSplits",
    "DataWarning",
    "FileImages",
    "ImageSource",
    "MemoryImages",
    "ResumableSampler",
    "ShardSampler",
    "TransformedDataset",
    "default_workers",
    "load_digits_splits",
    "load_folder_splits",
    "load_splits",
    "make_eval_loader",
    "make_train_loader",
    "sample_seed",
    "train_transform",
]
