"""glibc's malloc set up for inference, once per process, through ``mallopt``.

With its defaults glibc maps every block above a (dynamic, at most 32 MiB) threshold afresh and hands
the top of its heap back to the system whenever enough of it is free, so the large activations of a
convolutional network are page-faulted in again on every call. Process-wide parameters stop that:
blocks come from the heap, which keeps its freed top (the README's ``MALLOC_*_`` settings; and, since
``mallopt`` cannot raise the mmap threshold above 32 MiB, larger blocks are not mapped either, or one
that finds the heap's top too small when first asked for is mapped afresh on every call from then
on). :func:`tune_allocator` sets them when the
fast path or a predictor is built, unless told not to (argument, or ``EFFNET_TUNE_ALLOCATOR=0``); on
any other C library it does nothing. What it did is one of :data:`STATES`, for reports."""

from __future__ import annotations

import ctypes
import os
import threading

#: Environment variable that, set to 0 (or false, no, off), leaves the allocator as it is.
OPT_OUT_ENV = "EFFNET_TUNE_ALLOCATOR"

#: glibc's ``mallopt`` parameters (malloc.h) and the values set: blocks up to 32 MiB from the heap, a
#: freed heap top kept up to 2 GiB (``mallopt`` takes an int), 256 MiB added to each heap growth, and
#: no block of the main heap mapped on its own (other threads' arenas still map what they cannot hold).
TUNED: dict[str, tuple[int, int]] = {
    "M_MMAP_THRESHOLD": (-3, 32 * 2**20),
    "M_TRIM_THRESHOLD": (-1, 2**31 - 1),
    "M_TOP_PAD": (-2, 256 * 2**20),
    "M_MMAP_MAX": (-4, 0),
}

#: The same parameters as glibc reads them from the environment (a user's own choice, left alone).
ENVIRONMENT = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")

#: What :func:`tune_allocator` found or did: ``tuned`` (set here), ``environment`` (the user's own
#: ``MALLOC_*_``/``GLIBC_TUNABLES`` settings, left alone), ``off`` (opted out), ``unsupported``
#: (not glibc, or ``mallopt`` refused a value).
STATES = ("tuned", "environment", "off", "unsupported")

_lock = threading.Lock()
_state: str | None = None  # None until the first call decides; "tuned" is never undone


def glibc() -> ctypes.CDLL | None:
    """The running glibc (for ``mallopt``), or None under any other C library."""
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return None
        return ctypes.CDLL(None)
    except (ValueError, OSError, AttributeError):
        return None


def opted_out() -> bool:
    """Whether ``EFFNET_TUNE_ALLOCATOR`` says to leave the allocator as it is."""
    return os.environ.get(OPT_OUT_ENV, "").strip().lower() in ("0", "false", "no", "off")


def _set_by_environment() -> bool:
    return any(name in os.environ for name in ENVIRONMENT) or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", "")


def tune_allocator(enabled: bool = True) -> str:
    """Set glibc's parameters of :data:`TUNED` once for this process (``enabled`` and not opted
    out by ``EFFNET_TUNE_ALLOCATOR``), and say the process's state, one of :data:`STATES`. Once set,
    they stay set: a later call with ``enabled`` False still answers ``tuned``."""
    global _state
    with _lock:
        if _state in ("tuned", "environment", "unsupported"):
            return _state
        if not enabled or opted_out():
            _state = None  # a later call may still tune
            return "off"
        libc = glibc()
        if libc is None:
            _state = "unsupported"
        elif _set_by_environment():
            _state = "environment"
        else:
            mallopt = libc.mallopt
            mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
            ok = [mallopt(param, value) == 1 for param, value in TUNED.values()]
            _state = "tuned" if all(ok) else "unsupported"
        return _state


def allocator_state() -> str:
    """The state :func:`tune_allocator` left this process in, without changing it (``off`` before any call)."""
    return _state or "off"
