"""Classifying images with a loaded model: preprocessing from the weight file, top-k labels.

:func:`make_runner` is the single place that decides how a batch is computed: the inference
fast path of :mod:`effnet.deploy.optimize` (in float32 or bfloat16, on the CPU or a GPU), or ONNX
Runtime for an ONNX file effnet wrote (``effnet export``, ``effnet quantize``), whose metadata
holds the same header as a weight file.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from effnet.data.images import check_resized, read_rgb
from effnet.errors import UserError
from effnet.infer.allocator import allocator_state
from effnet.infer.allocator import tune_allocator as tune_allocator_once
from effnet.infer.hardware import module_device
from effnet.progress import progress_bar
from effnet.results import Result
from effnet.weights.native import WeightsInfo

Runner = Callable[[torch.Tensor], torch.Tensor]


def make_runner(model: nn.Module, *, dtype: str | torch.dtype | None = None, tune_allocator: bool = True) -> Runner:
    """The function that turns a preprocessed batch into logits: the inference fast path
    (:func:`effnet.deploy.optimize.optimize`: BatchNorm folded, channels_last, free 'same' padding;
    ``dtype`` as there) on the model's device; any other module (an ONNX Runtime runner) as it is."""
    from effnet.deploy.optimize import optimize
    from effnet.models.efficientnet import EfficientNet

    if isinstance(model, EfficientNet):
        model = optimize(model.eval(), dtype=dtype, tune_allocator=tune_allocator)
    model = model.eval()
    device = module_device(model)

    def run(batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(batch.to(device)).cpu()

    return run


@dataclass(frozen=True)
class Prediction(Result):
    """The top classes of one image."""

    image: str
    top: list[dict[str, object]]  # [{"index", "label", "prob"}, …], most probable first


class Predictor:
    """A model, its preprocessing and its class names, ready to classify images. ``tune_allocator``:
    on the CPU, set glibc's malloc up for inference (:func:`effnet.infer.allocator.tune_allocator`)."""

    def __init__(
        self, model: nn.Module, info: WeightsInfo, *, runner: Runner | None = None, tune_allocator: bool = True
    ) -> None:
        self.model = model.eval()
        self.info = info
        self.transform = info.preprocessing.eval_transform()
        self.runner = runner or make_runner(model, tune_allocator=tune_allocator)
        #: glibc's malloc on the CPU (:func:`effnet.infer.allocator.tune_allocator`): one of its STATES
        self.allocator = (
            tune_allocator_once(tune_allocator) if module_device(model).type == "cpu" else allocator_state()
        )
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
        max_pixels: int | None = None,
    ) -> Iterator[Prediction]:
        """Predictions for image files, in order; an unreadable file, or one of more than ``max_pixels``
        pixels (:func:`effnet.data.images.read_rgb`), goes to ``on_error`` (or raises). With ``progress``, a bar on stderr
        counts the images read."""
        pending: list[tuple[str, object]] = []

        def flush() -> Iterator[Prediction]:
            if pending:
                tops = self.top(self.probabilities([image for _, image in pending]), top_k)
                yield from (Prediction(path, top) for (path, _), top in zip(pending, tops))
                pending.clear()

        for path in progress_bar(desc="predict", unit="img", enabled=progress, leave=False, iterable=paths):
            try:
                image = read_rgb(path, max_pixels)
                check_resized(path, self.info.preprocessing.resized_size(*image.size), max_pixels)
                pending.append((path, image))
            except UserError as err:
                if on_error is None:
                    raise
                on_error(path, err)
            if len(pending) >= batch_size:
                yield from flush()
        yield from flush()


def load_predictor(
    weights: str,
    *,
    model: str | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    tune_allocator: bool = True,
) -> Predictor:
    """A :class:`Predictor` from a weight file, a pretrained name or an ONNX file effnet wrote
    (``model`` checks the architecture; ``device`` and ``dtype``: where and in what the fast path
    computes; an ONNX file runs in ONNX Runtime on the CPU, in the precision it was written in;
    ``tune_allocator``: as in :func:`effnet.deploy.optimize.optimize`)."""
    from effnet.infer.hardware import resolve_device, resolve_dtype

    dev = resolve_device(device)
    if str(weights).endswith(".onnx"):
        return _onnx_predictor(str(weights), model, dev, dtype, tune_allocator)
    from effnet.factory import load_model

    compute = resolve_dtype(dtype, dev)  # before loading: a mistake costs nothing
    net, info = load_model(weights, model=model)
    net = net.to(dev)
    return Predictor(
        net, info, runner=make_runner(net, dtype=compute, tune_allocator=tune_allocator), tune_allocator=tune_allocator
    )


def warn_saturating_int8(extra: dict[str, str], path: str) -> None:
    """One line on stderr where an int8 file with full-range 8-bit weights runs on a CPU without VNNI
    or AMX-INT8, whose int8 kernels can saturate on them (what it costs: benchmarks/SPEED.md)."""
    from effnet.export.quantize import FULL_RANGE, INT8_WEIGHTS
    from effnet.infer.hardware import int8_dot_products_on_cpu

    if extra.get(INT8_WEIGHTS) == FULL_RANGE and not int8_dot_products_on_cpu():
        print(
            f"effnet: {path} has 8-bit int8 weights and this CPU has no VNNI: its results may be off; "
            "quantize with --reduce-range for this CPU",
            file=sys.stderr,
        )


def _onnx_predictor(
    path: str, model: str | None, device: torch.device, dtype: str | torch.dtype | None, tune_allocator: bool = True
) -> Predictor:
    """A :class:`Predictor` running an ONNX file whose metadata is effnet's weight header."""
    from effnet.export.onnx import onnx_metadata
    from effnet.export.ort import OrtModule
    from effnet.weights.native import info_from_metadata, is_native
    from effnet.zoo import resolve_description

    if not Path(path).is_file():
        raise UserError(f"{path}: no such file", field="weights")
    if device.type != "cpu":
        raise UserError(
            f"device {device} is not available for an ONNX file (ONNX Runtime runs it on the CPU)", field="device"
        )
    if dtype not in (None, "float32", torch.float32):
        raise UserError(
            "dtype cannot be chosen for an ONNX file: it runs in the precision it was written in", field="dtype"
        )
    data = Path(path).read_bytes()
    metadata = onnx_metadata(data, path)
    if not is_native(metadata):
        raise UserError(
            f"{path}: not an ONNX file written by effnet (no effnet metadata): export it with effnet export"
        )
    info = info_from_metadata(metadata, path)
    if model is not None and resolve_description(model).name != info.spec.name:
        raise UserError(f"{path} holds {info.spec.name}, model is {resolve_description(model).name}", field="model")
    warn_saturating_int8(info.extra, path)
    runner = OrtModule(data)
    return Predictor(runner, info, tune_allocator=tune_allocator)
