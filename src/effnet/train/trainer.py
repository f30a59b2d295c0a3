"""The training loop behind ``effnet train`` and :func:`train_model`."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import random
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from effnet.describe.network import NetworkSpec
from effnet.errors import UserError, check_whole_number
from effnet.models.efficientnet import EfficientNet
from effnet.models.profile import profile
from effnet.train import checkpoint as ckpt
from effnet.train import distributed as dist_utils
from effnet.train.data import (
    DataSplits,
    ResumableSampler,
    TransformedDataset,
    build_transform,
    default_workers,
    eval_preprocessing,
    load_splits,
    make_eval_loader,
    make_train_loader,
    normalization,
)
from effnet.train.ema import ModelEma
from effnet.train.optim import build_optimizer, build_scheduler
from effnet.train.recipe import Recipe, get_recipe
from effnet.zoo import resolve_description

EpochCallback = Callable[[int, dict], None]


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class RunConfig:
    """What one run trains, on what, for how long and where it writes."""

    epochs: int
    batch_size: int
    seed: int
    recipe: Recipe
    output: Path | None
    resume: bool = False
    progress: bool = True
    max_steps_per_epoch: int | None = None
    on_epoch_end: EpochCallback | None = None
    device: str | None = None
    #: Called with (model, epoch) at the start of each epoch (fine-tuning freezes the backbone here).
    epoch_setup: Callable[[nn.Module, int], None] | None = None
    find_unused_parameters: bool = False
    #: Input normalisation (0–1 pixels); None: the model family's (Lite: mean 127, std 128 of 0–255).
    mean_std: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    extra_report: dict[str, Any] = field(default_factory=dict)
    #: Wall-clock budget in seconds: the epoch under way ends early, is evaluated, and the run stops.
    time_limit: float | None = None


def check_run_arguments(epochs: int, batch_size: int, seed: int, max_steps_per_epoch: int | None) -> None:
    """User mistakes in the run's numbers are UserErrors."""
    for name, value, low in (("epochs", epochs, 1), ("batch_size", batch_size, 1), ("seed", seed, 0)):
        check_whole_number(name, value, low)
    if max_steps_per_epoch is not None:
        check_whole_number("max_steps_per_epoch", max_steps_per_epoch, 1)


def spec_changes(resolution: int | None, recipe: Recipe) -> dict[str, Any]:
    """Description fields a run sets: the training resolution and the recipe's stochastic depth,
    dropout and BatchNorm momentum (where the recipe gives them)."""
    changes: dict[str, Any] = {}
    if resolution is not None:
        check_whole_number("resolution", resolution, 1, unit=" of pixels")
        changes["resolution"] = resolution
    for name in ("drop_path_rate", "dropout", "bn_momentum"):
        if getattr(recipe, name) is not None:
            changes[name] = getattr(recipe, name)
    return changes


def prepare_spec(model: str | NetworkSpec, resolution: int | None, recipe: Recipe) -> NetworkSpec:
    """The description to train: the recipe's stochastic depth and dropout, the training resolution."""
    spec = resolve_description(model)
    changes = spec_changes(resolution, recipe)
    return spec.with_(**changes) if changes else spec


def zero_classifier(net: EfficientNet) -> None:
    """Start the classifier at zero: every class equally likely, loss ln(classes)."""
    if isinstance(net.classifier, nn.Linear):
        nn.init.zeros_(net.classifier.weight)
        nn.init.zeros_(net.classifier.bias)


