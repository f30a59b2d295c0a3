"""Memory the fast path keeps between calls for its large tensors.

glibc's malloc maps blocks of 32 MiB and more afresh on every call and hands the top of its heap
back to the system when more than twice its mmap threshold is free there, so large fresh tensors
are page-faulted in again on every call: at batch 16 on B0 that was 14,000 faults (~57 MB) per call
with a 32 MiB limit and none with 16 MiB (benchmarks/SPEED.md). Outputs of :data:`FRESH_ALLOC_BYTES`
and more may therefore go into a :class:`KeptMemory` (oneDNN adds the result onto zeros there). Where
the allocator keeps freed memory itself (glibc tuned: benchmarks/SPEED.md) that zeroing is a pass over
memory for nothing, so the fast path times both ways per input shape (:mod:`effnet.infer.tuner`) and
switches kept memory off for a call with :meth:`KeptMemory.using`."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch

#: Convolution outputs of this size and more go into kept memory instead of fresh tensors.
FRESH_ALLOC_BYTES = 16 * 2**20


def keeps(nbytes: int) -> bool:
    """Whether an output of ``nbytes`` goes into kept memory."""
    return nbytes >= FRESH_ALLOC_BYTES


def _zero_border(t: torch.Tensor, pad: tuple[int, int, int, int]) -> None:
    """Zero the border (left, right, top, bottom) of ``t`` in place."""
    left, right, top, bottom = pad
    for region in (t[:, :, :top], t[:, :, t.shape[2] - bottom :], t[:, :, :, :left], t[:, :, :, t.shape[3] - right :]):
        if region.numel():
            region.zero_()


class KeptMemory:
    """One flat tensor per thread and slot, grown when a call needs more. A model's blocks share
    one (they run one after another) with the slots ``expand`` (a block's expansion, then the
    head), ``dw`` (the depthwise output) and ``out`` (the stem's and a block's output: a block
    without a residual reads its input before it writes its output, one with a residual adds its
    output to that input in place)."""

    def __init__(self) -> None:
        self._buffers: dict[tuple[int, str], torch.Tensor] = {}
        #: per thread and slot: the padded copy's (address, shape, padding) whose border is zero
        self._borders: dict[tuple[int, str], tuple[int, torch.Size, tuple[int, int, int, int]]] = {}
        self._off = threading.local()

    @property
    def active(self) -> bool:
        """Whether outputs go into this memory on this thread now (see :meth:`using`)."""
        return not getattr(self._off, "off", False)

    @contextlib.contextmanager
    def using(self, active: bool) -> Iterator[None]:
        """Within the block, on this thread: outputs go into this memory (``active``) or into fresh tensors."""
        before = getattr(self._off, "off", False)
        self._off.off = not active
        try:
            yield
        finally:
            self._off.off = before

    def __deepcopy__(self, memo: dict[int, object]) -> KeptMemory:
        return KeptMemory()  # buffers are scratch space: a copy grows its own

    def __reduce__(self) -> tuple[type[KeptMemory], tuple[()]]:
        return KeptMemory, ()

    def channels_last(self, shape: tuple[int, int, int, int], like: torch.Tensor, slot: str) -> torch.Tensor:
        """A channels_last tensor of ``shape`` (dtype and device of ``like``) in ``slot``."""
        n, c, h, w = shape
        key = (threading.get_ident(), slot)
        buf = self._buffers.get(key)
        if buf is None or buf.numel() < n * c * h * w or buf.dtype != like.dtype or buf.device != like.device:
            buf = like.new_empty(n * c * h * w)
            self._buffers[key] = buf
        return buf[: n * c * h * w].view(n, h, w, c).permute(0, 3, 1, 2)

    def padded_copy(self, x: torch.Tensor, pad: tuple[int, int, int, int], slot: str = "in") -> torch.Tensor:
        """``x`` copied into a channels_last tensor in ``slot`` with a zero border (left, right,
        top, bottom); the border is zeroed again only when the buffer or its layout changes."""
        n, c, h, w = x.shape
        left, right, top, bottom = pad
        out = self.channels_last((n, c, h + top + bottom, w + left + right), x, slot)
        key, layout = (threading.get_ident(), slot), (out.data_ptr(), out.shape, pad)
        if self._borders.get(key) != layout:
            _zero_border(out, pad)
            self._borders[key] = layout
        out[:, :, top : top + h, left : left + w].copy_(x)
        return out
