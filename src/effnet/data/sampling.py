"""Sampling and loading: every process's share of each epoch, resumable part-way through.

Augmentation randomness is a function of (seed, epoch, sample index) only, so a run gives the
same batches whatever the number of loader workers and however often it is interrupted.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from effnet.data.datasets import ImageSource


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The augmentation seed of one sample in one epoch."""
    return ((seed * 1_000_003 + epoch) * 1_000_000_007 + index) % (2**62)


class TransformedDataset(Dataset):
    """Images through a transform; keys are ``(index, seed)`` pairs, the seed fixing the augmentation."""

    def __init__(self, source: ImageSource, transform: Any) -> None:
        self.source = source
        self.transform = transform

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, seed = (key, None) if isinstance(key, int) else key
        image, target = self.source.load(index)
        if seed is None:
            return self.transform(image), target
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.transform(image), target


class ResumableSampler(Sampler):
    """torch's DistributedSampler (shuffled per epoch, sharded over processes) that can start part-way
    through an epoch and attaches each sample's augmentation seed."""

    def __init__(self, size: int, *, seed: int, rank: int = 0, world: int = 1) -> None:
        self.inner = DistributedSampler(range(size), num_replicas=world, rank=rank, shuffle=True, seed=seed)
        self.seed = seed
        self.epoch = 0
        self.start = 0

    def set_position(self, epoch: int, start: int = 0) -> None:
        """Sample epoch ``epoch`` from its ``start``-th sample (of this process's share) on."""
        self.inner.set_epoch(epoch)
        self.epoch = epoch
        self.start = start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for position, index in enumerate(self.inner):
            if position >= self.start:
                yield index, sample_seed(self.seed, self.epoch, index)

    def __len__(self) -> int:
        return len(self.inner) - self.start


class ShardSampler(Sampler):
    """Indices ``rank, rank + world, …`` in order: every sample evaluated exactly once over all processes."""

    def __init__(self, size: int, rank: int = 0, world: int = 1) -> None:
        self.indices = list(range(rank, size, world))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def default_workers(in_memory: bool) -> int:
    """Loader processes: none for in-memory data, else one per CPU but one (at most 8)."""
    if in_memory:
        return 0
    return max(0, min(8, (os.cpu_count() or 1) - 1))


def make_train_loader(
    dataset: TransformedDataset, sampler: ResumableSampler, batch_size: int, workers: int, pin: bool
) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        drop_last=True,
        pin_memory=pin,
        persistent_workers=workers > 0,
    )


def make_eval_loader(
    dataset: TransformedDataset, batch_size: int, workers: int, pin: bool, rank: int = 0, world: int = 1
) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=ShardSampler(len(dataset), rank, world),
        num_workers=workers,
        pin_memory=pin,
        persistent_workers=workers > 0,
    )