def resolve_recipe(recipe: str | Recipe, splits: DataSplits, overrides: dict[str, Any]) -> Recipe:
    """The named recipe, then the data's needs (digits are not flipped), then the caller's overrides."""
    base = get_recipe(recipe)
    data_defaults = {k: v for k, v in splits.recipe_defaults.items() if k not in overrides}
    return base.with_(**data_defaults, **overrides) if (data_defaults or overrides) else base


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def train_model(
    model: str | NetworkSpec,
    data: str = "digits",
    *,
    epochs: int = 10,
    batch_size: int = 64,
    resolution: int | None = None,
    seed: int = 0,
    recipe: str = "paper",
    output: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    max_steps_per_epoch: int | None = None,
    on_epoch_end: EpochCallback | None = None,
    time_limit: float | None = None,
    **recipe_overrides: Any,
) -> dict:
    """Train a model (name, description or JSON file) from scratch on ``data`` and return the report:
    ``top1``, ``top5`` (fractions, validation split, EMA weights), ``loss``, ``params``, ``macs``,
    ``seconds``, ``images_per_second``, ``epochs``, ``resolution``, ``num_classes``, ``model``, ``blocks``…

    ``data`` is ``"digits"`` (scikit-learn's bundled handwritten digits) or a folder with ``train/`` and
    ``val/`` (or ``test/``). ``recipe_overrides`` change recipe settings (see :class:`Recipe`), e.g.
    ``lr=0.05``, ``augment="none"``, ``workers=2``, ``device="cpu"``. ``on_epoch_end(epoch, metrics)`` is
    called after each evaluation; an exception raised there stops the run and propagates.
    ``output=None`` writes nothing. ``time_limit`` (seconds) ends the run early, evaluated, when it is spent.
    """
    check_run_arguments(epochs, batch_size, seed, max_steps_per_epoch)
    device = recipe_overrides.pop("device", None)
    splits = load_splits(data)
    chosen = resolve_recipe(recipe, splits, recipe_overrides)
    spec = prepare_spec(model, resolution, chosen)
    seed_everything(seed)
    net = EfficientNet(spec, num_classes=splits.num_classes)
    if chosen.classifier_init == "zero":
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
    )
    return Trainer(net, splits, config).run()


