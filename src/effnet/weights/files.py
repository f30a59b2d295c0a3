"""Reading weight files without ever running code from them.

safetensors and HDF5 hold only arrays; ``.pth``/``.pt`` files are read with
``torch.load(weights_only=True)`` and anything that would need more is refused. An HDF5 dataset is
checked before it is read: a few kilobytes of compressed file can declare many gigabytes.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from effnet.errors import UserError

#: Keys under which checkpoints commonly nest their state dict, in order of preference.
_NESTED = ("state_dict", "model_state_dict", "model", "module", "net", "ema", "state_dict_ema")
_PREFIXES = ("module.", "model.", "_orig_mod.")
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
#: The largest HDF5 dataset read (1 GiB): B7's largest tensor, its classifier, is 10 MB; L2's with
#: ImageNet-21k's classes 0.5 GB.
MAX_DATASET_BYTES = 1 << 30


def file_kind(path: Path) -> str:
    """safetensors, hdf5 or torch (zip or legacy pickle), from the file's first bytes."""
    with path.open("rb") as f:
        head = f.read(16)
    if head.startswith(HDF5_MAGIC):
        return "hdf5"
    # safetensors: an 8-byte little-endian header length, then the JSON header (its length's first
    # byte may be 0x80, a pickle's first byte: tell them apart by the length fitting the file)
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") <= path.stat().st_size - 8:
        return "safetensors"
    if head.startswith(b"PK") or head[:1] == b"\x80":
        return "torch"
    if path.suffix == ".safetensors":
        return "safetensors"
    raise UserError(f"{path}: not a weight file effnet can read (safetensors, .pth/.pt or Keras HDF5)")


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and header metadata of a safetensors file; a truncated or corrupt file is a UserError."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (not a dict)
    except Exception as err:  # safetensors raises its own error type for every malformed file
        raise UserError(f"{path}: not a valid safetensors file (truncated or corrupt?): {err}") from None
    return tensors, metadata


def read_torch(path: Path) -> Any:
    """A ``.pth``/``.pt`` file through ``torch.load(weights_only=True)``: plain tensors and containers only."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else "unsupported pickle content"
        raise UserError(
            f"{path}: refused: the file needs more than plain tensors to load, and effnet never runs code "
            f"from weight files ({first[:160]})"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise UserError(f"{path}: cannot read this PyTorch file (truncated or corrupt?): {err}") from None


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _read_dataset(path: Path | str, dataset: Any) -> np.ndarray:
    """One HDF5 dataset's array, once its kind and declared size are known to be sane."""
    import h5py

    if not isinstance(dataset, h5py.Dataset) or dataset.dtype.kind not in "biuf":
        raise UserError(f"{path}: refused: {dataset.name!r} is not an array of numbers")
    nbytes = dataset.size * dataset.dtype.itemsize
    if nbytes > MAX_DATASET_BYTES:
        shape = "×".join(str(d) for d in dataset.shape)
        raise UserError(
            f"{path}: refused: dataset {dataset.name!r} declares {shape} {dataset.dtype} values "
            f"({nbytes / 1e9:.1f} GB), more than any EfficientNet tensor (limit {MAX_DATASET_BYTES >> 30} GiB)"
        )
    return np.array(dataset[()])


def read_h5(path: str | Path) -> dict[str, torch.Tensor]:
    """A Keras HDF5 weight file (weights-only or a whole legacy model) as ``{"layer/weight": tensor}``."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            root = f["model_weights"] if "model_weights" in f else f
            if "layer_names" not in root.attrs:
                raise UserError(f"{path}: an HDF5 file without Keras layer weights")
            tensors: dict[str, torch.Tensor] = {}
            for layer in (_text(n) for n in root.attrs["layer_names"]):
                group = root[layer]
                for weight in (_text(n) for n in group.attrs.get("weight_names", [])):
                    short = weight.rsplit("/", 1)[-1].split(":", 1)[0]
                    tensors[f"{layer}/{short}"] = torch.from_numpy(_read_dataset(path, group[weight]))
            return tensors
    except (OSError, KeyError) as err:
        raise UserError(f"{path}: cannot read it as a Keras HDF5 weight file ({err})") from None


def as_state_dict(obj: Any, where: str) -> dict[str, torch.Tensor]:
    """The tensor mapping inside a loaded checkpoint (nested under 'state_dict', 'model', … or bare),
    with DataParallel/compile prefixes removed."""
    for _ in range(3):
        if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        if isinstance(obj, Mapping):
            nested = next((obj[k] for k in _NESTED if k in obj and isinstance(obj[k], Mapping)), None)
            if nested is not None:
                obj = nested
                continue
        raise UserError(f"{where}: holds no state dict (a mapping of names to tensors)")
    else:
        raise UserError(f"{where}: holds no state dict (a mapping of names to tensors)")
    state = {str(k): v for k, v in obj.items()}
    for prefix in _PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors of any supported weight file and its metadata (safetensors header; else empty)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"weight file {path} does not exist")
    if not path.is_file():
        raise UserError(f"{path} is not a file")
    kind = file_kind(path)
    if kind == "safetensors":
        return read_safetensors(path)
    if kind == "hdf5":
        return read_h5(path), {"container": "hdf5"}
    return as_state_dict(read_torch(path), str(path)), {}
