"""The training loop behind ``effnet train``: :func:`train_model`, and :func:`run_training`, the one path
every run takes (data, recipe, seeds, network, set-up, loop)."""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from effnet.atomic import remove_stale_temporaries
from effnet.data import DataSplits, batch_mixer, load_splits
from effnet.describe.network import NetworkSpec
from effnet.errors import UserError
from effnet.models.efficientnet import EfficientNet
from effnet.models.profile import Profile, profile
from effnet.progress import progress_bar
from effnet.runs import claim_folder
from effnet.train import checkpoint as ckpt
from effnet.train import distributed as dist_utils
from effnet.train.config import RunConfig, resolve_recipe, spec_changes
from effnet.train.evaluate import summarize
from effnet.train.logs import RUN_FILES, RunLog
from effnet.train.progressive import Stage, stage_difference
from effnet.train.recipe import Recipe
from effnet.train.report import TrainReport
from effnet.train.setup import (
    RunNetwork,
    RunSetup,
    check_fits,
    init_classifier,
    seed_everything,
    set_up,
    stage_loader,
)
from effnet.train.state import Progress
from effnet.zoo import resolve_description

#: The most class probabilities (validation images × classes) an evaluation keeps for the report's summary.
MAX_KEPT = 50_000_000

#: Checks, before anything is allocated, that a description's training fits the data (a batch no larger
#: than the training split) and the device's memory.
FitCheck = Callable[[NetworkSpec], None]
#: Builds the network to train from the data, the recipe and the description fields the run sets,
#: calling the fit check on its description before allocating it (or as soon as it is known).
NetworkBuilder = Callable[[DataSplits, Recipe, dict[str, Any], FitCheck], RunNetwork]
Report = TypeVar("Report", bound=TrainReport)


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def train_model(model: str | NetworkSpec, data: str | Path | DataSplits = "digits", **settings: Any) -> TrainReport:
    """Train a model (name, description or JSON file) from scratch on ``data`` and return its
    :class:`~effnet.train.TrainReport` (``report.to_dict()`` is what ``--json`` prints).

    ``data`` is ``"digits"`` (scikit-learn's bundled handwritten digits) or a folder with ``train/`` and
    ``val/`` (or ``test/``). ``settings`` are :class:`~effnet.train.RunConfig` fields (``epochs=10``,
    ``batch_size=64``, ``resolution``, ``seed=0``, ``recipe="paper"``, ``output``, ``resume``,
    ``overwrite``, ``progress``, ``max_steps_per_epoch``, ``on_epoch_end``, ``time_limit``, ``device``)
    and recipe settings (see :class:`~effnet.train.Recipe`), e.g. ``lr=0.05``, ``augment="none"``,
    ``workers=2``.
    """
    config, recipe_settings = RunConfig.split(settings)

    def build(splits: DataSplits, recipe: Recipe, changes: dict[str, Any], fits: FitCheck) -> RunNetwork:
        spec = resolve_description(model)
        spec = spec.with_(**changes) if changes else spec
        fits(spec)
        net = EfficientNet(spec, num_classes=splits.num_classes)
        init_classifier(net, recipe.classifier_init)
        return RunNetwork(net)

    return run_training(config, data, recipe_settings, build, TrainReport)


def run_training(
    config: RunConfig,
    data: str | Path | DataSplits,
    recipe_settings: dict[str, Any],
    build: NetworkBuilder,
    report: Callable[..., Report],
) -> Report:
    """One run: check the device, claim the output folder (locked for the run), load ``data`` (or take the
    splits given), resolve
    the recipe, seed, ``build`` the network once its training is known to fit, set it up, train and
    evaluate; ``report`` makes the result from :class:`TrainReport`'s fields."""
    device = dist_utils.check_device(config.device)
    with _claim_output(config):
        splits = data if isinstance(data, DataSplits) else load_splits(data)
        recipe = resolve_recipe(config.recipe, splits, recipe_settings)
        changes = spec_changes(config.resolution, recipe)
        ctx = dist_utils.setup(device)
        try:
            seed_everything(config.seed)
            checked: dict[NetworkSpec, Profile] = {}

            def fits(spec: NetworkSpec) -> None:
                checked[spec] = check_fits(spec, splits=splits, recipe=recipe, config=config, ctx=ctx)

            network = build(splits, recipe, changes, fits)
            setup = set_up(network, splits, recipe, config, ctx)
            trainer = Trainer(setup, splits, recipe, config, report, network.epoch_setup)
            trainer.counts = checked.get(setup.net.spec)
            return trainer.run()
        finally:
            dist_utils.cleanup(ctx)


