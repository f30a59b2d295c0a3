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

from effnet.errors import UserError, check_regular_file

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


#: The most a deflated zip entry can expand (deflate's limit is about 1032:1).
MAX_DEFLATE_RATIO = 1032


def check_torch_file(path: Path) -> None:
    """Refuse a torch file whose tensors declare more bytes than the file can hold, before PyTorch reads
    it: it allocates what is declared, so a few hundred bytes could ask for gigabytes. A zip file's
    entries are checked (stored ones: their stored size; deflated ones: deflate's best ratio), a legacy
    (pre-zip) file's storages from its pickles' opcodes."""
    import zipfile

    size = path.stat().st_size
    if not _is_zip(path):
        declared = _legacy_storage_bytes(path)
        if declared is not None and declared > size:
            raise UserError(
                f"{path}: refused: its tensors declare {declared:,} bytes, more than the file's {size:,}: damaged or "
                "crafted"
            )
        return
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return  # a damaged zip file: torch.load refuses it on its own
    for entry in entries:
        most = entry.compress_size * (1 if entry.compress_type == zipfile.ZIP_STORED else MAX_DEFLATE_RATIO)
        if entry.compress_size > size or entry.file_size > most:
            raise UserError(
                f"{path}: refused: archive entry {entry.filename[:80]!r} declares {entry.file_size:,} bytes, "
                f"more than its {entry.compress_size:,} stored bytes hold (the file is {size:,} bytes): damaged or "
                "crafted"
            )


#: Bytes per element of the storages a legacy (pre-zip) torch file names; others count as one byte.
_ELEMENT_BYTES = {"Double": 8, "Float": 4, "Half": 2, "BFloat16": 2, "Long": 8, "Int": 4, "Short": 2, "Char": 1,
                  "Byte": 1, "Bool": 1, "ComplexFloat": 8, "ComplexDouble": 16}  # fmt: skip


def _legacy_storage_bytes(path: Path) -> int | None:
    """The bytes the storages of a legacy torch file declare (read from its pickles' opcodes, nothing
    unpickled), or None when the file is not laid out as one."""
    import pickletools

    total, memo, recent = 0, {}, []
    try:
        with path.open("rb") as f:
            for _ in range(3):  # magic number, protocol version, system info
                for _op in pickletools.genops(f):
                    pass
            for op, arg, _pos in pickletools.genops(f):  # the object, storages as persistent ids
                if op.name in ("BINPUT", "LONG_BINPUT", "PUT") and recent:
                    memo[arg] = recent[-1]
                elif op.name == "MEMOIZE" and recent:
                    memo[len(memo)] = recent[-1]
                elif op.name in ("BINGET", "LONG_BINGET", "GET"):
                    recent.append(memo.get(arg))
                elif isinstance(arg, (str, int)) and not isinstance(arg, bool):
                    recent.append(arg)
                elif op.name == "STACK_GLOBAL" and len(recent) >= 2:
                    recent.append(f"{recent[-2]} {recent[-1]}")
                if op.name in ("BINPERSID", "PERSID"):
                    kinds = [v for v in recent if isinstance(v, str) and v.endswith("Storage")]
                    numbers = [v for v in recent if isinstance(v, int)]
                    if "storage" in recent and kinds and numbers:
                        kind = kinds[-1].rsplit(" ", 1)[-1].rsplit(".", 1)[-1].removesuffix("Storage")
                        total += numbers[-1] * _ELEMENT_BYTES.get(kind, 1)
                    recent = []
    except (ValueError, OSError, EOFError, KeyError, IndexError):
        return None
    return total


def _is_zip(path: Path) -> bool:
    """Whether a torch file is a zip archive (torch.save's format since PyTorch 1.6)."""
    with path.open("rb") as f:
        return f.read(2) == b"PK"


def read_torch(path: Path) -> Any:
    """A ``.pth``/``.pt`` file through ``torch.load(weights_only=True)``: plain tensors and containers only;
    its declared sizes are checked first (:func:`check_torch_file`)."""
    check_torch_file(path)
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
    path = check_regular_file(path, "weight file")  # a FIFO would block, a device never end
    kind = file_kind(path)
    if kind == "safetensors":
        return read_safetensors(path)
    if kind == "hdf5":
        return read_h5(path), {"container": "hdf5"}
    return as_state_dict(read_torch(path), str(path)), {}
