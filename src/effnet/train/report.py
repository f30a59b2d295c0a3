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
    #: The evaluated weights on the validation split (:meth:`effnet.train.evaluate.EvaluationReport.summary`:
    #: top-1 with its 95% interval, top-5, ECE, the worst classes), where the caller evaluated them.
    evaluation: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-friendly data; ``evaluation`` and ``output`` last, each only where there is one."""
        data = super().to_dict()
        last = {key: data.pop(key) for key in ("evaluation", "output")}
        return {**data, **{key: value for key, value in last.items() if value is not None}}


@dataclass(frozen=True)
class FinetuneReport(TrainReport):
    """A fine-tuning run: a :class:`TrainReport` with the weights it started from and what was frozen."""

    weights: str = ""
    freeze_epochs: int = 0
    freeze_stages: int = 0