@contextlib.contextmanager
def _claim_output(config: RunConfig) -> Iterator[None]:
    """Hold the run's folder, locked and checked for another run's files (:mod:`effnet.runs`), in the
    process that writes; a resume needs the checkpoint to continue from wherever the folder holds a run.
    Nothing where the run writes nothing."""
    if config.output is None or not dist_utils.is_main_process():
        yield
        return
    with claim_folder(config.output, run_files=RUN_FILES, resume=config.resume, overwrite=config.overwrite) as held:
        last = held.path / "checkpoints" / ckpt.LAST
        if held.found and not last.exists():  # starting over would mix two runs
            raise UserError(
                f"output {held.path} holds a run ({', '.join(held.found)}) without {last.name} to continue from: "
                "overwrite replaces it",
                field="output",
            )
        yield


class Trainer(Generic[Report]):
    """The epoch loop and evaluation of a set-up run; checkpoints save and restore its
    :class:`~effnet.train.state.RunState` whole and record the stage (:mod:`effnet.train.progressive`),
    which a resume recomputes from the epoch and checks."""

    def __init__(
        self,
        setup: RunSetup,
        splits: DataSplits,
        recipe: Recipe,
        config: RunConfig,
        report: Callable[..., Report],
        epoch_setup: Callable[[nn.Module, int], None] | None = None,
    ) -> None:
        self.setup = setup
        self.state = setup.state
        self.splits = splits
        self.recipe = recipe
        self.config = config
        self.epoch_setup = epoch_setup
        self.make_report = report
        self.spec: NetworkSpec = setup.net.spec
        self.folder = config.output
        self.checkpoint_dir = self.folder / "checkpoints" if self.folder else None
        self.log = RunLog(self.folder if setup.ctx.is_main else None)
        self.stopped_early = False
        self.started = time.perf_counter()
        self.stage: Stage | None = None  # the stage the training loader, dropout and mixer are set for
        self.train_loader: DataLoader | None = None
        self.mixer: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None
        #: The description's profile where the fit check has made it (the report's counts, else made anew).
        self.counts: Profile | None = None
        #: The last evaluation's class probabilities and true classes (one process only): the report's summary.
        self.predictions: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def progress(self) -> Progress:
        return self.state.progress

    # -- checkpoints -----------------------------------------------------------------------------
    def _config_record(self) -> dict[str, Any]:
        """What the run is; a resume checks it against the checkpoint's."""
        return {
            "spec": self.spec.to_dict(),
            "num_classes": self.splits.num_classes,
            "class_names": self.splits.class_names,
            "batch_size": self.config.batch_size,
            "seed": self.config.seed,
            "world": self.setup.ctx.world,
            "epochs": self.config.epochs,
            "max_steps_per_epoch": self.config.max_steps_per_epoch,
            "recipe": self.recipe.to_dict(),
        }

    def save_checkpoint(self, epoch_end: bool) -> None:
        """Write ``last.pt`` (and ``epoch_NNNN.pt`` at an epoch's end) from the main process, atomically."""
        if self.checkpoint_dir is None:
            return
        if not all(torch.isfinite(t).all() for t in self.setup.net.state_dict().values() if t.is_floating_point()):
            self._diverged(float("nan"), what="weights")  # never overwrite a good checkpoint with a bad one
        state = self.state.state_dict()  # every process takes part
        if not self.setup.ctx.is_main:
            return
        record = {
            "format": ckpt.FORMAT,
            "config": self._config_record(),
            "stage": self.setup.plan.record(self.progress.epoch),
            **state,
        }
        ckpt.save_checkpoint(self.checkpoint_dir / ckpt.LAST, record)
        if epoch_end:
            ckpt.save_checkpoint(self.checkpoint_dir / f"epoch_{self.progress.epoch:04d}.pt", record)
            ckpt.prune_checkpoints(self.checkpoint_dir, self.recipe.keep_checkpoints)

    def try_resume(self, path: Path) -> bool:
        """Load the checkpoint at ``path`` if there is one; a checkpoint of a different run is a UserError."""
        if not path.exists():
            if self.setup.ctx.is_main:
                print(f"effnet train: no checkpoint in {path.parent}; starting from the beginning", file=sys.stderr)
            return False
        state = ckpt.load_checkpoint(path)
        if not isinstance(state, dict) or state.get("format") != ckpt.FORMAT:
            found = state.get("format") if isinstance(state, dict) else None
            raise UserError(f"cannot resume from {path}: it is not a checkpoint of this effnet ({found!r})")
        mine, theirs = self._config_record(), state.get("config", {})
        for key in ("spec", "num_classes", "batch_size", "seed", "world"):
            if theirs.get(key) != mine[key]:
                raise UserError(f"cannot resume from {path}: its {key} differs from this run's")
        found, expected = state.get("stage"), self.setup.plan.record(int(state["epoch"]))
        if found != expected:
            raise UserError(f"cannot resume from {path}: {stage_difference(found, expected, int(state['epoch']))}")
        if self.setup.ctx.is_main:
            remove_stale_temporaries(path.parent)  # left by a writer that was killed
        self.state.load_state_dict(state)
        return True

    # -- the loop --------------------------------------------------------------------------------
    def run(self) -> Report:
        self.started = time.perf_counter()
        try:
            if self.config.resume and self.checkpoint_dir is not None:  # RunConfig: resume needs an output
                self.try_resume(self.checkpoint_dir / ckpt.LAST)
            self.log.open(self.progress.global_step)
            while self.progress.epoch < self.config.epochs and not self.stopped_early:
                self.train_epoch()
                metrics = self.end_epoch()
                if self.config.on_epoch_end is not None:
                    self.config.on_epoch_end(metrics["epoch"], dict(metrics))
            report = self.report(time.perf_counter() - self.started)
            self.log.results(self.setup.eval_model, self.spec, self.setup.preprocessing, report)
            return report
        finally:
            self.log.close()

    def train_epoch(self) -> None:
        """Train the epoch under way to its end (or to the time limit), checkpointing as the recipe asks."""
        setup, config, done = self.setup, self.config, self.progress
        if self.epoch_setup is not None:
            self.epoch_setup(setup.net, done.epoch)
        else:
            setup.net.train()
        if self.recipe.freeze_bn:  # normalise with the loaded statistics; scale and shift still train
            for module in setup.batchnorms:
                module.eval()
        self.state.sampler.set_position(done.epoch, done.step_in_epoch * config.batch_size)
        stage, loader = self._enter_stage(done.epoch)
        if self.recipe.bn_warmup:
            self._warm_up_batchnorm()
        bar = progress_bar(
            setup.steps_per_epoch,
            desc=f"epoch {done.epoch + 1}/{config.epochs}" + (f", {stage.label()}" if setup.plan.progressive else ""),
            unit="batch",
            enabled=config.progress and setup.ctx.is_main,
            initial=done.step_in_epoch,
            leave=False,
        )
        every = self.recipe.checkpoint_every_steps
        tick = time.perf_counter()
        with bar:
            for images, targets in loader:
                if done.step_in_epoch >= setup.steps_per_epoch:
                    break
                value = self._step(images, targets)
                done.epoch_loss_sum += value
                done.epoch_loss_count += 1
                now = time.perf_counter()
                done.train_seconds += now - tick
                tick = now
                done.images_seen += images.shape[0] * setup.ctx.world
                speed = done.images_seen / max(done.train_seconds, 1e-9)
                lr = self.state.optimizer.param_groups[0]["lr"]
                bar.set_postfix(loss=f"{value:.3f}", img_s=f"{speed:.0f}", lr=f"{lr:.2e}")
                bar.update(1)
                if every and done.global_step % every == 0 and done.step_in_epoch < setup.steps_per_epoch:
                    self.save_checkpoint(epoch_end=False)
                    tick = time.perf_counter()
                if config.time_limit is not None and self._out_of_time():
                    self.stopped_early = True
                    break

    def _enter_stage(self, epoch: int) -> tuple[Stage, DataLoader]:
        """Set the training loader (image size, RandAugment magnitude), the classifier's dropout and the
        batch mixer (mixup/CutMix α) for the stage of ``epoch``; a new stage gets a new loader."""
        stage = self.setup.plan.stage_of(epoch)
        if self.train_loader is None or stage != self.stage:  # the old loader's workers end with it
            self.train_loader = stage_loader(self.setup, self.splits, self.recipe, self.config, stage)
            self.setup.net.dropout.p = stage.dropout
            self.mixer = batch_mixer(stage.mixup_alpha, stage.cutmix_alpha, self.splits.num_classes)
            self.stage = stage
        return stage, self.train_loader

    def _stage_columns(self) -> dict[str, int]:
        """``stage`` (1-based) and ``train_resolution`` of the epoch under way, for a progressive run."""
        if not self.setup.plan.progressive or self.stage is None:
            return {}
        return {"stage": self.stage.index + 1, "train_resolution": self.stage.resolution}

    def _step(self, images: torch.Tensor, targets: torch.Tensor) -> float:
        """One optimiser step (schedule, EMA and BatchNorm warm-up included); returns the loss."""
        setup, state, recipe = self.setup, self.state, self.recipe
        images, targets = setup.to_device(images, targets)
        if self.mixer is not None:
            images, targets = self.mixer(images, targets)  # soft targets: the loss takes class probabilities
        with setup.autocast():
            logits = setup.train_module(images)
            loss = setup.criterion(logits.float(), targets)
        value = float(loss.detach())
        if not math.isfinite(value):
            self._diverged(value)
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if recipe.grad_clip:
            grads = [p for p in setup.net.parameters() if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(grads, recipe.grad_clip)
        state.optimizer.step()
        state.scheduler.step()
        if state.ema is not None:
            state.ema.update_parameters(setup.net)
        self.progress.step_in_epoch += 1
        self.progress.global_step += 1
        if recipe.bn_warmup:
            self._warm_up_batchnorm()
        return value

    def _out_of_time(self) -> bool:
        limit = self.config.time_limit
        out = limit is not None and time.perf_counter() - self.started > limit
        if self.setup.ctx.distributed:  # every process stops at the same step
            out = bool(dist_utils.all_reduce_sum(torch.tensor([float(out)]), self.setup.ctx).item())
        return out

    def _warm_up_batchnorm(self) -> None:
        """Running BatchNorm statistics follow the batches fast at first, then at the model's momentum,
        so short runs do not evaluate with statistics still close to their initial 0 and 1."""
        momentum = max(self.spec.bn_momentum, 9.0 / (10.0 + self.progress.global_step))
        for module in self.setup.batchnorms:
            module.momentum = momentum

    def _diverged(self, value: float, what: str = "loss") -> None:
        done = self.progress
        where = f"epoch {done.epoch + 1}, step {done.step_in_epoch + 1}"
        lr = self.state.optimizer.param_groups[0]["lr"]
        kept = ""
        if self.checkpoint_dir is not None and (self.checkpoint_dir / ckpt.LAST).exists():
            kept = f"; the last good checkpoint is kept in {self.checkpoint_dir / ckpt.LAST}"
        raise TrainingDiverged(
            f"training stopped: the {what} became {value} at {where} (learning rate {lr:.3g}){kept}; "
            "lower the learning rate or check the data"
        )

    # -- evaluation ------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Top-1, top-5 and cross-entropy of the evaluated weights on the validation split."""
        setup = self.setup
        model = setup.eval_model
        model.eval()
        k = min(5, self.splits.num_classes)
        totals = torch.zeros(4, dtype=torch.float64)
        keep = setup.ctx.world == 1 and len(self.splits.val) * self.splits.num_classes <= MAX_KEPT
        probs: list[torch.Tensor] = []
        kept_targets: list[torch.Tensor] = []
        for images, targets in setup.val_loader:
            images, targets = setup.to_device(images, targets)
            with setup.autocast():
                logits = model(images).float()
            if keep:
                probs.append(logits.softmax(dim=1).cpu())
                kept_targets.append(targets.cpu())
            totals[0] += F.cross_entropy(logits, targets, reduction="sum").item()
            top = logits.topk(k, dim=1).indices
            hits = top.eq(targets[:, None])
            totals[1] += hits[:, 0].sum().item()
            totals[2] += hits.any(dim=1).sum().item()
            totals[3] += targets.numel()
        totals = dist_utils.all_reduce_sum(totals, setup.ctx)
        count = max(totals[3].item(), 1.0)
        if probs:
            self.predictions = torch.cat(probs), torch.cat(kept_targets)
        return {
            "val_loss": totals[0].item() / count,
            "top1": totals[1].item() / count,
            "top5": totals[2].item() / count,
        }

    def end_epoch(self) -> dict[str, Any]:
        """Evaluate, record the epoch, checkpoint and log it; returns its metrics."""
        scores = self.evaluate()
        done = self.progress
        metrics = {
            "epoch": done.epoch + 1,
            "step": done.global_step,
            **self._stage_columns(),
            "lr": self.state.optimizer.param_groups[0]["lr"],
            "train_loss": done.epoch_loss_sum / max(done.epoch_loss_count, 1),
            **scores,
            "seconds": round(done.train_seconds, 3),
            "images_per_second": done.images_seen / max(done.train_seconds, 1e-9),
        }
        done.finish_epoch(metrics)
        self.save_checkpoint(epoch_end=True)
        self.log.epoch(done.history)
        return metrics

    def report(self, seconds: float) -> Report:
        done, spec, splits = self.progress, self.spec, self.splits
        last = done.history[-1] if done.history else self.evaluate() | {"train_loss": float("nan")}
        counts = self.counts
        if counts is None or counts.resolution != spec.resolution:
            counts = profile(spec, num_classes=splits.num_classes, resolution=spec.resolution)
        if self.predictions is None and self.setup.ctx.world == 1:  # a finished run resumed: nothing evaluated yet
            self.evaluate()
        evaluation = None
        if self.predictions is not None:
            probs, targets = self.predictions
            evaluation = summarize(
                probs, targets, splits.class_names, data=splits.name, model=spec.name, resolution=spec.resolution
            ).summary()
        return self.make_report(
            model=spec.name,
            data=splits.name,
            top1=last["top1"],
            top5=last["top5"],
            loss=last["val_loss"],
            train_loss=last["train_loss"],
            params=counts.params,
            macs=counts.macs,
            seconds=round(seconds, 3),
            train_seconds=round(done.train_seconds, 3),
            images_per_second=done.images_seen / max(done.train_seconds, 1e-9),
            epochs=self.config.epochs,
            epochs_done=len(done.history),
            stopped_early=self.stopped_early,
            steps=done.global_step,
            batch_size=self.config.batch_size,
            world_size=self.setup.ctx.world,
            resolution=spec.resolution,
            num_classes=splits.num_classes,
            class_names=splits.class_names,
            seed=self.config.seed,
            recipe=self.recipe.name,
            lr=self.setup.peak_lr,
            ema=self.state.ema is not None,
            device=str(self.setup.device),
            blocks=spec.block_strings,
            history=done.history,
            output=str(self.folder) if self.folder is not None else None,
            evaluation=evaluation,
        )
