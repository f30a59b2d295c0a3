"""int8: static post-training quantization of an effnet model in ONNX Runtime's tools.

The model is exported to ONNX (:func:`effnet.export.onnx.export_onnx`, any input size), prepared
by ``quant_pre_process`` and quantized by ``quantize_static`` in the QDQ format (int8 weights,
per channel by default: per-tensor depthwise weights collapse accuracy; uint8 activations, the
pairing x86's VNNI instructions run), its activation ranges calibrated on the user's own images
prepared as the model's weight file says. Parts known to quantize badly may stay in float32
(:data:`KEEPABLE`); the file carries effnet's weight header in its ``metadata_props``, so
``effnet predict IMG --weights OUT.onnx`` runs it. What ONNX Runtime has is used as it is; written
here is only what it lacks: the image reader, finding the parts to keep, and the evaluation."""

from __future__ import annotations

import os
import random
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from effnet.errors import UserError, check_whole_number
from effnet.results import Result

#: Calibration methods of onnxruntime.quantization.CalibrationMethod, by their names here.
METHODS = ("minmax", "entropy", "percentile")
#: Parts that may stay in float32: the stem convolution, the classifier, every squeeze-excitation
#: (pool, both 1×1 convolutions, the gate's sigmoid and multiply).
KEEPABLE = ("first", "last", "se")
#: File name endings counted as images when a folder is scanned (PIL decides when it is read).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
#: Images per calibration batch.
CALIBRATION_BATCH = 8
#: Images per batch when float32 and int8 are compared (``--evaluate``), their speed included.
EVALUATION_BATCH = 16


def image_files(folder: str | Path, field: str) -> list[Path]:
    """The image files under ``folder`` (any depth, sorted, hidden ones left out); a missing or
    empty folder is a UserError naming ``field``."""
    root = Path(folder)
    if not root.is_dir():
        raise UserError(f"{field} {root} is not a folder", field=field)
    files = sorted(
        path
        for path in root.rglob("*")
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file() and not path.name.startswith(".")
    )
    if not files:
        raise UserError(f"{field} {root} holds no images ({', '.join(IMAGE_SUFFIXES[:4])}, …)", field=field)
    return files


def _batches(paths: Sequence[Path], transform: Any, batch: int) -> Iterator[tuple[list[Path], np.ndarray]]:
    """Readable images of ``paths`` preprocessed, ``batch`` at a time (unreadable files skipped)."""
    from effnet.data.images import read_rgb

    pending: list[tuple[Path, torch.Tensor]] = []
    for path in paths:
        try:
            pending.append((path, transform(read_rgb(path))))
        except UserError:
            continue
        if len(pending) == batch:
            yield [p for p, _ in pending], torch.stack([t for _, t in pending]).numpy()
            pending = []
    if pending:
        yield [p for p, _ in pending], torch.stack([t for _, t in pending]).numpy()


class ImageCalibration:
    """onnxruntime.quantization's CalibrationDataReader over image files, prepared with the model's
    evaluation transform; a folder none of whose files is a readable image is a UserError."""

    def __init__(self, paths: Sequence[Path], transform: Any, input_name: str, folder: str) -> None:
        self.arrays = [array for _, array in _batches(paths, transform, CALIBRATION_BATCH)]
        if not self.arrays:
            raise UserError(
                f"calibrate {folder}: none of its {len(paths)} image files could be read", field="calibrate"
            )
        self.images = sum(len(array) for array in self.arrays)
        self.input_name = input_name
        self._next = iter(self.arrays)

    def get_next(self) -> dict[str, np.ndarray] | None:
        array = next(self._next, None)
        return None if array is None else {self.input_name: array}

    def rewind(self) -> None:
        self._next = iter(self.arrays)


def kept_nodes(model: Any, keep: Sequence[str]) -> list[str]:
    """Names of the nodes of an ONNX graph (effnet's export form) that the parts in ``keep``
    (:data:`KEEPABLE`) consist of."""
    graph = model.graph
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    names: list[str] = []
    if "first" in keep:
        names += [n.name for n in consumers.get(graph.input[0].name, []) if n.op_type == "Conv"]
    if "last" in keep:
        outputs = {o.name for o in graph.output}
        names += [n.name for n in graph.node if n.op_type == "Gemm" and set(n.output) & outputs]
    if "se" in keep:  # pool → Conv → activation → Conv → Sigmoid → Mul with the pool's input
        for pool in (n for n in graph.node if n.op_type == "GlobalAveragePool"):
            source, chain, frontier = pool.input[0], {pool.name: pool}, [pool]
            while frontier and len(chain) < 10:
                for after in consumers.get(frontier.pop().output[0], []):
                    if after.name not in chain:
                        chain[after.name] = after
                        if not (after.op_type == "Mul" and source in after.input):
                            frontier.append(after)
            if any(n.op_type == "Mul" and source in n.input for n in chain.values()):
                names += list(chain)
    return names