class Trainer:
    """One training run: model, EMA, optimiser and schedule, data, checkpoints and logs."""

    def __init__(self, net: EfficientNet, splits: DataSplits, config: RunConfig) -> None:
        self.splits = splits
        self.config = config
        self.recipe = config.recipe
        self.spec = net.spec
        self.ctx = dist_utils.setup(config.device)
        self.device = self.ctx.device
        on_cuda = self.device.type == "cuda"
        self.channels_last = self.recipe.channels_last if self.recipe.channels_last is not None else on_cuda
        self.amp_dtype = self._amp_dtype()
        if self.ctx.distributed:
            torch.manual_seed(config.seed * 1000 + self.ctx.rank)  # different dropout per process, same init
        self.net = net.to(self.device)
        if self.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.ema = ModelEma(self.net, self.recipe.ema_decay, self.recipe.ema_warmup) if self.recipe.ema_decay else None
        if self.recipe.sync_bn and self.ctx.distributed and not on_cuda:
            raise UserError("SyncBatchNorm needs GPUs (NCCL); leave --sync-bn off on CPU")
        if self.recipe.sync_bn and self.ctx.distributed:
            self.net = nn.SyncBatchNorm.convert_sync_batchnorm(self.net)
        self.train_module: nn.Module = self.net
        if self.ctx.distributed:
            self.train_module = nn.parallel.DistributedDataParallel(
                self.net,
                device_ids=[self.device.index] if on_cuda else None,
                find_unused_parameters=config.find_unused_parameters,
            )
        if self.recipe.compile:
            self.train_module = torch.compile(self.train_module)

        mean, std = config.mean_std or normalization(self.spec)
        self.mean, self.std = mean, std
        resolution = self.spec.resolution
        self.train_set = TransformedDataset(
            splits.train, build_transform(self.recipe, resolution, mean, std, train=True)
        )
        self.val_set = TransformedDataset(splits.val, build_transform(self.recipe, resolution, mean, std, train=False))
        workers = self.recipe.workers if self.recipe.workers is not None else default_workers(splits.in_memory)
        self.sampler = ResumableSampler(len(self.train_set), seed=config.seed, rank=self.ctx.rank, world=self.ctx.world)
        self.train_loader = make_train_loader(self.train_set, self.sampler, config.batch_size, workers, on_cuda)
        self.train_loader.generator = torch.Generator().manual_seed(config.seed)  # keep the global RNG untouched
        eval_batch = self.recipe.eval_batch_size or config.batch_size * 2
        self.val_loader = make_eval_loader(self.val_set, eval_batch, workers, on_cuda, self.ctx.rank, self.ctx.world)
        self.val_loader.generator = torch.Generator().manual_seed(config.seed)

        full_steps = len(self.sampler.inner) // config.batch_size
        if full_steps < 1:
            raise UserError(
                f"batch size {config.batch_size} is larger than the training split "
                f"({len(self.sampler.inner)} images per process)"
            )
        self.steps_per_epoch = min(full_steps, config.max_steps_per_epoch or full_steps)
        self.global_batch = config.batch_size * self.ctx.world
        self.peak_lr = self.recipe.peak_lr(self.global_batch)
        self.optimizer = build_optimizer(self.net, self.recipe, self.peak_lr)
        self.scheduler = build_scheduler(
            self.optimizer, self.recipe, self.steps_per_epoch, self.steps_per_epoch * config.epochs
        )
        self._batchnorms = [m for m in self.net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.criterion = nn.CrossEntropyLoss(label_smoothing=self.recipe.label_smoothing)

        # progress of the run, all of it in the checkpoint
        self.epoch = 0
        self.step_in_epoch = 0
        self.global_step = 0
        self.history: list[dict[str, Any]] = []
        self.epoch_loss_sum = 0.0
        self.epoch_loss_count = 0
        self.train_seconds = 0.0
        self.images_seen = 0
        self.writer: Any = None
        self.folder = config.output
        self.checkpoint_dir = self.folder / "checkpoints" if self.folder else None

    # -- helpers ---------------------------------------------------------------------------------
    def _amp_dtype(self) -> torch.dtype | None:
        mode = self.recipe.amp
        if mode == "off":
            return None
        if mode == "bf16":
            return torch.bfloat16
        if self.device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _to_device(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images = images.to(self.device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, targets.to(self.device, non_blocking=True)

    @property
    def eval_model(self) -> nn.Module:
        """What is evaluated and saved: the EMA weights (or the trained ones without EMA)."""
        return self.ema.module if self.ema is not None else self.net

    def _config_record(self) -> dict[str, Any]:
        return {
            "spec": self.spec.to_dict(),
            "num_classes": self.splits.num_classes,
            "class_names": self.splits.class_names,
            "batch_size": self.config.batch_size,
            "seed": self.config.seed,
            "world": self.ctx.world,
            "epochs": self.config.epochs,
            "max_steps_per_epoch": self.config.max_steps_per_epoch,
            "recipe": self.recipe.to_dict(),
        }

    # -- checkpoints -----------------------------------------------------------------------------
    def _gather_rng(self) -> list[dict[str, Any]]:
        states = ckpt.rng_states()
        if not self.ctx.distributed:
            return [states]
        gathered: list[Any] = [None] * self.ctx.world
        torch.distributed.all_gather_object(gathered, states)
        return gathered

    def save_checkpoint(self, epoch_end: bool) -> None:
        """Write ``last.pt`` (and ``epoch_NNN.pt`` at an epoch's end) from rank 0, atomically."""
        if self.checkpoint_dir is None:
            return
        if not all(torch.isfinite(t).all() for t in self.net.state_dict().values() if t.is_floating_point()):
            self._diverged(float("nan"), what="weights")  # never overwrite a good checkpoint with a bad one
        rng = self._gather_rng()  # every process takes part
        if not self.ctx.is_main:
            return
        state = {
            "format": "effnet-train-checkpoint/1",
            "config": self._config_record(),
            "model": self.net.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "sampler": {"epoch": self.epoch, "start": self.step_in_epoch * self.config.batch_size},
            "rng": rng,
            "history": self.history,
            "epoch_loss": [self.epoch_loss_sum, self.epoch_loss_count],
            "train_seconds": self.train_seconds,
            "images_seen": self.images_seen,
        }
        ckpt.save_checkpoint(self.checkpoint_dir / ckpt.LAST, state)
        if epoch_end:
            ckpt.save_checkpoint(self.checkpoint_dir / f"epoch_{self.epoch:04d}.pt", state)
            ckpt.prune_checkpoints(self.checkpoint_dir, self.recipe.keep_checkpoints)

    def try_resume(self) -> bool:
        """Load ``last.pt`` if there is one; a checkpoint of a different run is a UserError."""
        path = self.checkpoint_dir / ckpt.LAST if self.checkpoint_dir else None
        if path is None:
            raise UserError("--resume needs an output folder")
        if not path.exists():
            if self.ctx.is_main:
                print(f"effnet train: no checkpoint in {path.parent}; starting from the beginning", file=sys.stderr)
            return False
        state = ckpt.load_checkpoint(path)
        mine, theirs = self._config_record(), state.get("config", {})
        for key in ("spec", "num_classes", "batch_size", "seed", "world"):
            if theirs.get(key) != mine[key]:
                raise UserError(f"cannot resume from {path}: its {key} differs from this run's")
        self.net.load_state_dict(state["model"])
        if self.ema is not None and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch = int(state["epoch"])
        self.step_in_epoch = int(state["step_in_epoch"])
        self.global_step = int(state["global_step"])
        self.history = list(state["history"])
        self.epoch_loss_sum, self.epoch_loss_count = state["epoch_loss"]
        self.train_seconds = float(state["train_seconds"])
        self.images_seen = int(state["images_seen"])
        rng = state["rng"]
        ckpt.set_rng_states(rng[self.ctx.rank] if self.ctx.rank < len(rng) else rng[0])
        return True

    # -- logs ------------------------------------------------------------------------------------
    def _open_logs(self) -> None:
        if self.folder is None or not self.ctx.is_main:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(self.folder / "tensorboard"), purge_step=self.global_step or None)

    def _log_epoch(self, metrics: dict[str, Any]) -> None:
        if self.folder is None or not self.ctx.is_main:
            return
        buffer = io.StringIO()
        columns = list(self.history[0].keys())
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.history)
        ckpt.atomic_write_text(self.folder / "metrics.csv", buffer.getvalue())
        if self.writer is not None:
            for key in ("train_loss", "val_loss", "top1", "top5", "lr", "images_per_second"):
                self.writer.add_scalar(f"epoch/{key}", metrics[key], metrics["epoch"])
            self.writer.flush()

    # -- the loop --------------------------------------------------------------------------------
    def _out_of_time(self) -> bool:
        limit = self.config.time_limit
        out = limit is not None and time.perf_counter() - self.started > limit
        if self.ctx.distributed:  # every process stops at the same step
            out = bool(dist_utils.all_reduce_sum(torch.tensor([float(out)]), self.ctx).item())
        return out

    def run(self) -> dict[str, Any]:
        self.started = started = time.perf_counter()
        self.stopped_early = False
        try:
            if self.config.resume:
                self.try_resume()
            self._open_logs()
            while self.epoch < self.config.epochs and not self.stopped_early:
                self.train_epoch()
                metrics = self.end_epoch()
                if self.config.on_epoch_end is not None:
                    self.config.on_epoch_end(metrics["epoch"], dict(metrics))
            report = self.report(time.perf_counter() - started)
            self.write_outputs(report)
            return report
        finally:
            if self.writer is not None:
                self.writer.close()
            dist_utils.cleanup(self.ctx)

    def train_epoch(self) -> None:
        config, recipe = self.config, self.recipe
        if config.epoch_setup is not None:
            config.epoch_setup(self.net, self.epoch)
        else:
            self.net.train()
        self.sampler.set_position(self.epoch, self.step_in_epoch * config.batch_size)
        if recipe.bn_warmup:
            self._warm_up_batchnorm()
        from tqdm.auto import tqdm

        bar = tqdm(
            total=self.steps_per_epoch,
            initial=self.step_in_epoch,
            desc=f"epoch {self.epoch + 1}/{config.epochs}",
            unit="batch",
            file=sys.stderr,
            disable=not (config.progress and self.ctx.is_main),
            dynamic_ncols=True,
            leave=False,
        )
        params = [p for p in self.net.parameters()]
        tick = time.perf_counter()
        with bar:
            for images, targets in self.train_loader:
                if self.step_in_epoch >= self.steps_per_epoch:
                    break
                images, targets = self._to_device(images, targets)
                with self._autocast():
                    logits = self.train_module(images)
                    loss = self.criterion(logits.float(), targets)
                value = float(loss.detach())
                if not math.isfinite(value):
                    self._diverged(value)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if recipe.grad_clip:
                    torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], recipe.grad_clip)
                self.optimizer.step()
                self.scheduler.step()
                if self.ema is not None:
                    self.ema.update(self.net)
                self.step_in_epoch += 1
                self.global_step += 1
                if recipe.bn_warmup:
                    self._warm_up_batchnorm()
                self.epoch_loss_sum += value
                self.epoch_loss_count += 1
                now = time.perf_counter()
                self.train_seconds += now - tick
                tick = now
                self.images_seen += images.shape[0] * self.ctx.world
                speed = self.images_seen / max(self.train_seconds, 1e-9)
                bar.set_postfix(
                    loss=f"{value:.3f}", img_s=f"{speed:.0f}", lr=f"{self.optimizer.param_groups[0]['lr']:.2e}"
                )
                bar.update(1)
                every = recipe.checkpoint_every_steps
                if every and self.global_step % every == 0 and self.step_in_epoch < self.steps_per_epoch:
                    self.save_checkpoint(epoch_end=False)
                    tick = time.perf_counter()
                if self.config.time_limit is not None and self._out_of_time():
                    self.stopped_early = True
                    break

    def _warm_up_batchnorm(self) -> None:
        """Running BatchNorm statistics follow the batches fast at first, then at the model's momentum,
        so short runs do not evaluate with statistics still close to their initial 0 and 1."""
        momentum = max(self.spec.bn_momentum, 9.0 / (10.0 + self.global_step))
        for module in self._batchnorms:
            module.momentum = momentum

    def _diverged(self, value: float, what: str = "loss") -> None:
        where = f"epoch {self.epoch + 1}, step {self.step_in_epoch + 1}"
        lr = self.optimizer.param_groups[0]["lr"]
        kept = ""
        if self.checkpoint_dir is not None and (self.checkpoint_dir / ckpt.LAST).exists():
            kept = f"; the last good checkpoint is kept in {self.checkpoint_dir / ckpt.LAST}"
        raise TrainingDiverged(
            f"training stopped: the {what} became {value} at {where} (learning rate {lr:.3g}){kept}; "
            "lower the learning rate or check the data"
        )

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Top-1, top-5 and cross-entropy of the evaluated weights on the validation split."""
        model = self.eval_model
        model.eval()
        k = min(5, self.splits.num_classes)
        totals = torch.zeros(4, dtype=torch.float64)
        for images, targets in self.val_loader:
            images, targets = self._to_device(images, targets)
            with self._autocast():
                logits = model(images).float()
            totals[0] += F.cross_entropy(logits, targets, reduction="sum").item()
            top = logits.topk(k, dim=1).indices
            hits = top.eq(targets[:, None])
            totals[1] += hits[:, 0].sum().item()
            totals[2] += hits.any(dim=1).sum().item()
            totals[3] += targets.numel()
        totals = dist_utils.all_reduce_sum(totals, self.ctx)
        count = max(totals[3].item(), 1.0)
        return {
            "val_loss": totals[0].item() / count,
            "top1": totals[1].item() / count,
            "top5": totals[2].item() / count,
        }

    def end_epoch(self) -> dict[str, Any]:
        scores = self.evaluate()
        metrics = {
            "epoch": self.epoch + 1,
            "step": self.global_step,
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_loss": self.epoch_loss_sum / max(self.epoch_loss_count, 1),
            **scores,
            "seconds": round(self.train_seconds, 3),
            "images_per_second": self.images_seen / max(self.train_seconds, 1e-9),
        }
        self.history.append(metrics)
        self.epoch += 1
        self.step_in_epoch = 0
        self.epoch_loss_sum, self.epoch_loss_count = 0.0, 0
        self.save_checkpoint(epoch_end=True)
        self._log_epoch(metrics)
        return metrics

    # -- results ---------------------------------------------------------------------------------
    def report(self, seconds: float) -> dict[str, Any]:
        last = self.history[-1] if self.history else self.evaluate() | {"train_loss": float("nan")}
        counts = profile(self.spec, num_classes=self.splits.num_classes, resolution=self.spec.resolution)
        report = {
            "model": self.spec.name,
            "data": self.splits.name,
            "top1": last["top1"],
            "top5": last["top5"],
            "loss": last["val_loss"],
            "train_loss": last["train_loss"],
            "params": counts.params,
            "macs": counts.macs,
            "seconds": round(seconds, 3),
            "train_seconds": round(self.train_seconds, 3),
            "images_per_second": self.images_seen / max(self.train_seconds, 1e-9),
            "epochs": self.config.epochs,
            "epochs_done": len(self.history),
            "stopped_early": self.stopped_early,
            "steps": self.global_step,
            "batch_size": self.config.batch_size,
            "world_size": self.ctx.world,
            "resolution": self.spec.resolution,
            "num_classes": self.splits.num_classes,
            "class_names": self.splits.class_names,
            "seed": self.config.seed,
            "recipe": self.recipe.name,
            "lr": self.peak_lr,
            "ema": self.ema is not None,
            "device": str(self.device),
            "blocks": self.spec.block_strings,
            "history": self.history,
            **self.config.extra_report,
        }
        if self.folder is not None:
            report["output"] = str(self.folder)
        return report

    def write_outputs(self, report: dict[str, Any]) -> None:
        if self.folder is None or not self.ctx.is_main:
            return
        from effnet.weights import save_weights

        save_weights(
            self.eval_model,
            self.folder / "model.safetensors",
            class_names=self.splits.class_names,
            preprocessing=eval_preprocessing(self.recipe, self.spec.resolution, self.mean, self.std),
            extra={"top1": f"{report['top1']:.6f}", "recipe": self.recipe.name, "data": self.splits.name},
        )
        self.spec.save(self.folder / "description.json")
        ckpt.atomic_write_text(self.folder / "report.json", json.dumps(report, indent=2, default=str) + "\n")
