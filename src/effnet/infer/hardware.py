"""What this machine offers inference: the device asked for, the precision asked for, and the CPU's
instruction sets that decide whether bfloat16 (or float16) runs natively here.

bfloat16 on a CPU needs AVX-512-BF16 or AMX-BF16 (oneDNN's bf16 convolutions); float16 needs
AVX-512-FP16 or AMX-FP16. Without them the fast path runs float32 and says so in one line."""

from __future__ import annotations

import sys

import torch

from effnet.errors import UserError

#: Precisions the fast path computes in, by name.
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

#: CPU instruction sets, of torch's list, that matter for inference speed and reduced precision.
_REPORTED = ("avx2", "fma3", "avx512_f", "avx512_bw", "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni")

#: The instruction sets that give a CPU native arithmetic in each reduced precision.
_NATIVE = {torch.bfloat16: ("avx512_bf16", "amx_bf16"), torch.float16: ("avx512_fp16", "amx_fp16")}


def cpu_features() -> dict[str, object]:
    """The CPU's name, torch's kernel level (``get_cpu_capability``) and the instruction sets of
    :data:`_REPORTED` and AMX it has: what every speed figure is reported with."""
    caps = torch.cpu.get_capabilities()
    flags = [name for name in _REPORTED if caps.get(name)]
    flags += sorted(name for name, present in caps.items() if name.startswith("amx") and present)
    return {
        "cpu": caps.get("cpu_name", ""),
        "torch_capability": torch.backends.cpu.get_cpu_capability(),
        "flags": flags,
        "cores": caps.get("num_physical_cores"),
    }


def native_on_cpu(dtype: torch.dtype) -> bool:
    """Whether this CPU computes ``dtype`` natively (float32 always)."""
    caps = torch.cpu.get_capabilities()
    return dtype == torch.float32 or any(caps.get(name) for name in _NATIVE.get(dtype, ()))


def int8_dot_products_on_cpu() -> bool:
    """Whether this CPU multiplies u8 × s8 into 32-bit sums in one step (VNNI or AMX-INT8); without it
    ONNX Runtime's int8 kernels sum pairs in 16 bits, which full-range 8-bit weights can saturate."""
    caps = torch.cpu.get_capabilities()
    return any(caps.get(name) for name in ("avx512_vnni", "avx_vnni", "amx_int8"))


def module_device(module: torch.nn.Module) -> torch.device:
    """Where ``module``'s tensors are: its first parameter's device, else its first buffer's (the fast
    path keeps its weights as buffers), else the CPU."""
    tensor = next(iter(module.parameters()), None)
    if tensor is None:
        tensor = next(iter(module.buffers()), None)
    return torch.device("cpu") if tensor is None else tensor.device


def resolve_device(device: str | torch.device | None) -> torch.device:
    """A torch device from a name ("cpu", "cuda", "cuda:1"; None: cpu), or a UserError naming
    ``device`` when it is not a device or not present here."""
    if device is None:
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise UserError(f"device {device!r} is not a device (cpu, cuda, cuda:N)", field="device") from None
    if dev.type not in ("cpu", "cuda"):
        raise UserError(f"device {device!r} is not supported here (cpu, cuda, cuda:N)", field="device")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device {device!r}: no CUDA GPU is available here", field="device")
        if (dev.index or 0) >= torch.cuda.device_count():
            raise UserError(f"device {device!r}: this machine has {torch.cuda.device_count()} GPU(s)", field="device")
    return dev


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device | str = "cpu") -> torch.dtype:
    """The precision to compute in: ``dtype`` by name or as a torch dtype (None: float32). A
    reduced precision the CPU has no instructions for falls back to float32, with one line on
    stderr saying so."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise UserError(f"dtype {dtype!r} is unknown (known: {', '.join(DTYPES)})", field="dtype")
        dtype = DTYPES[dtype]
    if dtype not in DTYPES.values():
        raise UserError(f"dtype {dtype} is not supported (known: {', '.join(DTYPES)})", field="dtype")
    if torch.device(device).type == "cpu" and not native_on_cpu(dtype):
        needs = " or ".join(name.upper() for name in _NATIVE[dtype])
        name = str(dtype).removeprefix("torch.")
        print(f"effnet: this CPU has no {name} instructions ({needs}); computing in float32", file=sys.stderr)
        return torch.float32
    return dtype
