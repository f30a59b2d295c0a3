"""On a GPU: the inference fast path at any input size, in every precision, against the plain model.

B0 ('same' padding: the strided layers' asymmetric pads, cropped on CUDA) and Lite0, random
BatchNorm statistics so that folding counts, 8 random images at 224, 257 (odd) and 320 px: the
largest |fast − plain| in strict float32 (TF32 off), and the relative error and top-1 agreement of
cuDNN's default TF32, bfloat16 and float16 against the plain model in float64. One JSON object is
written to ``--save`` (default ``$OUT/gpu-check.json`` where ``OUT`` is set, else stdout only).

    python benchmarks/check_cuda.py        # under 30 s on an H200
"""

from __future__ import annotations

import argparse
import json
import os

import torch

from bench_speed import randomise_bn, tf32  # the bench's own helpers (this script runs from benchmarks/)
from effnet import create_model
from effnet.atomic import atomic_write_text
from effnet.deploy.optimize import optimize


def check(name: str, sizes: tuple[int, ...], batch: int) -> dict[str, dict[str, float]]:
    """{size: figures} for one architecture."""
    torch.manual_seed(0)
    model = randomise_bn(create_model(name, padding="same").eval())
    model = model.cuda().to(memory_format=torch.channels_last)
    paths = {dtype: optimize(model, dtype=dtype) for dtype in ("float32", "bfloat16", "float16")}
    out = {}
    for size in sizes:
        x = torch.randn(batch, 3, size, size, device="cuda")
        with torch.inference_mode():
            with tf32(False):
                reference = model(x).double()
                row = {"strict_fp32_max_abs_diff": (paths["float32"](x).double() - reference).abs().max().item()}
            for dtype, fast in paths.items():  # with TF32 as PyTorch has it (convolutions on by default)
                y = fast(x)
                if y.dtype != torch.float32 or not torch.isfinite(y).all():
                    raise AssertionError(
                        f"{name} {dtype} at {size}: logits {y.dtype}, finite {torch.isfinite(y).all()}"
                    )
                key = "tf32" if dtype == "float32" else dtype
                row[f"{key}_relative_error"] = ((y.double() - reference).norm() / reference.norm()).item()
                row[f"{key}_top1_agreement"] = (y.argmax(-1) == reference.argmax(-1)).float().mean().item()
        out[str(size)] = row
        print(name, size, "  ".join(f"{k} {v:.3g}" for k, v in row.items()), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 257, 320])
    parser.add_argument("--batch", type=int, default=8)
    default = os.path.join(os.environ["OUT"], "gpu-check.json") if os.environ.get("OUT") else None
    parser.add_argument("--save", default=default, help="also write the JSON object here")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        parser.error("no CUDA device: this check runs on a GPU")
    report = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        **{name: check(name, tuple(args.sizes), args.batch) for name in ("efficientnet_b0", "efficientnet_lite0")},
    }
    if args.save:
        atomic_write_text(args.save, json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
