"""Fine-tuning pretrained weights on new classes: a fresh classifier, the ``finetune`` recipe (AdamW; its
choice is measured in benchmarks/FINETUNE.md) and an optional frozen backbone for the first epochs."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from torch import nn

from effnet.data import DataSplits
from effnet.describe.network import NetworkSpec
from effnet.errors import UserError, check_whole_number
from effnet.train.config import RunConfig
from effnet.train.recipe import Recipe
from effnet.train.report import FinetuneReport
from effnet.train.setup import RunNetwork, zero_classifier
from effnet.train.trainer import FitCheck, run_training


class BackboneFreezer:
    """Epoch setup: for the first ``epochs`` epochs only the classifier trains (BatchNorm statistics of the
    backbone stay as loaded); afterwards everything trains, except the stem and the first ``stages``
    stages, which stay frozen for the whole run (weights and statistics as loaded; no backward pass
    through them, so each step is cheaper)."""

    def __init__(self, epochs: int, stages: int = 0) -> None:
        self.epochs = epochs
        self.stages = stages

    @property
    def freezes(self) -> bool:
        """Whether some parameters get no gradient at some point (DDP must then look for them)."""
        return self.epochs > 0 or self.stages > 0

    def __call__(self, model: nn.Module, epoch: int) -> None:
        frozen = epoch < self.epochs
        classifier = model.classifier  # type: ignore[attr-defined]
        head_params = {id(p) for p in classifier.parameters()}
        for param in model.parameters():
            param.requires_grad_(not frozen or id(param) in head_params)
        model.train()
        if frozen:
            model.eval()
            classifier.train()
            model.dropout.train()  # type: ignore[attr-defined]
        if self.stages:
            for part in (model.stem, *model.stages[: self.stages]):  # type: ignore[attr-defined]
                part.requires_grad_(False)
                part.eval()


def finetune_model(
    weights: str | Path,
    data: str | Path,
    *,
    model: str | NetworkSpec | None = None,
    format: str = "auto",
    freeze_epochs: int = 0,
    freeze_stages: int = 0,
    **settings: Any,
) -> FinetuneReport:
    """Fine-tune pretrained ``weights`` (a weight file of any format effnet loads, or a pretrained name such
    as ``lite0-imagenet``) on ``data``: the classifier is replaced for the data's classes, the recipe
    (``finetune``: AdamW at 1e-3 × batch/32, cosine, pretrained BatchNorm statistics kept, no EMA, no
    augmentation; ``finetune_sgd``: the earlier SGD one) trains everything after ``freeze_epochs`` epochs of training the classifier alone; ``freeze_stages`` keeps the stem and that many first stages as loaded
    throughout (cheaper steps, as for small images).

    ``settings`` are those of :func:`~effnet.train.train_model`, here with ``epochs=5`` and
    ``recipe="finetune"`` by default. Returns a :class:`~effnet.train.FinetuneReport`."""
    config, recipe_settings = RunConfig.split(settings, epochs=5, recipe="finetune")
    check_whole_number("freeze_epochs", freeze_epochs, 0)
    check_whole_number("freeze_stages", freeze_stages, 0)
    freezer = BackboneFreezer(freeze_epochs, freeze_stages)

    def build(splits: DataSplits, recipe: Recipe, changes: dict[str, Any], fits: FitCheck) -> RunNetwork:
        from effnet.factory import load_model

        net, info = load_model(weights, num_classes=splits.num_classes, model=model, format=format, **changes)
        if freeze_stages >= len(net.stages):
            raise UserError(f"freeze_stages must be below the model's {len(net.stages)} stages, got {freeze_stages}")
        fits(net.spec)  # the description is the file's: known once it is read, before the device and batches
        if info.class_names != splits.class_names:  # a new classifier
            zero_classifier(net)
        mean_std = (tuple(info.preprocessing.mean), tuple(info.preprocessing.std))
        return RunNetwork(net, epoch_setup=freezer, find_unused_parameters=freezer.freezes, mean_std=mean_std)

    report = partial(FinetuneReport, weights=str(weights), freeze_epochs=freeze_epochs, freeze_stages=freeze_stages)
    return run_training(config, data, recipe_settings, build, report)
