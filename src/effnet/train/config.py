"""A run's settings: one :class:`RunConfig` for training from scratch and fine-tuning alike."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from effnet.data import DataSplits
from effnet.describe.network import MAX_RESOLUTION
from effnet.errors import UserError, check_bool, check_number, check_whole_number
from effnet.train.recipe import MAX_EPOCHS, Recipe, get_recipe

EpochCallback = Callable[[int, dict], None]

__all__ = ["MAX_BATCH_SIZE", "MAX_EPOCHS", "MAX_SEED", "MAX_TIME_LIMIT", "RunConfig", "resolve_recipe", "spec_changes"]
#: The largest batch per process: 16× the paper's global batch of 4096, where large-batch studies stop
#: (64k); B0's activations alone at 32 px are ~115 GB at this batch, so a larger one fits no device.
MAX_BATCH_SIZE = 65_536
#: The largest seed: PyTorch's generators take a 64-bit one.
MAX_SEED = 2**63 - 1
#: The longest time limit, in seconds (about 31 years).
MAX_TIME_LIMIT = 1e9


@dataclass(frozen=True)
class RunConfig:
    """What a run trains for, how long and where it writes (the recipe holds how it trains).

    ``on_epoch_end(epoch, metrics)`` is called after each evaluation; an exception raised there stops
    the run and propagates. ``output=None`` writes nothing; a folder that holds another run is refused
    unless ``resume`` (continue it) or ``overwrite`` (replace it). ``time_limit`` (seconds) ends the epoch
    under way early, evaluated, and stops the run. ``device``: ``"cpu"``, ``"cuda"``, ``"cuda:1"``
    (default: CUDA when available)."""

    epochs: int = 10
    batch_size: int = 64  # per process
    resolution: int | None = None  # None: the description's
    seed: int = 0
    recipe: str | Recipe = "paper"
    output: Path | None = None
    resume: bool = False
    overwrite: bool = False
    progress: bool = True
    max_steps_per_epoch: int | None = None
    on_epoch_end: EpochCallback | None = None
    time_limit: float | None = None
    device: str | None = None

    def __post_init__(self) -> None:
        check_whole_number("epochs", self.epochs, 1, high=MAX_EPOCHS)
        check_whole_number("batch_size", self.batch_size, 1, high=MAX_BATCH_SIZE)
        check_whole_number("seed", self.seed, 0, high=MAX_SEED)
        if self.max_steps_per_epoch is not None:
            check_whole_number("max_steps_per_epoch", self.max_steps_per_epoch, 1)
        if self.resolution is not None:
            check_whole_number("resolution", self.resolution, 1, unit=" of pixels", high=MAX_RESOLUTION)
        if self.time_limit is not None:
            check_number("time_limit", self.time_limit, low=0, high=MAX_TIME_LIMIT)
        for name in ("resume", "overwrite", "progress"):
            check_bool(name, getattr(self, name))
        if self.on_epoch_end is not None and not callable(self.on_epoch_end):
            raise TypeError(f"on_epoch_end must be callable, got {self.on_epoch_end!r}")
        if self.device is not None and not isinstance(self.device, str):
            raise TypeError(f"device must be a name such as 'cpu' or 'cuda:1', got {self.device!r}")
        if self.output is not None:
            object.__setattr__(self, "output", Path(self.output))
        elif self.resume:
            raise UserError("resume needs an output folder to continue in", field="resume")
        elif self.overwrite:
            raise UserError("overwrite needs an output folder to replace", field="overwrite")

    @classmethod
    def split(cls, settings: dict[str, Any], **defaults: Any) -> tuple[RunConfig, dict[str, Any]]:
        """The run's settings among keyword arguments (``defaults`` where not given) and the rest, which
        are recipe settings."""
        names = {f.name for f in fields(cls)}
        mine = {**defaults, **{key: value for key, value in settings.items() if key in names}}
        return cls(**mine), {key: value for key, value in settings.items() if key not in names}


def resolve_recipe(recipe: str | Recipe, splits: DataSplits, overrides: dict[str, Any]) -> Recipe:
    """The named recipe, then the data's needs (digits are not flipped), then the caller's overrides."""
    base = get_recipe(recipe)
    data_defaults = {k: v for k, v in splits.recipe_defaults.items() if k not in overrides}
    return base.with_(**data_defaults, **overrides) if (data_defaults or overrides) else base


def spec_changes(resolution: int | None, recipe: Recipe) -> dict[str, Any]:
    """Description fields a run sets: the training resolution and the recipe's stochastic depth,
    dropout and BatchNorm momentum (where the recipe gives them)."""
    changes: dict[str, Any] = {} if resolution is None else {"resolution": resolution}
    for name in ("drop_path_rate", "dropout", "bn_momentum"):
        if getattr(recipe, name) is not None:
            changes[name] = getattr(recipe, name)
    return changes
