"""Optimisers and learning-rate schedules of the recipes.

``torch.optim.RMSprop`` adds epsilon *outside* the square root, starts the mean square at zero
and keeps the learning rate outside the momentum buffer, so it cannot express TensorFlow's
RMSProp; :class:`RMSpropTF` does what ``tf.compat.v1.train.RMSPropOptimizer`` does.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from effnet.train.recipe import Recipe


class RMSpropTF(torch.optim.Optimizer):
    """TensorFlow's RMSProp: ``ms = ρ·ms + (1−ρ)·g²`` (ms starts at 1), ``mom = μ·mom + lr·g/√(ms+ε)``,
    ``w −= mom``. ``weight_decay`` adds ``wd·w`` to the gradient (L2 in the loss, as the official code)."""

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        lr: float = 0.016,
        decay: float = 0.9,
        momentum: float = 0.9,
        eps: float = 1e-3,
        weight_decay: float = 0.0,
    ) -> None:
        if lr < 0 or not 0 <= decay < 1 or momentum < 0 or eps <= 0 or weight_decay < 0:
            raise ValueError("invalid RMSpropTF hyper-parameters")
        super().__init__(
            params, {"lr": lr, "decay": decay, "momentum": momentum, "eps": eps, "weight_decay": weight_decay}
        )

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, rho, mu, eps, wd = group["lr"], group["decay"], group["momentum"], group["eps"], group["weight_decay"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad
                if wd:
                    grad = grad.add(param, alpha=wd)
                state = self.state[param]
                if not state:
                    state["square_avg"] = torch.ones_like(param, memory_format=torch.preserve_format)
                    if mu > 0:
                        state["momentum_buffer"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                square_avg = state["square_avg"]
                square_avg.mul_(rho).addcmul_(grad, grad, value=1 - rho)
                update = grad / square_avg.add(eps).sqrt_()
                if mu > 0:
                    buf = state["momentum_buffer"]
                    buf.mul_(mu).add_(update, alpha=lr)
                    param.sub_(buf)
                else:
                    param.sub_(update, alpha=lr)
        return loss


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: conv/linear weights with weight decay; BatchNorm parameters and biases without."""
    decay, no_decay = [], []
    for param in model.parameters():
        (no_decay if param.ndim <= 1 else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, recipe: Recipe, lr: float) -> torch.optim.Optimizer:
    """The recipe's optimiser over ``model``'s parameters at peak learning rate ``lr``."""
    groups = parameter_groups(model, recipe.weight_decay)
    if recipe.head_lr_scale != 1 and isinstance(getattr(model, "classifier", None), nn.Module):
        head = {id(p) for p in model.classifier.parameters()}  # type: ignore[union-attr]
        groups = [  # the classifier's parameters in groups of their own, at head_lr_scale × lr
            {**group, "params": [p for p in group["params"] if (id(p) in head) == is_head]}
            | ({"lr": lr * recipe.head_lr_scale} if is_head else {})
            for is_head in (False, True)
            for group in groups
        ]
    if recipe.optimizer == "rmsprop_tf":
        return RMSpropTF(groups, lr=lr, decay=recipe.rmsprop_decay, momentum=recipe.momentum, eps=recipe.eps)
    # torch picks the one-kernel-per-tensor-list (foreach) updates on CUDA only; on the CPU they also
    # save a Python round per parameter tensor, most of an optimiser step on a small model.
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=lr, momentum=recipe.momentum, nesterov=recipe.nesterov and recipe.momentum > 0, foreach=True
        )
    return torch.optim.AdamW(groups, lr=lr, eps=1e-8, foreach=True)


class LRSchedule:
    """Learning-rate factor of a step: linear warm-up, then staircase decay, cosine or constant.

    A callable object (not a lambda) so ``LambdaLR`` state and checkpoints stay picklable-free.
    The staircase counts from step 0, as ``tf.train.exponential_decay`` in the official code.
    """

    def __init__(self, recipe: Recipe, steps_per_epoch: int, total_steps: int) -> None:
        self.kind = recipe.schedule
        self.warmup = int(round(recipe.warmup_epochs * steps_per_epoch))
        self.decay_steps = max(1, int(round(recipe.decay_epochs * steps_per_epoch)))
        self.decay_rate = recipe.decay_rate
        self.total = max(1, total_steps)
        self.floor = recipe.min_lr_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if self.kind == "step":
            return self.decay_rate ** (step // self.decay_steps)
        if self.kind == "cosine":
            span = max(1, self.total - self.warmup)
            progress = min(1.0, (step - self.warmup) / span)
            return self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0


def build_scheduler(
    optimizer: torch.optim.Optimizer, recipe: Recipe, steps_per_epoch: int, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step ``LambdaLR`` following :class:`LRSchedule`."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, LRSchedule(recipe, steps_per_epoch, total_steps))
