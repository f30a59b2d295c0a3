"""A model's accuracy, per-class figures, confusion and calibration on a labelled folder (``effnet evaluate``).

:func:`evaluate` loads a weight file (or a pretrained name) with its own preprocessing and classes
(:func:`effnet.factory.load_model`) and runs it once over the images; :func:`evaluate_model` does the same for
a model in memory, and :func:`summarize` turns predictions (a run's own too) into an :class:`EvaluationReport`.
``effnet train`` and ``effnet finetune`` end with its :meth:`~EvaluationReport.summary` for their weights on
the validation split. The metric functions (:func:`wilson_interval`, :func:`expected_calibration_error`,
:func:`confusion_matrix`) take plain arrays.

- Intervals: top-1 and top-5 are proportions of images; their 95% interval is Wilson's score interval (closed
  form, z from the standard normal), which stays within [0, 1] and is not empty at 0 or 100%.
- Calibration: the expected calibration error over 15 equal-width bins of the top-1 probability
  (Guo et al. 2017: bin b = (b/15, (b+1)/15], ECE = Σ_b n_b/N · |accuracy_b − mean confidence_b|), and those
  bins as the reliability diagram's data.
- Time per image: each image's own read, decode and preprocessing time, measured where it is loaded, plus an
  equal share of its batch's forward time (the batch's images have one size, so the forward pass costs each
  the same). The slowest images are those the first term makes slow (large or costly files); no image is run
  alone, so the figures cost nothing beyond the one pass. Each loader process's first image and the first
  batch are run once untimed first, so that lazy set-up is not counted as an image's time.
- Data: ``digits`` (the built-in validation split), a folder with ``train/`` and ``val/`` (or ``test/``: that
  split), or a folder of class folders. A class folder the weights do not know is a UserError naming ``data``
  (where the weights have no class names: class folders named 0, 1, … are those indices, other names are the
  classes in sorted order, with a :class:`~effnet.data.DataWarning` saying so); no class folder or no readable
  image is a UserError; files that are not readable images are skipped with a DataWarning naming them (as
  training does), and listed in the report.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from effnet.data import DataSplits, DataWarning, FileImages, ImageSource, default_workers, load_digits_splits
from effnet.data.datasets import VAL_FOLDERS, SkippedFiles, class_folders, scan_class_folders
from effnet.data.images import max_image_pixels
from effnet.errors import UserError, check_whole_number
from effnet.preprocess import Preprocessing
from effnet.progress import progress_bar
from effnet.results import Result

#: The confidence level of the accuracy intervals.
LEVEL = 0.95
#: Equal-width bins of the top-1 probability for the calibration error and the reliability diagram.
ECE_BINS = 15
#: What an evaluation folder holds (:func:`effnet.runs.claim_folder`).
EVALUATION_FILES = ("report.md", "report.json", "confusion.png", "reliability.png")
#: Classes shown as the worst in the one-paragraph summary.
WORST_SHOWN = 3


def wilson_interval(successes: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Wilson's score interval of a proportion ``successes / n`` at ``level`` (closed form, z from the
    standard normal); (0, 1) for ``n = 0``."""
    if n <= 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(0.5 + level / 2)
    p = successes / n
    denominator = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, center - half), min(1.0, center + half)


