"""Exponential moving average of a model's weights and BatchNorm statistics, on torch's AveragedModel."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


class EmaUpdate:
    """AveragedModel's ``multi_avg_fn``: floating tensors follow ``ema = d·ema + (1 − d)·value``, integer
    buffers (BatchNorm's batch count) are copied. With ``warmup`` the decay is
    ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, as
    ``tf.train.ExponentialMovingAverage(num_updates=…)``, so short runs are not dominated by the
    random initialisation."""

    def __init__(self, decay: float, warmup: bool) -> None:
        self.decay = decay
        self.warmup = warmup

    def decay_after(self, updates: int) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + updates) / (10 + updates))

    @torch.no_grad()
    def __call__(self, averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        decay = self.decay_after(int(num_averaged) - 1)  # the starting weights count as the first model
        for shadow, value in zip(averaged, current, strict=True):
            if shadow.dtype.is_floating_point:
                shadow.lerp_(value, 1.0 - decay)
            else:
                shadow.copy_(value)


class ModelEma(AveragedModel):
    """A shadow copy of a model (``.module``, what gets evaluated and saved) whose parameters *and*
    buffers follow :class:`EmaUpdate` after each optimiser step.

    The average starts at the model's weights, counted as AveragedModel's first model, so
    ``n_averaged − 1`` is the number of updates since (the warm-up's ``n``)."""

    def __init__(self, model: nn.Module, decay: float = 0.9999, warmup: bool = True) -> None:
        rule = EmaUpdate(decay, warmup)
        super().__init__(model, multi_avg_fn=rule, use_buffers=True)
        self.rule = rule
        self.module.eval().requires_grad_(False)
        self.update_parameters(model)  # n_averaged 0 → 1: a copy of what deepcopy already holds

    @property
    def updates(self) -> int:
        return int(self.n_averaged) - 1

    def record(self) -> dict[str, Any]:
        """What a checkpoint keeps: the averaged weights and the update count."""
        rule = self.rule
        return {"module": self.module.state_dict(), "decay": rule.decay, "warmup": rule.warmup, "updates": self.updates}

    def restore(self, record: dict[str, Any]) -> None:
        """Continue from :meth:`record`'s result."""
        self.module.load_state_dict(record["module"])
        self.n_averaged.fill_(int(record["updates"]) + 1)
