"""Progressive learning (EfficientNetV2, Tan & Le 2021, Section 4.2 and Algorithm 1), for any model.

Training is split into ``S = progressive_stages`` stages; stage ``i`` (0-based) holds epochs
``[⌊i·E/S⌋, ⌊(i+1)·E/S⌋)`` of the ``E`` epochs, so the stages differ in length by one epoch at most and
the longer ones come last. Within a stage, the training image size, the RandAugment magnitude, the
mixup and CutMix α and the classifier's dropout are constant; from stage to stage each moves linearly
from its start value (stage 0) to its end value (stage ``S − 1``): ``start + (end − start)·i/(S − 1)``,
sizes and magnitudes rounded to the nearest whole number (a single stage trains at the end values).
Evaluation stays at the run's evaluation resolution throughout.

effnet follows the paper here. The official code (``effnetv2/main.py``) differs: its stage sizes are
``int(start + (end − start)·(i + 1)/S)`` (V2-S: 171, 214, 257, 300; it never trains at 128 px), and
the dropout ramp it computes is discarded, so its dropout stays constant; its RandAugment
(``linspace(5, M, S)``) and mixup (``linspace(0, α, S)``) ramps are the paper's.

A run without progressive learning is one stage over all epochs at the recipe's constant values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from effnet.describe.network import NetworkSpec
from effnet.errors import UserError
from effnet.results import Result
from effnet.train.recipe import Recipe


@dataclass(frozen=True)
class Stage(Result):
    """The training settings of one stage (``index`` 0-based, of ``count``), epochs ``[first_epoch,
    stop_epoch)``: image size, RandAugment magnitude (used where the recipe's augment is randaugment),
    mixup and CutMix α (0: off) and the classifier's dropout."""

    index: int
    count: int
    first_epoch: int
    stop_epoch: int
    resolution: int
    randaugment_m: int
    mixup_alpha: float
    cutmix_alpha: float
    dropout: float

    def label(self) -> str:
        """``stage 2/4, 185 px``: what the progress bar shows."""
        return f"stage {self.index + 1}/{self.count}, {self.resolution} px"


@dataclass(frozen=True)
class StagePlan:
    """A run's stages in order; ``progressive`` is false for the one stage of a run without it."""

    stages: tuple[Stage, ...]
    progressive: bool

    def stage_of(self, epoch: int) -> Stage:
        """The stage that trains epoch ``epoch`` (0-based; past the last epoch: the last stage)."""
        return next((s for s in self.stages if epoch < s.stop_epoch), self.stages[-1])

    def record(self, epoch: int) -> dict | None:
        """What a checkpoint records about the stage of epoch ``epoch`` (None without progressive learning)."""
        return self.stage_of(epoch).to_dict() if self.progressive else None


def stage_bounds(stages: int, epochs: int) -> list[tuple[int, int]]:
    """Epochs ``[⌊i·E/S⌋, ⌊(i+1)·E/S⌋)`` of each stage ``i``."""
    return [(i * epochs // stages, (i + 1) * epochs // stages) for i in range(stages)]


def ramp(start: float, end: float, index: int, count: int) -> float:
    """The value of stage ``index`` of ``count`` on the line from ``start`` (first) to ``end`` (last)."""
    return end if count == 1 else start + (end - start) * index / (count - 1)


def _nearest(value: float) -> int:
    return math.floor(value + 0.5)


def plan_stages(recipe: Recipe, epochs: int, spec: NetworkSpec, run_resolution: int | None) -> StagePlan:
    """The stages of a run of ``epochs`` epochs training ``spec`` (the description with the run's changes;
    ``run_resolution``: the resolution the run was given, if any). Without progressive learning: one
    stage at ``spec.resolution``. A schedule that cannot run is a UserError naming its setting."""
    count = recipe.progressive_stages
    if count == 0:
        stage = Stage(0, 1, 0, epochs, spec.resolution, recipe.randaugment_m, recipe.mixup_alpha,
                      recipe.cutmix_alpha, spec.dropout)  # fmt: skip
        return StagePlan((stage,), progressive=False)
    if count > epochs:
        raise UserError(
            f"progressive_stages must be at most the run's {epochs} epoch(s) (one epoch a stage at least), got {count}",
            field="progressive_stages",
        )
    end = recipe.resolution_end or run_resolution or spec.train_resolution or spec.resolution
    start = recipe.resolution_start or max(1, end // 2)
    if end < start:
        raise UserError(
            f"resolution_start must be ≤ the end size {end} px (resolution_end, default: the run's resolution "
            f"or the description's train_resolution): the image size grows, got {start}",
            field="resolution_start",
        )
    if start < spec.total_stride:
        raise UserError(
            f"resolution_start must be ≥ the model's total stride {spec.total_stride} px, got {start}",
            field="resolution_start",
        )

    def between(name: str, constant: float, index: int) -> float:
        first, last = getattr(recipe, f"{name}_start"), getattr(recipe, f"{name}_end")
        return ramp(constant if first is None else first, constant if last is None else last, index, count)

    stages = [
        Stage(
            index=index,
            count=count,
            first_epoch=first_epoch,
            stop_epoch=stop_epoch,
            resolution=_nearest(ramp(start, end, index, count)),
            randaugment_m=_nearest(between("randaugment_m", recipe.randaugment_m, index)),
            mixup_alpha=between("mixup_alpha", recipe.mixup_alpha, index),
            cutmix_alpha=between("cutmix_alpha", recipe.cutmix_alpha, index),
            dropout=between("dropout", spec.dropout, index),
        )
        for index, (first_epoch, stop_epoch) in enumerate(stage_bounds(count, epochs))
    ]
    return StagePlan(tuple(stages), progressive=True)


def stage_difference(found: dict | None, expected: dict | None, epoch: int) -> str:
    """Why a checkpoint's stage record (``found``) is not what this run's schedule gives at ``epoch``."""
    if found is None or expected is None:
        was, now = ("was not", "is") if found is None else ("was", "is not")
        return f"it {was} written by a progressive run and this run {now} one"
    changed = ", ".join(
        f"{key} {found.get(key)!r} there, {value!r} here" for key, value in expected.items() if found.get(key) != value
    )
    return f"its stage at epoch {epoch + 1} differs from this run's schedule ({changed}); resume with its settings"