def calibration_bins(confidences: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> list[dict[str, Any]]:
    """The reliability diagram's data: for each of ``bins`` equal-width bins (low, high] of the top-1
    probability, its count, mean confidence and accuracy (None where it is empty)."""
    conf = np.asarray(confidences, dtype=np.float64)
    hits = np.asarray(correct, dtype=np.float64)
    index = np.clip(np.ceil(conf * bins).astype(np.int64) - 1, 0, bins - 1)  # (b/bins, (b+1)/bins] → b
    rows = []
    for b in range(bins):
        inside = index == b
        count = int(inside.sum())
        rows.append(
            {
                "low": b / bins,
                "high": (b + 1) / bins,
                "count": count,
                "confidence": float(conf[inside].mean()) if count else None,
                "accuracy": float(hits[inside].mean()) if count else None,
            }
        )
    return rows


def expected_calibration_error(confidences: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> float:
    """Σ over ``bins`` equal-width bins of the top-1 probability of (images in the bin / images) ×
    |accuracy − mean confidence| in the bin; NaN for no images."""
    total = len(confidences)
    if not total:
        return float("nan")
    return float(
        sum(
            r["count"] / total * abs(r["accuracy"] - r["confidence"])
            for r in calibration_bins(confidences, correct, bins)
            if r["count"]
        )
    )


def confusion_matrix(targets: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts (true class × predicted class), ``num_classes`` square."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(targets, dtype=np.int64), np.asarray(predictions, dtype=np.int64)), 1)
    return matrix


@dataclass(frozen=True)
class EvaluationReport(Result):
    """A model evaluated on labelled images. Fractions are 0–1; ``top1_ci95``/``top5_ci95`` are Wilson's
    95% intervals ``[low, high]``; ``top5`` is top-k with k = min(5, classes). ``per_class`` holds every
    class with images or predictions (``accuracy`` is its recall; ``precision`` is None where nothing was
    predicted as it); ``confusion`` is over ``confusion_classes`` (rows true, columns predicted);
    ``calibration`` is the reliability diagram's bins. ``slowest`` and ``confidently_wrong`` hold the top
    ``top`` images each (see the module's note on time per image)."""

    weights: str
    data: str
    model: str
    resolution: int
    images: int
    num_classes: int
    top1: float
    top1_ci95: list[float]
    top5: float
    top5_ci95: list[float]
    top_k: int
    ece: float
    loss: float
    per_class: list[dict[str, Any]]
    confusion_classes: list[str]
    confusion: list[list[int]]
    calibration: list[dict[str, Any]]
    slowest: list[dict[str, Any]]
    confidently_wrong: list[dict[str, Any]]
    images_per_second: float | None  # loading and forward passes together; None: not timed
    skipped: list[str] = field(default_factory=list)
    output: str | None = None

    def summary(self, worst: int = WORST_SHOWN) -> dict[str, Any]:
        """The few figures ``train`` and ``finetune`` print at their end: top-1 with its interval, top-5,
        ECE and the ``worst`` classes by accuracy (recall)."""
        return {
            "images": self.images,
            "top1": self.top1,
            "top1_ci95": self.top1_ci95,
            "top5": self.top5,
            "top_k": self.top_k,
            "ece": self.ece,
            "worst_classes": worst_classes(self.per_class, worst),
        }


def worst_classes(per_class: Sequence[dict[str, Any]], count: int = WORST_SHOWN) -> list[dict[str, Any]]:
    """The ``count`` classes with images that have the lowest accuracy (ties: most images first)."""
    rows = [r for r in per_class if r["support"]]
    rows.sort(key=lambda r: (r["accuracy"], -r["support"], r["class"]))
    return [{"class": r["class"], "accuracy": r["accuracy"], "support": r["support"]} for r in rows[:count]]


def printable(name: str) -> str:
    """A class or file name as text any terminal shows: bytes that are not UTF-8 (a folder named in another
    encoding) as ``\\xff`` escapes."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def summary_text(summary: dict[str, Any]) -> str:
    """One paragraph of :meth:`EvaluationReport.summary`: what ``train``/``finetune`` print at their end."""
    low, high = summary["top1_ci95"]
    worst = ", ".join(
        f"{printable(r['class'])} {r['accuracy']:.1%} of {r['support']}" for r in summary["worst_classes"]
    )
    return (
        f"evaluation on {summary['images']:,} images: top-1 {summary['top1']:.2%} (95% interval {low:.2%}–{high:.2%}), "
        f"top-{summary['top_k']} {summary['top5']:.2%}, ECE {summary['ece']:.4f}; worst classes: {worst or 'none'}"
    )


def summarize(
    probs: torch.Tensor | np.ndarray,
    targets: torch.Tensor | np.ndarray | Sequence[int],
    class_names: Sequence[str],
    *,
    names: Sequence[str] | None = None,
    load_seconds: Sequence[float] | None = None,
    forward_seconds: Sequence[float] | None = None,
    wall_seconds: float | None = None,
    top: int = 10,
    weights: str = "",
    data: str = "",
    model: str = "",
    resolution: int = 0,
    skipped: Sequence[str] = (),
) -> EvaluationReport:
    """An :class:`EvaluationReport` from class probabilities (N × classes) and true class indices: the
    whole computation, from predictions a run already has or from :func:`evaluate_model`. ``names`` name
    the images (paths; default ``#i``), ``load_seconds`` and ``forward_seconds`` are per image (see the
    module's note), ``top`` the length of the lists of images."""
    p = torch.as_tensor(probs).float()  # N × classes: float32 keeps a 50,000-image, 1,000-class run at 200 MB
    y = torch.as_tensor(np.asarray(targets), dtype=torch.int64)
    n, classes = int(p.shape[0]), int(p.shape[1])
    if n == 0:
        raise UserError("no images to evaluate", field="data")
    k = min(5, classes)
    confidence, predicted = p.max(dim=1)
    correct = predicted.eq(y)
    top_k = p.topk(k, dim=1).indices.eq(y[:, None]).any(dim=1)
    loss = float(-p.gather(1, y[:, None]).double().clamp_min(1e-12).log().mean())
    hits1, hits5 = int(correct.sum()), int(top_k.sum())
    matrix = confusion_matrix(y.numpy(), predicted.numpy(), classes)
    support, predicted_count, right = matrix.sum(axis=1), matrix.sum(axis=0), np.diag(matrix)
    involved = [c for c in range(classes) if support[c] or predicted_count[c]]
    label = lambda c: str(class_names[c]) if c < len(class_names) else str(c)  # noqa: E731
    per_class = [
        {
            "class": label(c),
            "index": c,
            "support": int(support[c]),
            "predicted": int(predicted_count[c]),
            "accuracy": float(right[c] / support[c]) if support[c] else None,
            "precision": float(right[c] / predicted_count[c]) if predicted_count[c] else None,
        }
        for c in involved
    ]
    conf_np, correct_np = confidence.numpy(), correct.numpy()
    shown = list(names) if names is not None else [f"#{i}" for i in range(n)]
    wrong = np.flatnonzero(~correct_np)
    wrong = wrong[np.argsort(-conf_np[wrong], kind="stable")][:top]
    loads = np.asarray(load_seconds if load_seconds is not None else np.zeros(n), dtype=np.float64)
    forwards = np.asarray(forward_seconds if forward_seconds is not None else np.zeros(n), dtype=np.float64)
    totals = loads + forwards
    slow = np.argsort(-totals, kind="stable")[:top] if load_seconds is not None or forward_seconds is not None else []
    return EvaluationReport(
        weights=str(weights),
        data=str(data),
        model=model,
        resolution=resolution,
        images=n,
        num_classes=classes,
        top1=hits1 / n,
        top1_ci95=list(wilson_interval(hits1, n)),
        top5=hits5 / n,
        top5_ci95=list(wilson_interval(hits5, n)),
        top_k=k,
        ece=expected_calibration_error(conf_np, correct_np),
        loss=loss,
        per_class=per_class,
        confusion_classes=[label(c) for c in involved],
        confusion=matrix[np.ix_(involved, involved)].tolist(),
        calibration=calibration_bins(conf_np, correct_np),
        slowest=[
            {
                "image": shown[i],
                "ms": round(1000 * float(totals[i]), 3),
                "load_ms": round(1000 * float(loads[i]), 3),
                "forward_ms": round(1000 * float(forwards[i]), 3),
            }
            for i in slow
        ],
        confidently_wrong=[
            {
                "image": shown[i],
                "true": label(int(y[i])),
                "predicted": label(int(predicted[i])),
                "confidence": float(conf_np[i]),
            }
            for i in wrong
        ],
        images_per_second=n / wall_seconds if wall_seconds else None,
        skipped=list(skipped),
    )


class _TimedImages(Dataset):
    """Images through the evaluation transform, each with its index and its own load time (read, decode,
    preprocess) in seconds; an image file that fails to decode gives its error instead of a tensor. The first
    image a process loads is loaded once untimed first: lazy set-up is not that image's cost."""

    def __init__(self, source: ImageSource, transform: Any) -> None:
        self.source = source
        self.transform = transform
        self.warm = False

    def __len__(self) -> int:
        return len(self.source)

    def _load(self, index: int) -> tuple[torch.Tensor, int]:
        if isinstance(self.source, FileImages):  # not FileImages.load, which would serve the next image instead
            from effnet.data.images import read_rgb

            return self.transform(read_rgb(self.source.files[index])), self.source.targets[index]
        image, target = self.source.load(index)
        return self.transform(image), target

    def __getitem__(self, index: int) -> tuple[torch.Tensor | None, int, int, float, str | None]:
        try:
            if not self.warm:
                self._load(index)
                self.warm = True
            start = time.perf_counter()
            tensor, target = self._load(index)
            return tensor, target, index, time.perf_counter() - start, None
        except UserError as err:
            return None, -1, index, 0.0, str(err)


def _collate(items: list[tuple[torch.Tensor | None, int, int, float, str | None]]) -> tuple[Any, ...]:
    """A batch of the images that loaded, and the (index, error) of those that did not."""
    good = [item for item in items if item[0] is not None]
    failed = [(item[2], item[4]) for item in items if item[0] is None]
    if not good:
        return None, None, None, None, failed
    return (
        torch.stack([item[0] for item in good]),  # type: ignore[misc]
        torch.tensor([item[1] for item in good]),
        torch.tensor([item[2] for item in good]),
        torch.tensor([item[3] for item in good], dtype=torch.float64),
        failed,
    )


@dataclass
class Predictions:
    """One pass of a model over images: for each image that loaded (``indices`` into the source, ascending),
    its class probabilities, target and times; ``failed``: the images that did not load, with the error."""

    indices: list[int]
    probs: torch.Tensor
    targets: torch.Tensor
    load_seconds: list[float]
    forward_seconds: list[float]
    wall_seconds: float
    failed: list[tuple[int, str]]


@torch.inference_mode()
def predict_images(
    model: nn.Module,
    source: ImageSource,
    preprocessing: Preprocessing,
    *,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    workers: int | None = None,
    progress: bool = False,
) -> Predictions:
    """Run ``model`` (in eval mode, on ``device``: default its own) once over ``source`` with
    ``preprocessing``'s evaluation transform; ``workers`` loader processes (default: none for images in
    memory, else as training loads). The first batch runs once untimed first (lazy set-up of the kernels)."""
    check_whole_number("batch_size", batch_size, 1)
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    model = model.to(dev).eval()
    workers = default_workers(not isinstance(source, FileImages)) if workers is None else workers
    dataset = _TimedImages(source, preprocessing.eval_transform())
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=_collate)
    n = len(source)
    probs = torch.zeros(n, 0)
    targets, loads, forwards = torch.zeros(n, dtype=torch.int64), np.zeros(n), np.zeros(n)
    kept = np.zeros(n, dtype=bool)
    failed: list[tuple[int, str]] = []
    first = True
    started = time.perf_counter()
    with progress_bar(n, desc="evaluate", unit="img", enabled=progress, leave=False) as bar:
        for images, labels, indices, seconds, errors in loader:
            failed += errors
            bar.update(len(errors))
            if images is None:
                continue
            images = images.to(dev, non_blocking=True)
            if first:
                model(images)
                first = False
            tick = time.perf_counter()
            logits = model(images).float()
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            share = (time.perf_counter() - tick) / len(labels)
            if probs.shape[1] != logits.shape[1]:
                probs = torch.zeros(n, logits.shape[1])
            at = indices.numpy()
            probs[at] = logits.softmax(dim=1).cpu()
            targets[at], loads[at], forwards[at], kept[at] = labels, seconds.numpy(), share, True
            bar.update(len(labels))
    wall = time.perf_counter() - started
    rows = np.flatnonzero(kept)
    return Predictions(
        indices=rows.tolist(),
        probs=probs[rows],
        targets=targets[rows],
        load_seconds=loads[rows].tolist(),
        forward_seconds=forwards[rows].tolist(),
        wall_seconds=wall,
        failed=sorted(failed),
    )


@dataclass
class LabelledImages:
    """Images to evaluate, their names (paths) and the model's class names they are labelled with."""

    source: ImageSource
    names: list[str]
    class_names: list[str]
    data: str
    skipped: list[str] = field(default_factory=list)


def _model_classes(class_names: Sequence[str] | None, num_classes: int, folders: list[str], where: str) -> list[str]:
    """The class names the folders are matched with: the weights' own, else indices (folders named
    0, 1, …), else the folders in sorted order (a DataWarning says so)."""
    if class_names is not None:
        return list(class_names)
    indices = [str(i) for i in range(num_classes)]
    if set(folders) <= set(indices):
        return indices
    if len(folders) > num_classes:
        raise UserError(
            f"data {where} has {len(folders)} class folders, the weights only {num_classes} classes (and no class "
            "names to match them by)",
            field="data",
        )
    warnings.warn(
        f"the weights have no class names: the {len(folders)} class folders of {where} are taken as classes "
        f"0–{len(folders) - 1} in sorted order ({', '.join(folders[:5])}{', …' if len(folders) > 5 else ''})",
        DataWarning,
        stacklevel=3,
    )
    return folders + indices[len(folders) :]


def data_folder(data: str | Path) -> Path:
    """The folder of class folders ``data`` names: itself, or the validation split of a training folder (one
    with ``train/``); a UserError naming ``data`` where there is none."""
    root = Path(data)
    if not root.is_dir():
        what = "does not exist" if not root.exists() else "is not a folder"
        raise UserError(f"data {root} {what} (give a folder of class folders, or 'digits')", field="data")
    if (root / "train").is_dir():
        val = next((root / name for name in VAL_FOLDERS if (root / name).is_dir()), None)
        if val is None:
            raise UserError(f"data {root} has train/ but no val/ or test/ folder to evaluate on", field="data")
        return val
    return root


def labelled_images(
    data: str | Path | DataSplits, class_names: Sequence[str] | None, num_classes: int
) -> LabelledImages:
    """The images ``data`` names, labelled with the model's classes (see the module's note)."""
    if isinstance(data, DataSplits) or str(data) == "digits":
        splits = data if isinstance(data, DataSplits) else load_digits_splits()
        names = _model_classes(class_names, num_classes, splits.class_names, splits.name)
        unknown = [c for c in splits.class_names if c not in names]
        if unknown:
            raise UserError(f"data {splits.name} has class {unknown[0]!r} that the weights do not have", field="data")
        remap = [names.index(c) for c in splits.class_names]
        val = splits.val
        if isinstance(val, FileImages):
            source: ImageSource = FileImages(val.files, [remap[t] for t in val.targets])
            shown = [str(p) for p in val.files]
        else:
            source = _Relabelled(val, remap)
            shown = [f"{splits.name} val #{i}" for i in range(len(val))]
        if not len(source):
            raise UserError(f"data {splits.name} has no validation images", field="data")
        return LabelledImages(source, shown, names, f"{splits.name} (validation split)", list(splits.skipped))
    root = data_folder(data)
    folders = class_folders(root)
    if not folders:
        raise UserError(f"data {root} has no class folders (one folder of images per class)", field="data")
    names = _model_classes(class_names, num_classes, folders, str(root))
    unknown = [f for f in folders if f not in names]
    if unknown:
        shown = ", ".join(names[:5]) + (", …" if len(names) > 5 else "")
        raise UserError(
            f"data {root} has class folder {unknown[0]!r} that the weights do not have (their classes: {shown})",
            field="data",
        )
    max_image_pixels()  # a bad EFFNET_MAX_IMAGE_PIXELS is one error, not every image skipped
    skipped = SkippedFiles()
    files, targets = scan_class_folders(root, names, skipped, known="the weights")
    if not files:
        raise UserError(f"data {root} holds no readable images{skipped.summary(root)}", field="data")
    skipped.warn()
    return LabelledImages(
        FileImages(files, targets), [str(f) for f in files], names, str(root), skipped.unreadable + skipped.too_large
    )


class _Relabelled(ImageSource):
    """Images of another source with their targets mapped to the model's class indices."""

    def __init__(self, source: ImageSource, remap: list[int]) -> None:
        self.source = source
        self.remap = remap
        self.targets = [remap[t] for t in source.targets]

    def load(self, index: int) -> tuple[Any, int]:
        image, target = self.source.load(index)
        return image, self.remap[target]


def evaluate_model(
    model: nn.Module,
    data: str | Path | DataSplits | LabelledImages,
    preprocessing: Preprocessing,
    *,
    class_names: Sequence[str] | None = None,
    weights: str = "",
    batch_size: int = 64,
    top: int = 10,
    device: str | torch.device | None = None,
    workers: int | None = None,
    progress: bool = False,
) -> EvaluationReport:
    """Evaluate a model in memory on ``data`` (as in :func:`evaluate`, or images already labelled) with
    ``preprocessing`` and its ``class_names`` (None: matched as the module's note says)."""
    check_whole_number("top", top, 1)
    if isinstance(data, LabelledImages):
        images = data
    else:
        images = labelled_images(data, class_names, int(getattr(model, "num_classes", 0) or 0))
    run = predict_images(
        model, images.source, preprocessing, batch_size=batch_size, device=device, workers=workers, progress=progress
    )
    if run.failed:
        shown = "; ".join(reason for _, reason in run.failed[:20])  # each names its file
        warnings.warn(f"skipped {len(run.failed)} image(s) that did not load: {shown}", DataWarning, stacklevel=2)
    spec = getattr(model, "spec", None)
    return summarize(
        run.probs,
        run.targets,
        images.class_names,
        names=[images.names[i] for i in run.indices],
        load_seconds=run.load_seconds,
        forward_seconds=run.forward_seconds,
        wall_seconds=run.wall_seconds,
        top=top,
        weights=weights,
        data=images.data,
        model=getattr(spec, "name", type(model).__name__),
        resolution=preprocessing.resolution,
        skipped=images.skipped + [images.names[i] for i, _ in run.failed],
    )


def evaluate(
    weights: str | Path,
    data: str | Path | DataSplits,
    *,
    model: str | None = None,
    format: str = "auto",
    batch_size: int = 64,
    output: str | Path | None = None,
    overwrite: bool = False,
    top: int = 10,
    device: str | None = None,
    workers: int | None = None,
    progress: bool = False,
) -> EvaluationReport:
    """Evaluate ``weights`` (a weight file effnet loads, or a pretrained name; ``model`` and ``format`` as in
    :func:`effnet.factory.load_model`) on ``data`` with the file's own preprocessing and classes, in one pass.
    ``output``: a report folder (``report.md``, ``report.json``, ``confusion.png``, ``reliability.png``)
    claimed as :mod:`effnet.runs` claims a run's: the same evaluation again replaces its files, another
    one there needs ``overwrite``, a training run's folder is refused."""
    from effnet.factory import load_model
    from effnet.train.distributed import check_device

    check_whole_number("batch_size", batch_size, 1)
    check_whole_number("top", top, 1)
    dev = check_device(device) or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(weights).endswith(".onnx"):
        raise UserError(f"weights {weights}: evaluate takes weight files, not ONNX files", field="weights")
    if not isinstance(data, DataSplits) and str(data) != "digits":
        data_folder(data)  # a mistyped folder costs nothing: checked before the weights are read or downloaded
    net, info = load_model(weights, model=model, format=format)
    images = labelled_images(data, info.class_names, info.num_classes)
    settings = dict(
        weights=str(weights), batch_size=batch_size, top=top, device=dev, workers=workers, progress=progress
    )
    if output is None:
        return evaluate_model(net, images, info.preprocessing, **settings)
    from effnet.runs import claim_folder
    from effnet.train.logs import TRAIN_MARKERS

    record = {"command": "evaluate", "weights": str(weights), "data": images.data}
    with claim_folder(
        output, run_files=EVALUATION_FILES, record=record, others=TRAIN_MARKERS, overwrite=overwrite
    ) as held:
        report = replace(evaluate_model(net, images, info.preprocessing, **settings), output=str(held.path))
        write_report(report, held.path)
    return report


def write_report(report: EvaluationReport, folder: Path) -> None:
    """``report.json``, ``report.md`` and the two figures in ``folder``, each written atomically."""
    import json

    from effnet.atomic import atomic_write_text
    from effnet.plots import plot_confusion, plot_reliability

    names = [printable(c) for c in report.confusion_classes]
    plot_confusion(report.confusion, names, folder / "confusion.png", title=_title(report))
    plot_reliability(report.calibration, folder / "reliability.png", ece=report.ece, title=_title(report))
    atomic_write_text(folder / "report.json", json.dumps(report.to_dict(), indent=2, default=str) + "\n")
    atomic_write_text(folder / "report.md", markdown_report(report))


def _title(report: EvaluationReport) -> str:
    return f"{report.model} on {printable(report.data)}"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def markdown_report(report: EvaluationReport) -> str:
    """The evaluation as a Markdown page: figures, per-class table, the slowest and most confidently wrong images."""
    low, high = report.top1_ci95
    low5, high5 = report.top5_ci95
    lines = [
        f"# Evaluation of {printable(report.weights)}",
        "",
        f"{report.model} at {report.resolution} px on {printable(report.data)}: {report.images:,} images"
        + (
            f", {report.images_per_second:.1f} images/s (loading and forward pass)."
            if report.images_per_second
            else "."
        ),
        "",
        "| metric | value | 95% interval (Wilson) |",
        "|---|---|---|",
        f"| top-1 | {_pct(report.top1)} | {_pct(low)}–{_pct(high)} |",
        f"| top-{report.top_k} | {_pct(report.top5)} | {_pct(low5)}–{_pct(high5)} |",
        f"| expected calibration error ({ECE_BINS} bins) | {report.ece:.4f} | |",
        f"| cross-entropy | {report.loss:.4f} | |",
        "",
        "![confusion matrix](confusion.png)",
        "",
        "![reliability diagram](reliability.png)",
        "",
        "## Per class",
        "",
        "| class | images | accuracy (recall) | precision | predicted |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {printable(r['class'])} | {r['support']} | {_pct(r['accuracy'])} | {_pct(r['precision'])} | {r['predicted']} |"
        for r in report.per_class
    ]
    lines += ["", "## Most confidently wrong", "", "| image | true | predicted | confidence |", "|---|---|---|---|"]
    lines += [
        f"| {printable(r['image'])} | {printable(r['true'])} | {printable(r['predicted'])} | {_pct(r['confidence'])} |"
        for r in report.confidently_wrong
    ]
    lines += [
        "",
        "## Slowest",
        "",
        "Per image: its own read, decode and preprocessing, plus an equal share of its batch's forward pass.",
        "",
        "| image | ms | load ms | forward ms |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {printable(r['image'])} | {r['ms']:.2f} | {r['load_ms']:.2f} | {r['forward_ms']:.2f} |"
        for r in report.slowest
    ]
    if report.skipped:
        lines += ["", f"Skipped {len(report.skipped)} file(s) that are not readable images: "
                  + ", ".join(map(printable, report.skipped[:20])) + (", …" if len(report.skipped) > 20 else "")]  # fmt: skip
    return "\n".join(lines) + "\n"
