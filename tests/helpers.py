"""Plain helper functions shared by test files (fixtures live in conftest.py); tests/ is on sys.path."""

from __future__ import annotations

import numpy as np
from PIL import Image


def make_digit_folder(root, classes=(0, 1, 2), per_class=12, val_per_class=4, val_name="val"):
    """A small image folder of real handwritten digits (scikit-learn's) as 16×16 PNGs."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    for split, count, offset in (("train", per_class, 0), (val_name, val_per_class, per_class)):
        for c in classes:
            folder = root / split / f"digit{c}"
            folder.mkdir(parents=True, exist_ok=True)
            picks = np.flatnonzero(bunch.target == c)[offset : offset + count]
            for i in picks:
                pixels = (bunch.images[i] * 255 / 16).astype("uint8")
                Image.fromarray(pixels).resize((16, 16), Image.BICUBIC).convert("RGB").save(folder / f"{i}.png")
    return root


def random_bn_stats(model, seed: int = 0):
    """``model`` in eval mode with seeded, non-trivial BatchNorm running statistics (so that folding and
    exporting them is really tested)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.copy_(torch.randn(module.num_features, generator=gen) * 0.2)
                module.running_var.copy_(torch.rand(module.num_features, generator=gen) + 0.5)
    return model.eval()


#: The three-class model of the ``int8_run`` fixture (tests/conftest.py) and its class names.
INT8_RUN_BLOCKS = "r1_k3_s11_e1_i32_o16_se0.25,r1_k3_s22_e6_i16_o24_se0.25,r1_k5_s22_e6_i24_o40_se0.25"
INT8_RUN_CLASSES = ["red", "green", "blue"]


def crafted_weights(good, path, **changes):
    """A copy of the weight file ``good`` at ``path`` with header metadata fields replaced by ``changes``
    (the tensors as they are): a hand-made hostile file."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(good), framework="pt") as f:
        metadata = dict(f.metadata())
    metadata.update(changes)
    save_file(load_file(good), path, metadata=metadata)
    return path


#: Known laws err = e∞ + k·x^(−a) per curve of :func:`synthetic_study` (x: cost over the baseline's); every
#: curve starts at the one baseline, so e∞ + k = 0.4 for all.
STUDY_LAWS = {
    "width": (0.10, 0.30, 0.5),
    "depth": (0.20, 0.20, 0.7),
    "resolution": (0.15, 0.25, 0.4),
    "compound": (0.05, 0.35, 0.45),
}
#: Each curve's costs over the baseline's (beyond the baseline), like the paper's sweeps.
STUDY_RATIOS = {
    "width": (1.96, 3.24, 6.76, 14.4, 25.0),
    "depth": (2.0, 3.0, 4.0, 6.0, 8.0),
    "resolution": (1.69, 2.25, 2.89, 3.61, 4.84),
    "compound": (2.0, 4.0, 8.0, 16.0, 32.0),
}
STUDY_BASE_MACS = 1_000_000


def synthetic_study(path, *, laws=None, ratios=None, seeds=8, noise=0.005, rng=0, num_classes=10, edit=None):
    """A study CSV (study-scaling's format, written by its own ``write_csv``) whose accuracies are drawn
    from known laws (:data:`STUDY_LAWS`) with Gaussian seed noise; ``edit(curves)`` may change the rows
    before they are written. Compound point φ = 1, 2, … costs ``ratios["compound"][φ-1]``."""
    from pathlib import Path

    from effnet.search.study import write_csv

    laws, ratios = laws or STUDY_LAWS, ratios or STUDY_RATIOS
    gen = np.random.default_rng(rng)

    def point(family, value, ratio, multipliers, law):
        e_inf, k, a = law
        acc = np.clip(1 - (e_inf + k * ratio**-a) + noise * gen.standard_normal(seeds), 0, 1)
        d, w, r = multipliers
        return {
            "family": family, "value": value, "depth": d, "width": w, "resolution_multiplier": r,
            "macs": int(STUDY_BASE_MACS * ratio), "params": int(1000 * ratio), "activations": int(5000 * ratio),
            "train_seconds": 10.0 * ratio, "num_classes": num_classes, "accuracy": float(acc.mean()),
            "accuracies": [float(x) for x in acc], "seeds": seeds, "state": "COMPLETE",
        }  # fmt: skip

    base = point("base", 1.0, 1.0, (1.0, 1.0, 1.0), laws["compound"])
    curves = {}
    for family, law in laws.items():
        rows = [dict(base, value=0.0 if family == "compound" else 1.0)]
        for i, ratio in enumerate(ratios[family]):
            value = float(i + 1) if family == "compound" else float(i + 2)
            multipliers = {
                "width": (1.0, value, 1.0),
                "depth": (value, 1.0, 1.0),
                "resolution": (1.0, 1.0, value),
                "compound": (1.2**value, 1.1**value, 1.15**value),
            }[family]
            rows.append(point(family, value, ratio, multipliers, law))
        curves[family] = rows
    if edit:
        edit(curves)
    return write_csv(curves, Path(path))