def depthwise_weights(model: Any) -> list[str]:
    """Names of the weights of an ONNX graph's depthwise convolutions (one input and one output
    channel per group). ONNX Runtime runs them in a kernel of their own that widens both operands to
    16 bits before multiplying, so they cannot saturate: with ``reduce_range`` they keep 8 bits."""
    shapes = {t.name: list(t.dims) for t in model.graph.initializer}
    names = []
    for node in model.graph.node:
        if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in shapes:
            continue
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        dims = shapes[node.input[1]]
        if group > 1 and len(dims) == 4 and dims[0] == group and dims[1] == 1:
            names.append(node.input[1])
    return names


@dataclass(frozen=True)
class Evaluation(Result):
    """float32 against int8 on a labelled folder, and their speed in ONNX Runtime on this CPU (the
    same batches, the two models in turn)."""

    images: int
    top1_float32: float
    top1_int8: float
    agreement: float  # share of images on which both give the same top class
    batch_size: int
    threads: int
    images_per_second_float32: float
    images_per_second_int8: float
    int8_speedup: float  # float32's time over int8's: above 1, int8 is faster here


@dataclass(frozen=True)
class QuantizeReport(Result):
    """What ``effnet quantize`` wrote and how it was calibrated."""

    path: str
    bytes: int
    float32_bytes: int
    calibration_images: int
    method: str
    per_channel: bool
    kept_float32: tuple[str, ...]
    kept_nodes: int
    reduce_range: bool = False
    evaluation: Evaluation | None = None


#: The metadata key saying how many bits an int8 file's weights use: :data:`FULL_RANGE`, or with
#: reduce_range :data:`REDUCED_RANGE`.
INT8_WEIGHTS = "int8_weights"
#: ``INT8_WEIGHTS`` of a file quantized without reduce_range.
FULL_RANGE = "8-bit"
#: ``INT8_WEIGHTS`` of a file quantized with reduce_range.
REDUCED_RANGE = "7-bit, depthwise 8-bit"


def _calibrate_method(method: str) -> Any:
    from onnxruntime.quantization import CalibrationMethod

    if method not in METHODS:
        raise UserError(f"method {method!r} is unknown (known: {', '.join(METHODS)})", field="method")
    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}[method]  # fmt: skip


