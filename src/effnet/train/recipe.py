"""Training recipes as data: the paper's ImageNet recipe, and short-budget variants."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from effnet.describe.network import MAX_RESOLUTION
from effnet.errors import UserError, check_bool, check_number, check_whole_number

OPTIMIZERS = ("rmsprop_tf", "sgd", "adamw")
SCHEDULES = ("step", "cosine", "constant")
AUGMENTS = ("autoaugment", "randaugment", "none")
AMP_MODES = ("auto", "bf16", "off")
CLASSIFIER_INITS = ("official", "zero", "capped")
#: The largest RandAugment magnitude (torchvision's 31 magnitude bins: 0 … 30).
RANDAUGMENT_MAX = 30
#: The largest evaluation batch: 32× the paper's per-core training batch of 2048 (no gradients kept).
MAX_EVAL_BATCH = 131_072


@dataclass(frozen=True)
class Recipe:
    """Every setting of a training run. ``lr=None`` means ``base_lr × global batch / lr_base_batch``.

    Model settings left at ``None`` (``dropout``, ``drop_path_rate``) keep the description's values.
    """

    name: str = "paper"
    # optimiser (official main.py: RMSProp decay 0.9, momentum 0.9, epsilon 1e-3 inside the sqrt)
    optimizer: str = "rmsprop_tf"
    base_lr: float = 0.016
    lr_base_batch: int = 256
    lr: float | None = None
    rmsprop_decay: float = 0.9
    momentum: float = 0.9
    eps: float = 1e-3
    nesterov: bool = False
    weight_decay: float = 1e-5  # on conv/linear weights only, never BatchNorm or biases
    head_lr_scale: float = 1.0  # the classifier's learning rate over the rest's (a new head on a pretrained body)
    grad_clip: float | None = None
    # schedule: linear warm-up, then ×decay_rate every decay_epochs (staircase) or cosine
    schedule: str = "step"
    warmup_epochs: float = 5.0
    decay_epochs: float = 2.4
    decay_rate: float = 0.97
    min_lr_ratio: float = 0.0  # cosine floor, as a fraction of the peak
    # loss and averaging
    label_smoothing: float = 0.1
    ema_decay: float | None = 0.9999  # None: no EMA, the trained weights are evaluated and saved
    ema_warmup: bool = True  # decay = min(ema_decay, (1 + n) / (10 + n)) as tf.train.ExponentialMovingAverage
    # classifier initialisation: "official" U(±1/√classes) as the TF code (with few classes and a wide head
    # its logits start with std ≈ √(features/3/classes): loss ≈ 10 for B0 on 10 classes); "zero" (initial loss
    # ln classes, but no gradient reaches the backbone until the classifier has grown: slow on narrow heads);
    # "capped": the official bound, lowered where a wide head would start its logits above std 2
    # (U(±min(1/√classes, 2√3/√features))): the official init on narrow heads, trainable on wide ones
    classifier_init: str = "official"
    # model regularisation (None: the description's own values)
    drop_path_rate: float | None = 0.2
    dropout: float | None = None
    bn_momentum: float | None = None  # PyTorch convention; the official 0.99 decay is 0.01
    bn_warmup: bool = True  # BN momentum max(bn_momentum, 9 / (10 + step)), as the EMA's warm-up
    # BatchNorm statistics stay as loaded (the layers normalise with them in training too; their scale and
    # shift still train): fine-tuning on little data, where batch statistics differ from the pretrained
    # ones and a few dozen steps cannot re-estimate them
    freeze_bn: bool = False
    # augmentation (torchvision.transforms.v2), bicubic throughout
    augment: str = "autoaugment"
    randaugment_n: int = 2
    randaugment_m: int = 10
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: bool = True
    crop_pct: float | None = None  # eval centre crop; None: size / (size + 32) as the official code
    interpolation: str = "bicubic"
    # mixup / CutMix on training batches (torchvision.transforms.v2), soft-target cross-entropy; 0: off.
    # With both on, each batch gets one of the two, chosen with equal odds.
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    # progressive learning (EfficientNetV2; see effnet.train.progressive): 0 stages = off. Each setting
    # below ramps linearly from its _start value in the first stage to its _end value in the last;
    # None: the constant setting (randaugment_m, mixup_alpha, cutmix_alpha, the model's dropout). The
    # training size's end defaults to the run's resolution if given, else the description's
    # train_resolution, else its resolution; its start to half the end. Set only with progressive_stages ≥ 1.
    progressive_stages: int = 0
    resolution_start: int | None = None
    resolution_end: int | None = None
    randaugment_m_start: int | None = None
    randaugment_m_end: int | None = None
    mixup_alpha_start: float | None = None
    mixup_alpha_end: float | None = None
    cutmix_alpha_start: float | None = None
    cutmix_alpha_end: float | None = None
    dropout_start: float | None = None
    dropout_end: float | None = None
    # run settings
    amp: str = "auto"  # bf16 autocast where supported ("auto": on CUDA with bf16 support)
    channels_last: bool | None = None  # None: the device's default (train.setup.default_channels_last)
    compile: bool = False
    workers: int | None = None  # None: 0 for in-memory data, else min(8, cpus - 1)
    sync_bn: bool = False
    checkpoint_every_steps: int = 0  # 0: only at the end of each epoch
    keep_checkpoints: int = 2  # epoch checkpoints kept besides last.pt
    eval_batch_size: int | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["crop_scale"] = list(self.crop_scale)
        data["crop_ratio"] = list(self.crop_ratio)
        return data

    def peak_lr(self, global_batch: int) -> float:
        """The learning rate after warm-up for a global batch size."""
        return self.lr if self.lr is not None else self.base_lr * global_batch / self.lr_base_batch

    def with_(self, **changes: Any) -> Recipe:
        """A validated copy with some settings changed (unknown names are a UserError)."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise UserError(f"unknown recipe setting(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        for key in ("crop_scale", "crop_ratio"):
            if key in changes:
                changes[key] = _pair(key, changes[key])
        recipe = replace(self, **changes)
        check_recipe(recipe)
        return recipe


#: The most epochs a run may ask for (and warm-up or decay spans): ~300× the paper's 350, so a larger
#: number is a typo, not a plan.
MAX_EPOCHS = 100_000
#: The largest learning rate (``lr``, ``base_lr``): the optimisers hold it in float32 (to 3.4e38) after
#: scaling by up to 256× (the batch over ``lr_base_batch``); anything near it diverges at once, which
#: the run reports in one line.
MAX_LR = 1e30
#: The most RandAugment operations per image (torchvision's table has 14).
MAX_RANDAUGMENT_N = 14
#: The largest loader worker count per CPU: more processes than this only contend for the cores.
WORKERS_PER_CPU = 4
#: Numeric settings: (low, high, low excluded, high excluded). Every one is also finite.
NUMBER_RANGES: dict[str, tuple[float, float, bool, bool]] = {
    "base_lr": (0.0, MAX_LR, True, False),
    "lr": (0.0, MAX_LR, True, False),
    "rmsprop_decay": (0.0, 1.0, False, True),
    "momentum": (0.0, 1.0, False, True),
    "eps": (0.0, 1.0, True, False),
    "weight_decay": (0.0, 1.0, False, False),
    "head_lr_scale": (0.0, 1e6, True, False),
    "grad_clip": (0.0, MAX_LR, True, False),
    "warmup_epochs": (0.0, MAX_EPOCHS, False, False),
    "decay_epochs": (1e-3, MAX_EPOCHS, False, False),
    "decay_rate": (0.0, 1.0, True, False),
    "min_lr_ratio": (0.0, 1.0, False, False),
    "label_smoothing": (0.0, 1.0, False, True),
    "ema_decay": (0.0, 1.0, True, True),
    "bn_momentum": (0.0, 1.0, True, False),
    "drop_path_rate": (0.0, 1.0, False, True),
    "dropout": (0.0, 1.0, False, True),
    "crop_pct": (0.0, 1.0, True, False),
}
#: Settings that are True or False (``channels_last`` may also be None: the device's default).
FLAGS = ("nesterov", "ema_warmup", "bn_warmup", "freeze_bn", "hflip", "compile", "sync_bn")


def check_setting_number(name: str, value: Any) -> float:
    """A numeric recipe setting within :data:`NUMBER_RANGES`, else a UserError naming it."""
    low, high, open_low, open_high = NUMBER_RANGES[name]
    number = check_number(name, value, low=low, high=high, strict_low=open_low)
    if open_high and number >= high:
        raise UserError(f"recipe {name} must be within [{low:g}, {high:g}), got {value!r}", field=name)
    return number


def _pair(name: str, value: Any) -> tuple[float, float]:
    """``(low, high)`` from a list or tuple of two numbers, else a UserError naming the setting."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or len(value) != 2:
        raise UserError(f"recipe {name} must be two numbers (low, high), got {value!r}", field=name)
    return (check_number(name, value[0]), check_number(name, value[1]))


def check_recipe(recipe: Recipe) -> None:
    """Raise UserError naming the setting when a recipe cannot be used: every number finite and within
    :data:`NUMBER_RANGES`, whole numbers whole, flags True or False, names known."""

    def choice(name: str, allowed: tuple[str, ...]) -> None:
        if getattr(recipe, name) not in allowed:
            raise UserError(
                f"recipe {name} {getattr(recipe, name)!r} is unknown (known: {', '.join(allowed)})", field=name
            )

    if not isinstance(recipe.name, str):
        raise UserError(f"recipe name must be text, got {recipe.name!r}", field="name")
    choice("optimizer", OPTIMIZERS)
    choice("schedule", SCHEDULES)
    choice("augment", AUGMENTS)
    choice("amp", AMP_MODES)
    choice("classifier_init", CLASSIFIER_INITS)
    choice("interpolation", ("bicubic", "bilinear"))
    for name in NUMBER_RANGES:
        _check_optional(recipe, name, check_setting_number)
    for name in FLAGS:
        check_bool(name, getattr(recipe, name))
    _check_optional(recipe, "channels_last", check_bool)
    check_whole_number("lr_base_batch", recipe.lr_base_batch, 1)
    check_whole_number("randaugment_m", recipe.randaugment_m, 0, high=RANDAUGMENT_MAX)
    check_whole_number("randaugment_n", recipe.randaugment_n, 0, high=MAX_RANDAUGMENT_N)
    workers = WORKERS_PER_CPU * (os.cpu_count() or 1)
    _check_optional(recipe, "workers", lambda n, v: check_whole_number(n, v, 0, " of processes", high=workers))
    check_whole_number("checkpoint_every_steps", recipe.checkpoint_every_steps, 0)
    check_whole_number("keep_checkpoints", recipe.keep_checkpoints, 0)
    _check_optional(recipe, "eval_batch_size", lambda n, v: check_whole_number(n, v, 1, high=MAX_EVAL_BATCH))
    for name, high in (("crop_scale", 1.0), ("crop_ratio", 100.0)):
        pair = getattr(recipe, name)
        low_value, high_value = (check_number(name, v, low=0, high=high, strict_low=True) for v in pair)
        if low_value > high_value:
            raise UserError(f"recipe {name} must be (low, high) with low ≤ high, got {pair}", field=name)
    check_progressive(recipe)


#: Settings read only by a progressive run (progressive_stages ≥ 1).
PROGRESSIVE_SETTINGS = tuple(
    f"{name}_{end}" for name in ("resolution", "randaugment_m", "mixup_alpha", "cutmix_alpha", "dropout")
    for end in ("start", "end")
)  # fmt: skip


def check_progressive(recipe: Recipe) -> None:
    """Mixup/CutMix and progressive learning settings: a UserError naming the setting (``field``)."""
    for kind in ("mixup_alpha", "cutmix_alpha"):
        for name in (kind, f"{kind}_start", f"{kind}_end"):
            _check_optional(recipe, name, lambda n, v: check_number(n, v, low=0))
    check_whole_number("progressive_stages", recipe.progressive_stages, 0)
    for name in ("resolution_start", "resolution_end"):
        _check_optional(recipe, name, lambda n, v: check_whole_number(n, v, 1, " of pixels", high=MAX_RESOLUTION))
    for name in ("randaugment_m_start", "randaugment_m_end"):
        _check_optional(recipe, name, lambda n, v: check_whole_number(n, v, 0, high=RANDAUGMENT_MAX))
    for name in ("dropout_start", "dropout_end"):
        _check_optional(recipe, name, _check_dropout)
    given = [name for name in PROGRESSIVE_SETTINGS if getattr(recipe, name) is not None]
    if given and recipe.progressive_stages == 0:
        raise UserError(
            f"{given[0]} is a progressive learning setting, but progressive_stages is 0 (off); "
            "turn it on with progressive_stages ≥ 1 (--progressive)",
            field=given[0],
        )
    start, end = recipe.resolution_start, recipe.resolution_end
    if start is not None and end is not None and end < start:
        raise UserError(
            f"resolution_end must be ≥ resolution_start ({start} px): the image size grows, got {end}",
            field="resolution_end",
        )
    ramps_magnitude = recipe.randaugment_m_start is not None or recipe.randaugment_m_end is not None
    if ramps_magnitude and recipe.augment != "randaugment":
        name = "randaugment_m_start" if recipe.randaugment_m_start is not None else "randaugment_m_end"
        raise UserError(f"{name} needs augment 'randaugment', the recipe's is {recipe.augment!r}", field=name)


def _check_optional(recipe: Recipe, name: str, check: Any) -> None:
    if getattr(recipe, name) is not None:
        check(name, getattr(recipe, name))


def _check_dropout(name: str, value: Any) -> None:
    if check_number(name, value, low=0) >= 1:
        raise UserError(f"{name} must be within [0, 1), got {value!r}", field=name)


#: The official EfficientNet ImageNet recipe (main.py defaults; see shared/REFERENCE.md).
PAPER = Recipe()

#: Short budgets on a CPU or small data: SGD + Nesterov, one warm-up epoch, cosine decay,
#: light augmentation, a faster EMA.
SMALL = Recipe(
    name="small",
    optimizer="sgd",
    base_lr=0.2,
    nesterov=True,
    weight_decay=5e-5,
    schedule="cosine",
    warmup_epochs=1.0,
    label_smoothing=0.1,
    ema_decay=0.998,
    classifier_init="capped",  # learns from the first step on few classes with any head (tests/README.md)
    drop_path_rate=0.05,
    bn_momentum=0.1,
    augment="none",
    crop_scale=(0.35, 1.0),
    crop_pct=1.0,
)

#: Fine-tuning pretrained weights (the ``finetune`` default; chosen by measurement, benchmarks/FINETUNE.md): AdamW
#: at 1e-3 × batch/32, one warm-up epoch, cosine decay, no EMA, no augmentation, and the pretrained BatchNorm
#: statistics kept as loaded (``freeze_bn``: the layers normalise with them in training too). With
#: ``freeze_bn=False`` the statistics follow the fine-tuned layers at momentum 0.1 (the official 0.01 still
#: evaluates with mostly pretrained statistics after a few hundred steps).
FINETUNE = Recipe(
    name="finetune",
    optimizer="adamw",
    base_lr=1e-3,
    lr_base_batch=32,
    weight_decay=0.01,
    schedule="cosine",
    warmup_epochs=1.0,
    label_smoothing=0.1,
    ema_decay=None,
    drop_path_rate=0.1,
    bn_momentum=0.1,
    bn_warmup=False,  # the pretrained statistics are the start: no reset towards the first batches
    freeze_bn=True,
    augment="none",
    crop_scale=(1.0, 1.0),
    crop_ratio=(1.0, 1.0),
    hflip=False,
    crop_pct=1.0,
)

#: The earlier fine-tuning recipe: SGD + Nesterov at 0.01 × batch/256, half an epoch of warm-up, cosine,
#: EMA 0.999, random crops of 35–100% and flips. On 90 digit images at batch 16 (Lite0, 64 px) 0.04 × batch/256
#: lost 10–35 points once the backbone trained; 0.01 learns slowly on more classes (benchmarks/FINETUNE.md).
FINETUNE_SGD = Recipe(
    name="finetune_sgd",
    optimizer="sgd",
    base_lr=0.01,
    nesterov=True,
    weight_decay=1e-5,
    schedule="cosine",
    warmup_epochs=0.5,
    label_smoothing=0.1,
    ema_decay=0.999,
    drop_path_rate=0.1,
    bn_warmup=False,  # the pretrained statistics are good: keep the slow official momentum
    augment="none",
    crop_scale=(0.35, 1.0),
    crop_pct=1.0,
)

#: EfficientNetV2-S's progressive learning (Tan & Le 2021, Table 6): 4 stages, images 128 px → the model's
#: train_resolution (300 for V2-S), RandAugment magnitude 5 → 15, mixup 0 → 0, dropout 0.1 → 0.3; the
#: paper's optimiser and schedule otherwise. Ramps as the paper's Algorithm 1 (see effnet.train.progressive).
V2 = replace(
    PAPER,
    name="v2",
    progressive_stages=4,
    resolution_start=128,  # the end: the model's train_resolution
    augment="randaugment", randaugment_m=15, randaugment_m_start=5, randaugment_m_end=15,
    mixup_alpha_start=0.0, mixup_alpha_end=0.0,
    dropout_start=0.1, dropout_end=0.3,
)  # fmt: skip
#: EfficientNetV2-M (Table 6): RandAugment 5 → 20, mixup 0 → 0.2, dropout 0.1 → 0.4. The table's end
#: size is 380 px; the end here is the model's train_resolution (384 for V2-M in the official configs).
V2_M = replace(V2, name="v2_m", randaugment_m=20, randaugment_m_end=20, mixup_alpha_end=0.2, dropout_end=0.4)
#: EfficientNetV2-L (Table 6): RandAugment 5 → 25, mixup 0 → 0.4, dropout 0.1 → 0.5 (end size as V2-M's).
V2_L = replace(V2, name="v2_l", randaugment_m=25, randaugment_m_end=25, mixup_alpha_end=0.4, dropout_end=0.5)

RECIPES: dict[str, Recipe] = {
    "paper": PAPER,
    "small": SMALL,
    "finetune": FINETUNE,
    "finetune_sgd": FINETUNE_SGD,
    "v2": V2,
    "v2_m": V2_M,
    "v2_l": V2_L,
}


def get_recipe(name: str | Recipe = "paper", **overrides: Any) -> Recipe:
    """A named recipe (one of :data:`RECIPES`: ``paper``, ``small``, ``finetune``, ``finetune_sgd``, ``v2``,
    ``v2_m``, ``v2_l``) with some settings overridden."""
    if isinstance(name, Recipe):
        base = name
    elif name in RECIPES:
        base = RECIPES[name]
    else:
        raise UserError(f"unknown recipe {name!r} (known: {', '.join(RECIPES)})")
    return base.with_(**overrides) if overrides else base
