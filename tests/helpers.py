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
