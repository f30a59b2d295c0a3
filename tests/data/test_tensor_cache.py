"""The proxy's in-memory data: decoded once into uint8 tensors, cropped and flipped a batch at a time,
evaluated exactly as the per-image path evaluates."""

import math

import torch
from PIL import Image

from effnet.data import ResumableSampler, TransformedDataset
from effnet.data.tensor_cache import BatchedTrainLoader, TensorSplits, crop_boxes, tensor_splits
from effnet.preprocess import Preprocessing
from effnet.train import get_recipe, train_model
from effnet.zoo import description_from_blocks

TINY = description_from_blocks("r1_k3_s11_e1_i32_o16_se0.25,r2_k3_s22_e4_i16_o24_se0.25")


def test_crop_boxes_follow_random_resized_crop():
    generator = torch.Generator().manual_seed(0)
    boxes = crop_boxes(4000, 32, 48, (0.35, 1.0), (3 / 4, 4 / 3), generator)
    x1, y1, x2, y2 = boxes.unbind(1)
    w, h = x2 - x1, y2 - y1
    assert bool((x1 >= 0).all() and (y1 >= 0).all() and (x2 <= 48).all() and (y2 <= 32).all())
    assert bool((w == w.round()).all() and (h == h.round()).all() and (w >= 1).all() and (h >= 1).all())
    area = w * h / (32 * 48)
    assert 0.33 < area.min() and area.max() <= 1.0  # rounding lets the area dip a little below 0.35
    ratio = w / h
    assert ratio.min() > 0.7 and ratio.max() < 1.4
    # an aspect ratio the image cannot hold falls back to torchvision's central crop
    from torchvision.transforms import RandomResizedCrop

    top, left, h, w = RandomResizedCrop.get_params(torch.zeros(3, 10, 100), (0.99, 1.0), (0.2, 0.2))
    tall = crop_boxes(8, 10, 100, (0.99, 1.0), (0.2, 0.2), generator)
    assert torch.equal(tall, torch.tensor([[left, top, left + w, top + h]] * 8, dtype=torch.float32))


def test_digits_decode_once_and_evaluate_as_the_per_image_path():
    splits = tensor_splits("digits")
    assert isinstance(splits, TensorSplits) and tensor_splits("digits") is splits
    assert splits.train.pixels.dtype == torch.uint8 and tuple(splits.train.pixels.shape[1:]) == (3, 8, 8)
    pre = Preprocessing(32, 1.0)
    fast = splits.eval_images(pre, torch.device("cpu"))
    slow = TransformedDataset(splits.val, pre.eval_transform())
    assert torch.equal(fast[:50], torch.stack([slow[i][0] for i in range(50)]))


def test_batched_augmentation_is_repeatable_and_normalised():
    pixels = torch.full((6, 3, 8, 8), 200, dtype=torch.uint8)
    from effnet.data.tensor_cache import TensorImages

    images = TensorImages(pixels, [0, 1, 2, 3, 4, 5])
    recipe = get_recipe("small")
    pre = Preprocessing(16, 1.0, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    sampler = ResumableSampler(6, seed=3)
    sampler.set_position(0)
    loader = BatchedTrainLoader(images, sampler, 3, recipe, pre, 16, torch.device("cpu"))
    batches = list(loader)
    assert len(batches) == len(loader) == 2 and batches[0][0].shape == (3, 3, 16, 16)
    assert torch.allclose(batches[0][0], torch.full((3, 3, 16, 16), (200 / 255 - 0.5) / 0.25), atol=1e-5)
    assert sorted(torch.cat([b[1] for b in batches]).tolist()) == [0, 1, 2, 3, 4, 5]
    keys = list(sampler)[:3]
    again = loader.batch(keys)
    assert torch.equal(again[0], loader.batch(keys)[0])


def test_training_on_memory_splits_is_repeatable_and_learns_like_the_per_image_path():
    splits = tensor_splits("digits")
    settings = dict(epochs=2, batch_size=32, resolution=16, recipe="small", progress=False, max_steps_per_epoch=20)
    first = train_model(TINY, splits, **settings)
    second = train_model(TINY, splits, **settings)
    assert first.top1 == second.top1 and first.steps == 40
    per_image = train_model(TINY, "digits", **settings)
    assert abs(first.top1 - per_image.top1) < 0.25  # other crops, same budget: the same ballpark
    assert math.isfinite(first.loss)


def test_images_of_different_sizes_stay_on_the_per_image_path(tmp_path):
    for split in ("train", "val"):
        for label in ("a", "b"):
            folder = tmp_path / split / label
            folder.mkdir(parents=True)
            Image.new("RGB", (8, 8), "red").save(folder / "x.png")
            Image.new("RGB", (12, 10), "blue").save(folder / "y.png")
    splits = tensor_splits(tmp_path)
    assert not isinstance(splits, TensorSplits) and len(splits.train) == 4


def test_opening_images_in_threads_leaves_pils_limit_as_it_was(tmp_path):
    """effnet lifts PIL's global limit for one header read at a time: threads opening files at once
    (the in-memory proxy decodes in a pool) must not leave it lifted."""
    from concurrent.futures import ThreadPoolExecutor

    from effnet.data.images import open_image

    for i in range(64):
        Image.new("RGB", (8, 8), (i, 0, 0)).save(tmp_path / f"{i}.png")
    limit = Image.MAX_IMAGE_PIXELS
    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(5):
            sizes = list(pool.map(lambda p: open_image(p).size, sorted(tmp_path.glob("*.png"))))
            assert sizes == [(8, 8)] * 64 and Image.MAX_IMAGE_PIXELS == limit
