"""Exponential moving average of a model's weights and BatchNorm statistics."""

from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEma:
    """A shadow copy of a model whose parameters *and* floating buffers (BatchNorm running mean and
    variance) follow ``ema = d·ema + (1 − d)·value`` after each optimiser step.

    With ``warmup`` the decay is ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, as
    ``tf.train.ExponentialMovingAverage(num_updates=…)``, so short runs are not dominated by the
    random initialisation. The shadow model is what gets evaluated and saved.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, warmup: bool = True) -> None:
        self.module = copy.deepcopy(model).eval()
        for param in self.module.parameters():
            param.requires_grad_(False)
        self.decay = decay
        self.warmup = warmup
        self.updates = 0

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model`` (same architecture, unwrapped)."""
        decay = self.current_decay()
        self.updates += 1
        ema_state = self.module.state_dict()
        for name, value in model.state_dict().items():
            shadow = ema_state[name]
            if shadow.dtype.is_floating_point:
                shadow.lerp_(value.detach().to(shadow.dtype), 1.0 - decay)
            else:
                shadow.copy_(value)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "decay": self.decay, "warmup": self.warmup, "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
