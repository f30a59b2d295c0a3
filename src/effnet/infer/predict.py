"""Classifying images with a loaded model: preprocessing from the weight file, top-k labels.

:func:`make_runner` is the single place that decides how a batch is computed: the inference
fast path of :mod:`effnet.infer.optimize`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from effnet.errors import UserError
from effnet.progress import progress_bar
from effnet.results import Result
from effnet.weights.native import WeightsInfo

Runner = Callable[[torch.Tensor], torch.Tensor]


def make_runner(model: nn.Module) -> Runner:
    """The function that turns a preprocessed batch into logits: the inference fast path
    (:func:`effnet.infer.optimize.optimize`: BatchNorm folded, channels_last, free 'same' padding)."""
    from effnet.infer.optimize import optimize
    from effnet.models.efficientnet import EfficientNet

    model = optimize(model.eval()) if isinstance(model, EfficientNet) else model.eval()

    def run(batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(batch)

    return run


def open_image(path: str | Path):  # -> PIL.Image.Image
    """An RGB image from a file; anything unreadable is a UserError naming the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError, ValueError) as err:
        reason = "not a readable image" if isinstance(err, UnidentifiedImageError) else str(err)
        raise UserError(f"{path}: {reason}") from None


@dataclass(frozen=True)
class Prediction(Result):
    """The top classes of one image."""

    image: str
    top: list[dict[str, object]]  # [{"index", "label", "prob"}, …], most probable first


class Predictor:
    """A model, its preprocessing and its class names, ready to classify images."""

    def __init__(self, model: nn.Module, info: WeightsInfo, *, runner: Runner | None = None) -> None:
        self.model = model.eval()
        self.info = info
        self.transform = info.preprocessing.eval_transform()
        self.runner = runner or make_runner(model)
        self.labels = info.class_names or [str(i) for i in range(info.num_classes)]

    def probabilities(self, images: Sequence[object]) -> torch.Tensor:
        """Class probabilities (N × classes) of PIL images."""
        batch = torch.stack([self.transform(image) for image in images])
        return self.runner(batch).float().softmax(dim=-1)

    def top(self, probs: torch.Tensor, k: int) -> list[list[dict[str, object]]]:
        k = min(k, probs.shape[-1])
        values, indices = probs.topk(k, dim=-1)
        return [
            [{"index": int(i), "label": self.labels[int(i)], "prob": float(v)} for v, i in zip(row_v, row_i)]
            for row_v, row_i in zip(values, indices)
        ]

    def predict_files(
        self,
        paths: Iterable[str],
        *,
        top_k: int = 5,
        batch_size: int = 16,
        on_error: Callable[[str, UserError], None] | None = None,
        progress: bool = False,
    ) -> Iterator[Prediction]:
        """Predictions for image files, in order; an unreadable file goes to ``on_error`` (or raises).
        With ``progress``, a bar on stderr counts the images read."""
        pending: list[tuple[str, object]] = []

        def flush() -> Iterator[Prediction]:
            if pending:
                tops = self.top(self.probabilities([image for _, image in pending]), top_k)
                yield from (Prediction(path, top) for (path, _), top in zip(pending, tops))
                pending.clear()

        for path in progress_bar(desc="predict", unit="img", enabled=progress, leave=False, iterable=paths):
            try:
                pending.append((path, open_image(path)))
            except UserError as err:
                if on_error is None:
                    raise
                on_error(path, err)
            if len(pending) >= batch_size:
                yield from flush()
        yield from flush()


def load_predictor(weights: str, *, model: str | None = None) -> Predictor:
    """A :class:`Predictor` from a weight file or pretrained name (``model`` checks the architecture)."""
    from effnet.weights.load import load_model

    net, info = load_model(weights, model=model)
    return Predictor(net, info)
