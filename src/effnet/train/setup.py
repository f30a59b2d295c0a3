"""Set-up of a run, done once before its first step: device and processes (DDP, SyncBatchNorm),
compilation, EMA, the stages, the validation loader, optimiser and schedule; and each stage's training
loader."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from effnet.data import (
    DataSplits,
    ResumableSampler,
    TransformedDataset,
    default_workers,
    make_eval_loader,
    make_train_loader,
    train_transform,
)
from effnet.describe.network import NetworkSpec
from effnet.errors import UserError
from effnet.models.efficientnet import EfficientNet
from effnet.models.profile import Profile, check_memory
from effnet.preprocess import Preprocessing, default_preprocessing, official_crop_pct
from effnet.train.config import RunConfig
from effnet.train.distributed import DistContext
from effnet.train.ema import ModelEma
from effnet.train.optim import build_optimizer, build_scheduler
from effnet.train.progressive import Stage, StagePlan, plan_stages
from effnet.train.recipe import Recipe
from effnet.train.state import RunState

MeanStd = tuple[tuple[float, ...], tuple[float, ...]]


@dataclass
class RunNetwork:
    """The network a run starts from and what training needs to know about it."""

    net: EfficientNet
    #: Called with (model, epoch) at the start of each epoch (fine-tuning freezes the backbone here);
    #: None: ``model.train()``.
    epoch_setup: Callable[[nn.Module, int], None] | None = None
    #: Some parameters get no gradient (a frozen backbone): DDP must look for them.
    find_unused_parameters: bool = False
    #: Input normalisation (0–1 pixels); None: the model family's (Lite: mean 127, std 128 of 0–255).
    mean_std: MeanStd | None = None


@dataclass
class RunSetup:
    """Everything a run trains with (the training loader is each stage's, see :func:`stage_loader`)."""

    ctx: DistContext
    net: EfficientNet  # as built: what the optimiser and the EMA see, and what checkpoints hold
    train_module: nn.Module  # what a training step calls: ``net`` inside DDP and/or torch.compile
    state: RunState
    plan: StagePlan
    val_loader: DataLoader
    workers: int  # loader processes
    steps_per_epoch: int
    peak_lr: float
    #: How the run evaluates, and what its weight file records.
    preprocessing: Preprocessing
    criterion: nn.Module
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False
    batchnorms: list[nn.Module] = field(default_factory=list)

    @property
    def device(self) -> torch.device:
        return self.ctx.device

    @property
    def eval_model(self) -> nn.Module:
        """What is evaluated and saved: the EMA weights (or the trained ones without EMA)."""
        return self.state.ema.module if self.state.ema is not None else self.net

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def to_device(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images = images.to(self.device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, targets.to(self.device, non_blocking=True)


def default_channels_last(device: torch.device) -> bool:
    """Whether a run trains in channels_last when its recipe leaves it open: on CUDA and on the CPU,
    whose oneDNN depthwise convolutions are several times slower on NCHW tensors (benchmarks/
    bench_proxy_speed.py, bench_finetune_speed.py)."""
    return device.type in ("cuda", "cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def zero_classifier(net: EfficientNet) -> None:
    """Start the classifier at zero: every class equally likely, loss ln(classes)."""
    init_classifier(net, "zero")


def init_classifier(net: EfficientNet, how: str) -> None:
    """The recipe's classifier initialisation (``official``: as built, U(±1/√classes); ``zero``;
    ``capped``: U(±min(1/√classes, 2√3/√features)), initial logits of std at most 2 on unit features)."""
    if not isinstance(net.classifier, nn.Linear) or how == "official":
        return
    if how == "zero":
        nn.init.zeros_(net.classifier.weight)
    else:
        classes, features = net.classifier.out_features, net.classifier.in_features
        bound = min(classes**-0.5, 2 * 3**0.5 * features**-0.5)
        nn.init.uniform_(net.classifier.weight, -bound, bound)
    nn.init.zeros_(net.classifier.bias)


def run_preprocessing(recipe: Recipe, resolution: int, mean_std: MeanStd) -> Preprocessing:
    """How a run evaluates: the recipe's crop (default the official size/(size+32)) and interpolation,
    the run's normalisation."""
    crop_pct = recipe.crop_pct if recipe.crop_pct is not None else official_crop_pct(resolution)
    mean, std = mean_std
    return Preprocessing(resolution, crop_pct, recipe.interpolation, tuple(mean), tuple(std))  # type: ignore[arg-type]


def epoch_steps(splits: DataSplits, config: RunConfig, ctx: DistContext) -> int:
    """Steps per epoch: the full batches of this process's share of the training split (capped by
    ``max_steps_per_epoch``); none is a UserError naming ``batch_size``."""
    share = len(ResumableSampler(len(splits.train), seed=config.seed, rank=ctx.rank, world=ctx.world).inner)
    full_steps = share // config.batch_size
    if full_steps < 1:
        raise UserError(
            f"batch_size {config.batch_size} is larger than the training split ({share} images per process)",
            field="batch_size",
        )
    return min(full_steps, config.max_steps_per_epoch or full_steps)


def check_fits(spec: NetworkSpec, splits: DataSplits, recipe: Recipe, config: RunConfig, ctx: DistContext) -> Profile:
    """Refuse, before the network and its first batch are allocated, a batch larger than the training
    split and a run whose training cannot fit in the device's memory at its largest training size (one
    meta-device forward of ``spec``). Returns the profile at that size (the run's report reuses it)."""
    epoch_steps(splits, config, ctx)
    largest = max(stage.resolution for stage in plan_stages(recipe, config.epochs, spec, config.resolution).stages)
    return check_memory(
        spec,
        batch_size=config.batch_size,
        training=True,
        device=ctx.device,
        num_classes=splits.num_classes,
        resolution=largest,
    )


def set_up(network: RunNetwork, splits: DataSplits, recipe: Recipe, config: RunConfig, ctx: DistContext) -> RunSetup:
    """Plan the stages, place the network (device, memory format, SyncBatchNorm, DDP, compile) and build
    its EMA, validation loader, optimiser and schedule."""
    plan = plan_stages(recipe, config.epochs, network.net.spec, config.resolution)
    on_cuda = ctx.device.type == "cuda"
    if ctx.distributed:
        torch.manual_seed(config.seed * 1000 + ctx.rank)  # different dropout per process, same init
    channels_last = recipe.channels_last if recipe.channels_last is not None else default_channels_last(ctx.device)
    net = network.net.to(ctx.device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    ema = ModelEma(net, recipe.ema_decay, recipe.ema_warmup) if recipe.ema_decay else None
    train_module = _wrap(net, recipe, ctx, network.find_unused_parameters)

    spec = net.spec
    pre = default_preprocessing(spec)
    preprocessing = run_preprocessing(recipe, spec.resolution, network.mean_std or (pre.mean, pre.std))
    sampler = ResumableSampler(len(splits.train), seed=config.seed, rank=ctx.rank, world=ctx.world)
    workers = recipe.workers if recipe.workers is not None else default_workers(splits.in_memory)
    eval_batch = recipe.eval_batch_size or config.batch_size * 2
    val_loader = splits.batched_eval_loader(preprocessing, eval_batch, ctx.device, ctx.rank, ctx.world)
    if val_loader is None:
        val_set = TransformedDataset(splits.val, preprocessing.eval_transform())
        val_loader = make_eval_loader(val_set, eval_batch, workers, on_cuda, ctx.rank, ctx.world)
        val_loader.generator = torch.Generator().manual_seed(config.seed)

    steps_per_epoch = epoch_steps(splits, config, ctx)
    peak_lr = recipe.peak_lr(config.batch_size * ctx.world)
    optimizer = build_optimizer(net, recipe, peak_lr)
    scheduler = build_scheduler(optimizer, recipe, steps_per_epoch, steps_per_epoch * config.epochs)
    return RunSetup(
        ctx=ctx,
        net=net,
        train_module=train_module,
        state=RunState(net, ema, optimizer, scheduler, sampler, config.batch_size, ctx),
        plan=plan,
        val_loader=val_loader,
        workers=workers,
        steps_per_epoch=steps_per_epoch,
        peak_lr=peak_lr,
        preprocessing=preprocessing,
        criterion=nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing),
        amp_dtype=_amp_dtype(recipe, ctx.device),
        channels_last=channels_last,
        batchnorms=[m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)],
    )


def _wrap(net: EfficientNet, recipe: Recipe, ctx: DistContext, find_unused_parameters: bool) -> nn.Module:
    """What a training step calls: ``net`` (its BatchNorm layers made SyncBatchNorm where asked) inside
    DDP and torch.compile as the recipe and the processes ask."""
    on_cuda = ctx.device.type == "cuda"
    if recipe.sync_bn and ctx.distributed and not on_cuda:
        raise UserError("sync_bn needs GPUs (NCCL); leave it off on CPU", field="sync_bn")
    if recipe.sync_bn and ctx.distributed:
        nn.SyncBatchNorm.convert_sync_batchnorm(net)  # replaces net's BatchNorm layers, returns net itself
    module: nn.Module = net
    if ctx.distributed:
        module = nn.parallel.DistributedDataParallel(
            net, device_ids=[ctx.device.index] if on_cuda else None, find_unused_parameters=find_unused_parameters
        )
    if recipe.compile:
        module = torch.compile(module)
    return module


def stage_loader(setup: RunSetup, splits: DataSplits, recipe: Recipe, config: RunConfig, stage: Stage) -> DataLoader:
    """The training loader of ``stage``: augmented at its image size and RandAugment magnitude, drawing
    from the run's resumable sampler. A stage change needs a new loader: workers keep the transform they
    started with. Splits that batch on tensors (:mod:`effnet.data.tensor_cache`) give their own."""
    pre = setup.preprocessing
    batched = splits.batched_train_loader(
        recipe, config.batch_size, setup.state.sampler, pre, stage.resolution, setup.device
    )
    if batched is not None:
        return batched
    augment = train_transform(recipe.with_(randaugment_m=stage.randaugment_m), stage.resolution, pre.mean, pre.std)
    dataset = TransformedDataset(splits.train, augment)
    loader = make_train_loader(
        dataset, setup.state.sampler, config.batch_size, setup.workers, setup.device.type == "cuda"
    )
    loader.generator = torch.Generator().manual_seed(config.seed)  # keep the global RNG untouched
    return loader


def _amp_dtype(recipe: Recipe, device: torch.device) -> torch.dtype | None:
    if recipe.amp == "off":
        return None
    if recipe.amp == "bf16":
        return torch.bfloat16
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None