def quantize_onnx(
    float_model: bytes, calibration: ImageCalibration, *, method: str = "minmax", per_channel: bool = True,
    keep: Sequence[str] = (), metadata: dict[str, str] | None = None, reduce_range: bool = False,
) -> tuple[bytes, list[str]]:  # fmt: skip
    """A float32 ONNX model (effnet's export form) quantized to int8 QDQ: its bytes and the names of
    the nodes kept in float32. ``reduce_range``, for CPUs without VNNI: weights in 7 bits where ONNX
    Runtime's matrix-product kernels sum u8 × s8 pairs in 16 bits (every convolution but the
    depthwise ones, which keep 8: :func:`depthwise_weights`)."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    calibrate = _calibrate_method(method)
    with tempfile.TemporaryDirectory(prefix="effnet-quantize-") as work:
        plain, prepared, quantized = (os.path.join(work, name) for name in ("float.onnx", "prep.onnx", "int8.onnx"))
        Path(plain).write_bytes(float_model)
        quant_pre_process(plain, prepared, skip_symbolic_shape=True)
        graph = onnx.load(prepared)
        names = kept_nodes(graph, keep)
        extra: dict[str, Any] = {"WeightSymmetric": True, "ActivationSymmetric": False}
        if reduce_range:  # 8 bits for the depthwise weights: their kernel does not saturate
            full = {"axis": 0, "reduce_range": False} if per_channel else {"reduce_range": False}
            extra["TensorQuantOverrides"] = {name: [full] for name in depthwise_weights(graph)}
        quantize_static(
            prepared, quantized, calibration, quant_format=QuantFormat.QDQ, per_channel=per_channel,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=calibrate,
            nodes_to_exclude=names, reduce_range=reduce_range, extra_options=extra,
        )  # fmt: skip
        model = onnx.load(quantized)
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=value)
    return model.SerializeToString(), names


def evaluate(float_model: bytes, int8_model: bytes, folder: str | Path, transform: Any, class_names: list[str] | None,
             num_classes: int, threads: int | None = None, batch_size: int = EVALUATION_BATCH) -> Evaluation:  # fmt: skip
    """Top-1 of both models and their agreement on ``folder/<class>/…`` (class folders named as the
    model's classes, or class indices in sorted order when the model has no names), and each one's
    images per second: every batch runs through both, in alternating order, after one untimed call
    of each (only the ONNX Runtime calls are timed, not reading the images)."""
    from effnet.data.datasets import class_folders, scan_class_folders
    from effnet.export.ort import ort_session

    root = Path(folder)
    if not root.is_dir():
        raise UserError(f"evaluate {root} is not a folder", field="evaluate")
    folders = class_folders(root)
    if not folders:
        raise UserError(f"evaluate {root}: it has no class folders", field="evaluate")
    names = class_names or [str(i) for i in range(num_classes)]
    if class_names is None and not set(folders) & set(names):
        names = folders  # no class names anywhere: class folders in sorted order are classes 0, 1, …
    try:
        files, labels = scan_class_folders(root, names, known="the model")
    except UserError as err:
        raise UserError(f"evaluate {err}", field="evaluate") from None
    threads = threads or torch.get_num_threads()
    sessions = [ort_session(model, threads) for model in (float_model, int8_model)]
    name = sessions[0].get_inputs()[0].name
    targets = dict(zip(files, labels, strict=True))
    right, agree, count, seconds = [0, 0], 0, 0, [0.0, 0.0]
    for index, (paths, array) in enumerate(_batches(files, transform, batch_size)):
        if not index:  # the first call of a session sets it up: not timed
            for session in sessions:
                session.run(None, {name: array})
        tops = [np.empty(0), np.empty(0)]
        for which in (0, 1) if index % 2 == 0 else (1, 0):
            start = time.perf_counter()
            tops[which] = sessions[which].run(None, {name: array})[0].argmax(-1)
            seconds[which] += time.perf_counter() - start
        want = np.array([targets[p] for p in paths])
        right = [r + int((top == want).sum()) for r, top in zip(right, tops)]
        agree += int((tops[0] == tops[1]).sum())
        count += len(paths)
    if not count:
        raise UserError(f"evaluate {root} holds no readable images", field="evaluate")
    return Evaluation(
        images=count, top1_float32=right[0] / count, top1_int8=right[1] / count, agreement=agree / count,
        batch_size=batch_size, threads=threads, images_per_second_float32=count / seconds[0],
        images_per_second_int8=count / seconds[1], int8_speedup=seconds[0] / seconds[1],
    )  # fmt: skip


def quantize_model(
    model: nn.Module,
    info: Any,
    calibrate: str | Path,
    output: str | Path,
    *,
    images: int = 200,
    per_channel: bool = True,
    method: str = "minmax",
    keep: Sequence[str] = (),
    evaluate_on: str | Path | None = None,
    seed: int = 0,
    reduce_range: bool | None = None,
) -> QuantizeReport:
    """Quantize ``model`` (with its :class:`~effnet.weights.native.WeightsInfo` ``info``) to an int8
    ONNX file at ``output`` (written atomically), calibrated on up to ``images`` images of the
    folder ``calibrate`` (a seeded sample when it holds more); ``keep`` (of :data:`KEEPABLE`) stays
    in float32. ``evaluate_on``: a labelled folder to compare float32 and int8 on. ``reduce_range``:
    weights in 7 bits instead of 8, the depthwise ones excepted (None: where this CPU has no VNNI or
    AMX-INT8, whose absence lets ONNX Runtime's 16-bit pair sums saturate on full-range weights; the
    accuracy each choice costs is in benchmarks/SPEED.md)."""
    from effnet.atomic import atomic_write_bytes, check_target
    from effnet.export.onnx import INPUT_NAME, export_onnx
    from effnet.infer.fast import exportable
    from effnet.infer.hardware import int8_dot_products_on_cpu
    from effnet.weights.native import weights_header

    check_whole_number("images", images, 1)
    if reduce_range is None:
        reduce_range = not int8_dot_products_on_cpu()
    unknown = [part for part in keep if part not in KEEPABLE]
    if unknown:
        raise UserError(f"keep {unknown[0]!r} is not a part (known: {', '.join(KEEPABLE)})", field="keep")
    _calibrate_method(method)
    out = check_target(output, field="output")
    paths = image_files(calibrate, "calibrate")
    if len(paths) > images:
        paths = sorted(random.Random(seed).sample(paths, images))
    transform = info.preprocessing.eval_transform()
    calibration = ImageCalibration(paths, transform, INPUT_NAME, str(calibrate))
    if getattr(model, "num_classes", 0) < 1 or getattr(model, "features_only", False):
        raise UserError("model has no classifier to quantize (num_classes 0 or features only)", field="weights")
    float_model = export_onnx(exportable(model.cpu().float().eval(), any_size="onnx"))
    extra = {
        **info.extra,
        "quantized": f"int8 QDQ, {method} calibration on {calibration.images} images",
        INT8_WEIGHTS: REDUCED_RANGE if reduce_range else FULL_RANGE,
    }
    header = weights_header(model, class_names=info.class_names, preprocessing=info.preprocessing, extra=extra)
    data, names = quantize_onnx(
        float_model, calibration, method=method, per_channel=per_channel, keep=keep, metadata=header,
        reduce_range=reduce_range,
    )  # fmt: skip
    atomic_write_bytes(out, data)
    evaluation = None
    if evaluate_on is not None:
        evaluation = evaluate(float_model, data, evaluate_on, transform, info.class_names, model.num_classes)
    return QuantizeReport(
        path=str(out),
        bytes=len(data),
        float32_bytes=len(float_model),
        calibration_images=calibration.images,
        method=method,
        per_channel=per_channel,
        kept_float32=tuple(keep),
        kept_nodes=len(names),
        reduce_range=reduce_range,
        evaluation=evaluation,
    )
