"""A run's state as one object: what a checkpoint saves and a resume puts back, bit for bit."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from effnet.data import ResumableSampler
from effnet.train.checkpoint import rng_states, set_rng_states
from effnet.train.distributed import DistContext
from effnet.train.ema import ModelEma


@dataclass
class Progress:
    """How far a run has come."""

    epoch: int = 0  # epochs finished
    step_in_epoch: int = 0
    global_step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)  # one metrics record per finished epoch
    epoch_loss_sum: float = 0.0
    epoch_loss_count: int = 0
    train_seconds: float = 0.0
    images_seen: int = 0  # over all processes

    def finish_epoch(self, metrics: dict[str, Any]) -> None:
        self.history.append(metrics)
        self.epoch += 1
        self.step_in_epoch = 0
        self.epoch_loss_sum, self.epoch_loss_count = 0.0, 0


@dataclass
class RunState:
    """Model, EMA, optimiser, schedule, sampler position, random number generators and progress.

    :meth:`state_dict` holds tensors and plain data only (``torch.load(weights_only=True)`` reads it);
    under DDP every process must call it, as the RNG states of all processes are gathered."""

    model: nn.Module
    ema: ModelEma | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    sampler: ResumableSampler
    batch_size: int
    ctx: DistContext = field(default_factory=DistContext)
    progress: Progress = field(default_factory=Progress)

    def state_dict(self) -> dict[str, Any]:
        done = self.progress
        return {
            "model": self.model.state_dict(),
            "ema": self.ema.record() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": done.epoch,
            "step_in_epoch": done.step_in_epoch,
            "global_step": done.global_step,
            "sampler": {"epoch": done.epoch, "start": done.step_in_epoch * self.batch_size},
            "rng": self._gather_rng(),
            "history": done.history,
            "epoch_loss": [done.epoch_loss_sum, done.epoch_loss_count],
            "train_seconds": done.train_seconds,
            "images_seen": done.images_seen,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        if self.ema is not None and state["ema"] is not None:
            self.ema.restore(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        loss_sum, loss_count = state["epoch_loss"]
        self.progress = Progress(
            epoch=int(state["epoch"]),
            step_in_epoch=int(state["step_in_epoch"]),
            global_step=int(state["global_step"]),
            history=list(state["history"]),
            epoch_loss_sum=float(loss_sum),
            epoch_loss_count=int(loss_count),
            train_seconds=float(state["train_seconds"]),
            images_seen=int(state["images_seen"]),
        )
        self.sampler.set_position(int(state["sampler"]["epoch"]), int(state["sampler"]["start"]))
        rng = state["rng"]
        set_rng_states(rng[self.ctx.rank] if self.ctx.rank < len(rng) else rng[0])

    def _gather_rng(self) -> list[dict[str, Any]]:
        states = rng_states()
        if not self.ctx.distributed:
            return [states]
        gathered: list[Any] = [None] * self.ctx.world
        torch.distributed.all_gather_object(gathered, states)
        return gathered
