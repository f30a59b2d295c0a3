"""What a run writes besides checkpoints: ``metrics.csv`` and TensorBoard after each epoch; the weights,
``description.json`` and ``report.json`` at the end. Only the main process writes, every file through
:mod:`effnet.atomic` (TensorBoard's event files excepted: they are appended to)."""

from __future__ import annotations

import csv
import io
import json
import warnings
from pathlib import Path
from typing import Any

from torch import nn

from effnet.atomic import atomic_write_text
from effnet.describe.network import NetworkSpec
from effnet.preprocess import Preprocessing
from effnet.train.report import TrainReport

SCALARS = ("train_loss", "val_loss", "top1", "top5", "lr", "images_per_second")
#: What a run leaves in its folder: another run must not write beside them (see :mod:`effnet.runs`).
RUN_FILES = ("model.safetensors", "description.json", "report.json", "metrics.csv", "checkpoints", "tensorboard")
#: What only a training run leaves: commands that record their runs (:data:`effnet.runs.RECORD_NAME`) refuse
#: a folder holding these without a record.
TRAIN_MARKERS = ("model.safetensors", "metrics.csv", "checkpoints", "tensorboard")


class RunLog:
    """The run's folder (``None``: nothing is written, as on processes other than the main one)."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self.writer: Any = None

    def open(self, global_step: int) -> None:
        """Start TensorBoard's log, dropping events after ``global_step`` (a resumed run rewrites them)."""
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(self.folder / "tensorboard"), purge_step=global_step or None)

    def epoch(self, history: list[dict[str, Any]]) -> None:
        """Rewrite ``metrics.csv`` with every epoch so far and log the last one to TensorBoard."""
        if self.folder is None:
            return
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(history[0].keys()), lineterminator="\n")
        writer.writeheader()
        writer.writerows(history)
        atomic_write_text(self.folder / "metrics.csv", buffer.getvalue())
        if self.writer is not None:
            metrics = history[-1]
            for key in SCALARS:
                self.writer.add_scalar(f"epoch/{key}", metrics[key], metrics["epoch"])
            self.writer.flush()

    def results(self, model: nn.Module, spec: NetworkSpec, preprocessing: Preprocessing, report: TrainReport) -> None:
        """The evaluated weights (with the run's preprocessing and class names), the description and
        the report."""
        if self.folder is None:
            return
        from effnet.weights import save_weights

        # the data folder's and starting weights' names only: a weight file is what users share (effnet push),
        # and a local path says too much; the starting weights' name lets a model card find their licence
        extra = {"top1": f"{report.top1:.6f}", "recipe": report.recipe, "data": Path(report.data).name}
        if getattr(report, "weights", None):
            extra["pretrained"] = Path(str(report.weights)).name
        save_weights(
            model,
            self.folder / "model.safetensors",
            class_names=report.class_names,
            preprocessing=preprocessing,
            extra=extra,
        )
        spec.save(self.folder / "description.json")
        atomic_write_text(self.folder / "report.json", json.dumps(report.to_dict(), indent=2, default=str) + "\n")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
