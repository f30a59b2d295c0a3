"""What :func:`~effnet.train.train_model` and :func:`~effnet.train.finetune_model` return."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from effnet.results import Result


@dataclass(frozen=True)
class TrainReport(Result):
    """A finished run: accuracy of the evaluated weights (EMA where the recipe has one) on the validation
    split, the model's cost, speed and the run's settings. ``top1``/``top5`` are fractions."""

    model: str
    data: str
    top1: float
    top5: float
    loss: float  # validation cross-entropy
    train_loss: float  # mean over the last epoch's steps
    params: int
    macs: int
    seconds: float  # wall clock, set-up and evaluation included
    train_seconds: float
    images_per_second: float  # training images over all processes
    epochs: int
    epochs_done: int
    stopped_early: bool  # by the time limit
    steps: int
    batch_size: int
    world_size: int
    resolution: int
    num_classes: int
    class_names: list[str]
    seed: int
    recipe: str
    lr: float  # peak learning rate
    ema: bool
    device: str
    blocks: list[str]
    history: list[dict[str, Any]]  # one metrics record per epoch
    output: str | None = None  # the run's folder, where it wrote one

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-friendly data; ``output`` last, and only where the run wrote a folder."""
        data = super().to_dict()
        output = data.pop("output")
        return data if output is None else {**data, "output": output}


@dataclass(frozen=True)
class FinetuneReport(TrainReport):
    """A fine-tuning run: a :class:`TrainReport` with the weights it started from and what was frozen."""

    weights: str = ""
    freeze_epochs: int = 0
    freeze_stages: int = 0
