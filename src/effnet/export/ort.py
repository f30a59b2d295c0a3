"""The ONNX Runtime runner behind ``optimize(backend="onnxruntime")``: an ONNX model in ONNX Runtime
sessions behind a module's call, its batches split between one-thread sessions, channels_last inputs
passed as NHWC without a copy."""

from __future__ import annotations

import copy
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from torch import nn

from effnet.errors import UserError


class OrtModule(nn.Module):
    """An ONNX model run by ONNX Runtime behind a module's call: torch tensors in, torch tensors out.

    With ``split`` and ``threads`` > 1, a batch of more than one image is split into up to ``threads``
    parts that run at once in one-thread sessions (ONNX Runtime releases the GIL while it runs): whole
    images per thread skip the synchronisation after every operator that splitting each operator
    between threads pays on a network of many small layers (``benchmarks/bench_allocator.py --ort``).
    With ``channels_last``, channels_last inputs go in as they lie (NHWC) to a copy of the model that
    starts with a transpose, which ONNX Runtime folds into its own layout change, instead of being
    copied to NCHW first. Sessions are made on first use of each kind."""

    def __init__(
        self, onnx_model: bytes, threads: int | None = None, *, split: bool = True, channels_last: bool = True
    ) -> None:
        super().__init__()
        self.onnx_model = onnx_model
        self.threads = threads or torch.get_num_threads()
        self.split = split and self.threads > 1
        self.channels_last = channels_last
        self._sessions: dict[tuple[bool, int], Any] = {}
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self.session(False, self.threads)  # a broken model fails here, not on the first call

    def session(self, nhwc: bool, threads: int) -> Any:
        """The session for NHWC or NCHW input with ``threads`` intra-op threads (made once)."""
        key = (nhwc, threads)
        with self._lock:
            if key not in self._sessions:
                model = _nhwc_input(self.onnx_model) if nhwc else self.onnx_model
                self._sessions[key] = ort_session(model, threads)
            return self._sessions[key]

    def forward(self, x: torch.Tensor) -> Any:
        x = x.detach().cpu()
        nhwc = self.channels_last and x.dim() == 4 and not x.is_contiguous()
        nhwc = nhwc and x.is_contiguous(memory_format=torch.channels_last)
        # numpy's copy, not torch's: torch's OpenMP threads would spin on after it, on the cores
        # ONNX Runtime is about to use (that halved its speed at batch 1)
        array = x.permute(0, 2, 3, 1).numpy() if nhwc else np.ascontiguousarray(x.numpy())
        outputs = self._run_split(array, nhwc) if self.split and array.shape[0] > 1 else self._run(array, nhwc)
        tensors = [torch.from_numpy(out) for out in outputs]
        return tensors if len(tensors) > 1 else tensors[0]

    def _run(self, array: np.ndarray, nhwc: bool) -> list[np.ndarray]:
        session = self.session(nhwc, self.threads)
        return session.run(None, {session.get_inputs()[0].name: array})

    def _run_split(self, array: np.ndarray, nhwc: bool) -> list[np.ndarray]:
        """The batch in up to ``threads`` parts at once, one on this thread; outputs concatenated."""
        session = self.session(nhwc, 1)
        name = session.get_inputs()[0].name
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads - 1, thread_name_prefix="effnet-ort")
        parts = np.array_split(array, min(self.threads, array.shape[0]))
        pending = [self._pool.submit(session.run, None, {name: part}) for part in parts[1:]]
        results = [session.run(None, {name: parts[0]})] + [future.result() for future in pending]
        return [np.concatenate(outs) for outs in zip(*results, strict=True)]

    def __getstate__(self) -> dict[str, Any]:  # sessions, lock and threads are not copied; made anew
        return {**self.__dict__, "_sessions": {}, "_lock": None, "_pool": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__({**state, "_lock": threading.Lock()})


def _nhwc_input(onnx_model: bytes) -> bytes:
    """The same model taking its image input as NHWC: a Transpose to NCHW placed first."""
    import onnx

    model = onnx.load_from_string(onnx_model)
    graph = model.graph
    image = graph.input[0]
    inner = f"{image.name}_nchw"
    for node in graph.node:
        node.input[:] = [inner if name == image.name else name for name in node.input]
    graph.node.insert(0, onnx.helper.make_node("Transpose", [image.name], [inner], perm=[0, 3, 1, 2]))
    dims = [copy.deepcopy(dim) for dim in image.type.tensor_type.shape.dim]
    for dim, source in zip(image.type.tensor_type.shape.dim, (dims[0], dims[2], dims[3], dims[1]), strict=True):
        dim.CopyFrom(source)
    return model.SerializeToString()


def ort_session(onnx_model: bytes | str, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session (a model's bytes or file) with all graph optimisations and
    ``threads`` intra-op threads (torch's by default); ONNX Runtime logs errors only."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise UserError("running ONNX models needs onnxruntime: pip install 'effnet[export]'") from None
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(onnx_model, options, providers=["CPUExecutionProvider"])
