"""A short smoke run of an installed effnet: import, build B0, one forward, the fast path, ONNX export.

CI runs it against the lowest supported torch / torchvision pair (``.ci/run``), where the test suite
does not run. It prints each step and exits non-zero on the first failure.

    python3 scripts/smoke.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

STARTED = time.perf_counter()

import torch  # noqa: E402  (its import is timed)
import torchvision  # noqa: E402

import effnet  # noqa: E402
from effnet.export import export_model  # noqa: E402

#: The largest difference from eager float32 accepted (the fast path and ONNX Runtime agree to ~1e-5).
TOLERANCE = 1e-4


def step(name: str, started: float, detail: str) -> None:
    print(f"smoke: {name:<10} {time.perf_counter() - started:6.2f} s  {detail}", flush=True)


def random_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` in eval mode with seeded BatchNorm statistics and affine parameters, as a trained
    model has: a fresh model's residual branches start at zero, and its logits near zero prove little."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                width = module.num_features
                module.running_mean.copy_(torch.randn(width, generator=gen) * 0.2)
                module.running_var.copy_(torch.rand(width, generator=gen) + 0.5)
                module.weight.copy_(torch.rand(width, generator=gen) + 0.5)
                module.bias.copy_(torch.randn(width, generator=gen) * 0.1)
    return model.eval()


def main() -> int:
    started = STARTED
    torch.set_num_threads(min(2, torch.get_num_threads()))
    torch.manual_seed(0)
    step(
        "import",
        started,
        f"effnet {effnet.__version__} ({Path(effnet.__file__).parent}), torch {torch.__version__}, "
        f"torchvision {torchvision.__version__}",
    )

    started = time.perf_counter()
    model = random_batchnorm(effnet.create_model("efficientnet_b0"))
    counts = effnet.profile(model.spec)
    step("build", started, f"{model.spec.name}: {counts.params / 1e6:.2f}M parameters, {counts.macs / 1e6:.0f}M MACs")

    started = time.perf_counter()
    images = torch.randn(2, 3, model.spec.resolution, model.spec.resolution)
    with torch.inference_mode():
        logits = model(images)
    if tuple(logits.shape) != (2, 1000) or not torch.isfinite(logits).all():
        raise RuntimeError(f"eager forward gave {tuple(logits.shape)} with finite={bool(torch.isfinite(logits).all())}")
    step("forward", started, f"eager {tuple(images.shape)} -> {tuple(logits.shape)}")

    started = time.perf_counter()
    fast = effnet.optimize(model)
    with torch.inference_mode():
        diff = float((fast(images) - logits).abs().max())
    if not diff <= TOLERANCE:
        raise RuntimeError(f"the fast path differs from eager by {diff:.2e} (> {TOLERANCE:g})")
    step("fast path", started, f"effnet.optimize: max |fast - eager| {diff:.1e}")

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        report = export_model(model, Path(folder) / "b0.onnx", "onnx")
    if not report.max_abs_diff <= TOLERANCE:
        raise RuntimeError(f"ONNX Runtime differs from eager by {report.max_abs_diff:.2e} (> {TOLERANCE:g})")
    sizes = ", ".join(str(size) for size in report.checked_sizes)
    step(
        "onnx",
        started,
        f"{report.bytes / 1e6:.1f} MB, {report.runtime} at {sizes} px: max diff {report.max_abs_diff:.1e}",
    )
    print("smoke: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
