"""Fine-tuning pretrained weights on new classes: a fresh classifier, a lower learning rate and an
optional frozen backbone for the first epochs (the paper's transfer experiments)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from effnet.describe.network import NetworkSpec
from effnet.errors import UserError, check_whole_number
from effnet.train.data import load_splits
from effnet.train.trainer import (
    EpochCallback,
    RunConfig,
    Trainer,
    check_run_arguments,
    resolve_recipe,
    seed_everything,
    spec_changes,
    zero_classifier,
)


class BackboneFreezer:
    """Epoch setup: for the first ``epochs`` epochs only the classifier trains (BatchNorm statistics of the
    backbone stay as loaded); afterwards everything trains, except the stem and the first ``stages``
    stages, which stay frozen for the whole run (weights and statistics as loaded; no backward pass
    through them, so each step is cheaper)."""

    def __init__(self, epochs: int, stages: int = 0) -> None:
        self.epochs = epochs
        self.stages = stages

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
    epochs: int = 5,
    batch_size: int = 64,
    resolution: int | None = None,
    seed: int = 0,
    recipe: str = "finetune",
    output: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    max_steps_per_epoch: int | None = None,
    on_epoch_end: EpochCallback | None = None,
    time_limit: float | None = None,
    **recipe_overrides: Any,
) -> dict:
    """Fine-tune pretrained ``weights`` (a weight file of any format effnet loads, or a pretrained name such
    as ``lite0-imagenet``) on ``data``: the classifier is replaced for the data's classes, the recipe
    (``finetune``: SGD, low learning rate, cosine) trains everything after ``freeze_epochs`` epochs of
    training the classifier alone; ``freeze_stages`` keeps the stem and that many first stages as loaded
    throughout (cheaper steps, as for small images). Returns the same report as
    :func:`~effnet.train.train_model`."""
    from effnet.weights import load_model

    check_run_arguments(epochs, batch_size, seed, max_steps_per_epoch)
    check_whole_number("freeze_epochs", freeze_epochs, 0)
    check_whole_number("freeze_stages", freeze_stages, 0)
    device = recipe_overrides.pop("device", None)
    splits = load_splits(data)
    chosen = resolve_recipe(recipe, splits, recipe_overrides)
    changes = spec_changes(resolution, chosen)
    seed_everything(seed)
    net, info = load_model(weights, num_classes=splits.num_classes, model=model, format=format, **changes)
    if freeze_stages >= len(net.stages):
        raise UserError(f"freeze_stages must be below the model's {len(net.stages)} stages, got {freeze_stages}")
    if info.class_names != splits.class_names:  # a new classifier
        zero_classifier(net)
    config = RunConfig(
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        recipe=chosen,
        output=Path(output) if output is not None else None,
        resume=resume,
        progress=progress,
        max_steps_per_epoch=max_steps_per_epoch,
        on_epoch_end=on_epoch_end,
        device=device,
        time_limit=time_limit,
        epoch_setup=BackboneFreezer(freeze_epochs, freeze_stages),
        find_unused_parameters=freeze_epochs > 0 or freeze_stages > 0,
        mean_std=(tuple(info.preprocessing.mean), tuple(info.preprocessing.std)),
        extra_report={"weights": str(weights), "freeze_epochs": freeze_epochs, "freeze_stages": freeze_stages},
    )
    return Trainer(net, splits, config).run()
