"""Data for training: deterministic order, per-sample seeding, and a position that checkpoints can hold.

A resumed run must see the same batches with the same random crops/frame choices as the run it
continues. Three pieces make that true for any map-style stage dataset:
- `EpochSampler`: the shuffle of epoch e is a pure function of (seed, e);
- `SeededDataset`: every `dataset[i]` runs with python/numpy/torch RNGs seeded from (seed, epoch, i)
  and restores the caller's RNGs afterwards, so loading (in workers or not, prefetched or not)
  neither depends on nor disturbs the training RNG stream;
- `BatchStream`: endless batches that count (epoch, batch_in_epoch); on resume it skips the batches
  already consumed in the epoch without loading them (`accelerator.skip_first_batches`).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sized
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler

from emoportrait.errors import EMOError
from emoportrait.training.checkpoint import TrainState


def _mix(*values: int) -> int:
    """A 63-bit seed from several integers (splitmix-style), stable across processes and runs."""
    x = 0x9E3779B97F4A7C15
    for v in values:
        x = (x ^ (int(v) + 0x9E3779B97F4A7C15 + (x << 6) + (x >> 2))) & 0xFFFFFFFFFFFFFFFF
        x = (x * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x & 0x7FFFFFFFFFFFFFFF


class EpochSampler(Sampler[int]):
    """Indices 0..n-1, shuffled by a generator seeded with (seed, epoch); `set_epoch` picks the epoch."""

    def __init__(self, num_samples: int, seed: int = 0, shuffle: bool = True):
        self.num_samples = num_samples
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.num_samples))
        g = torch.Generator().manual_seed(_mix(self.seed, self.epoch))
        return iter(torch.randperm(self.num_samples, generator=g).tolist())

    def __len__(self) -> int:
        return self.num_samples


class SeededDataset(Dataset):
    """Wraps a map-style dataset so that item i of epoch e is always drawn with the same randomness."""

    def __init__(self, dataset: Dataset, seed: int = 0):
        self.dataset = dataset
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        seed = _mix(self.seed, self.epoch, index)
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            random.seed(seed)
            np.random.seed(seed % (2**32))
            torch.manual_seed(seed)
            try:
                return self.dataset[index]
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)


def build_dataloader(dataset: Dataset, batch_size: int, seed: int, num_workers: int = 0, shuffle: bool = True,
                     num_processes: int = 1) -> tuple[DataLoader, EpochSampler | None]:
    """A DataLoader with a resumable order; returns it and the sampler whose epoch the loop sets.

    Batches are full (`drop_last`), so every DDP rank takes the same number of steps.
    """
    if isinstance(dataset, IterableDataset):
        # A stream splits itself over ranks and workers and resumes through its own
        # `set_epoch(epoch, start_batch, batch_size)`; it is not handed to `accelerator.prepare`.
        loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, drop_last=True,
                            generator=torch.Generator().manual_seed(seed))
        return loader, None
    if not isinstance(dataset, Sized) or len(dataset) == 0:
        raise EMOError("the training dataset is empty: the shards hold no usable clip; check --data and the preprocess report")
    if len(dataset) < batch_size * num_processes:
        raise EMOError(f"the training dataset has {len(dataset)} samples, fewer than one batch "
                       f"({batch_size} x {num_processes} processes); lower batch_size or add data")
    sampler = EpochSampler(len(dataset), seed=seed, shuffle=shuffle)
    # The loader's own generator gives its workers their base seed, so creating an iterator
    # draws nothing from the global torch RNG (which belongs to the noise/timestep stream).
    loader = DataLoader(SeededDataset(dataset, seed), batch_size=batch_size, sampler=sampler, drop_last=True,
                        num_workers=num_workers, generator=torch.Generator().manual_seed(seed),
                        persistent_workers=False)
    return loader, sampler


class BatchStream:
    """Endless batches from a (prepared) DataLoader that keep `state.epoch` / `state.batch_in_epoch` current."""

    def __init__(self, accelerator, dataloader: DataLoader, sampler: EpochSampler | None, state: TrainState):
        self.accelerator = accelerator
        self.dataloader = dataloader
        self.sampler = sampler
        self.state = state
        self._it: Iterator | None = None

    def _start_epoch(self) -> None:
        epoch, skip = self.state.epoch, self.state.batch_in_epoch
        dataset = getattr(self.dataloader, "dataset", None)
        if isinstance(dataset, IterableDataset):  # a stream skips inside itself, without decoding
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(epoch, skip, self.dataloader.batch_size)
            self._it = iter(self.dataloader)
            return
        loader = self.accelerator.skip_first_batches(self.dataloader, skip) if skip else self.dataloader
        # accelerate's loaders re-apply their own epoch counter when iterated: set it too.
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
        if hasattr(dataset, "set_epoch"):  # SeededDataset forwards it to the stage dataset
            dataset.set_epoch(epoch)
        self._it = iter(loader)

    def __iter__(self) -> BatchStream:
        return self

    def __next__(self) -> Any:
        if self._it is None:
            self._start_epoch()
        try:
            batch = next(self._it)
        except StopIteration:
            if self.state.batch_in_epoch == 0:
                raise EMOError("the training dataset yielded no batch; check --data and batch_size") from None
            self.state.epoch += 1
            self.state.batch_in_epoch = 0
            self._it = None
            return next(self)
        self.state.batch_in_epoch += 1
        if self.sampler is None:  # not prepared by accelerate: move it ourselves
            from accelerate.utils import send_to_device

            batch = send_to_device(batch, self.accelerator.device)
        return batch
