"""Checkpoint files: written atomically through :mod:`effnet.atomic`, read with
``torch.load(weights_only=True)`` so that loading one never runs code. A checkpoint holds tensors and
plain data only (random number generator states included, see :func:`rng_states`)."""

from __future__ import annotations

import os
import pickle
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from effnet.atomic import atomic_write
from effnet.errors import UserError, check_regular_file
from effnet.weights.files import check_torch_file

LAST = "last.pt"
#: Written into every checkpoint; /2 keeps RNG states as plain data (/1 pickled numpy arrays).
FORMAT = "effnet-train-checkpoint/2"


def rng_states() -> dict[str, Any]:
    """Every random number generator a training step draws from, as tensors and plain lists."""
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state(legacy=True)  # type: ignore[misc]
    version, internal, gauss_next = random.getstate()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, keys.tolist(), int(position), int(has_gauss), float(cached_gaussian)],
        "python": [version, list(internal), gauss_next],
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Put back what :func:`rng_states` returned."""
    torch.set_rng_state(states["torch"])
    kind, keys, position, has_gauss, cached_gaussian = states["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached_gaussian))
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write a checkpoint dict atomically: a crash leaves either the old file or the new one."""
    atomic_write(path, lambda handle: torch.save(state, handle), mkdir=True)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; a file whose loading would need more than
    tensors and plain data (code, objects) is refused with a UserError naming it, and so is anything but a
    regular file (a FIFO would block the read) and a file whose tensors declare more than it holds."""
    if os.path.lexists(path):
        check_regular_file(path, "checkpoint")
        check_torch_file(Path(path))
    try:
        with warnings.catch_warnings():  # a refused file is explained below, not by torch's notes on it
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"no checkpoint at {path}") from None
    except pickle.UnpicklingError:
        needs = _unsafe_globals(path)
        what = f" (it needs {', '.join(needs)})" if needs else ""
        raise UserError(
            f"refusing to load checkpoint {path}: it holds more than tensors and plain data{what}; "
            "effnet never runs code from a file"
        ) from None
    except Exception as err:  # noqa: BLE001 - a damaged file is the user's to know about
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"cannot read checkpoint {path}: {first_line}") from None


def _unsafe_globals(path: str | Path) -> list[str]:
    """What a refused checkpoint would import to load (read from the file, nothing run); [] if unknown."""
    try:
        return torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001 - only for the message
        return []


def prune_checkpoints(folder: Path, keep: int) -> None:
    """Keep the ``keep`` newest ``epoch_*.pt`` files (``last.pt`` is never removed)."""
    epochs = sorted(folder.glob("epoch_*.pt"))
    for old in epochs[: max(0, len(epochs) - keep)]:
        old.unlink(missing_ok=True)
