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
        floating = {i for i, shadow in enumerate(averaged) if shadow.dtype.is_floating_point}
        if len(floating) == len(averaged):  # AveragedModel passes one dtype at a time: one kernel per list
            torch._foreach_lerp_(averaged, current, 1.0 - decay)
            return
        for i, (shadow, value) in enumerate(zip(averaged, current, strict=True)):
            if i in floating:
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
        self._pairs: tuple[nn.Module, list[list[torch.Tensor]], list[list[torch.Tensor]]] | None = None
        self.module.eval().requires_grad_(False)
        self.update_parameters(model)  # n_averaged 0 → 1: a copy of what deepcopy already holds

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        """One update from ``model`` (the one this average was made from, or one of the same layout): one
        foreach kernel for the floating tensors and one for the integer ones, the pairs listed once."""
        if int(self.n_averaged) == 0:
            super().update_parameters(model)
            return
        if self._pairs is None or self._pairs[0] is not model:
            shadow = [*self.module.parameters(), *self.module.buffers()]
            current = [t.detach() for t in (*model.parameters(), *model.buffers())]
            if len(shadow) != len(current) or any(a.device != b.device for a, b in zip(shadow, current, strict=True)):
                super().update_parameters(model)
                return
            floating = [(a, b) for a, b in zip(shadow, current, strict=True) if a.dtype.is_floating_point]
            others = [(a, b) for a, b in zip(shadow, current, strict=True) if not a.dtype.is_floating_point]
            self._pairs = (model, [list(side) for side in zip(*floating)], [list(side) for side in zip(*others)])
        _, floating, others = self._pairs
        decay = self.rule.decay_after(self.updates)
        if floating:
            torch._foreach_lerp_(floating[0], floating[1], 1.0 - decay)
        if others:
            torch._foreach_copy_(others[0], others[1])
        self.n_averaged += 1

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
