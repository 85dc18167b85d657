"""Streaming (IterableDataset) reading of the stage datasets: whole shards, sequentially.

For storage where seeks are expensive (object stores, some cluster file systems) the shards
are read front to back, webdataset style, and split over DDP ranks and DataLoader workers:

- stream k = rank * num_workers + worker of `world_size * num_workers` streams;
- with at least as many shards as streams, stream k reads shards k, k + streams, ... of the
  epoch's shard permutation; otherwise every stream reads all shards and keeps the clips whose
  index is k modulo streams (small corpora, tests);
- a buffer of `shuffle_buffer` clips (encoded bytes, not decoded frames) shuffles clips and
  interleaves the `samples_per_clip` samples of each;
- an epoch is `len(dataset)` samples per rank (the clip count x samples_per_clip / world size,
  from the manifest); every worker yields its exact share, re-reading its shards if needed, so
  all ranks take the same number of steps (no DDP hang on uneven shards).

Everything random is drawn from generators seeded with (seed, epoch, rank, worker), so a run is
reproducible and `set_epoch(epoch, start_batch, batch_size)` resumes inside an epoch by skipping
(without decoding) what each worker had produced, assuming the DataLoader's usual in-order
round-robin over workers.

DDP: the dataset splits by rank itself. Do not hand its DataLoader to `accelerator.prepare`
(accelerate would dispatch or re-shard it); move batches to `accelerator.device` instead, or
pass `rank=0, world_size=1` when accelerate dispatches batches from the main process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from emoportrait.data.datasets import ClipDataset, ClipSource
from emoportrait.data.shards import iter_tar_samples
from emoportrait.errors import EMOError


def distributed_rank() -> tuple[int, int]:
    """(rank, world_size) of this process: torch.distributed when initialised, else RANK/WORLD_SIZE."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


class StreamingClipDataset(IterableDataset):
    """An `ImageClipDataset` / `VideoClipDataset` read as a rank- and worker-split stream.

    Args:
        dataset: the map-style stage dataset whose samples (and settings, seed) to stream.
        shuffle_buffer: clips held in memory (encoded) for shuffling.
        rank, world_size: override the detected distributed position.
    """

    def __init__(self, dataset: ClipDataset, shuffle_buffer: int = 8, rank: int | None = None,
                 world_size: int | None = None):
        self.dataset = dataset
        self.shuffle_buffer = max(1, int(shuffle_buffer))
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start_batch, self.batch_size = 0, 0, 1
        self.keys = {c.key for c in dataset.clips}
        self.shards: list[str] = list(dict.fromkeys(c.shard for c in dataset.clips))  # manifest order

    def _position(self) -> tuple[int, int]:
        rank, world = distributed_rank()
        return (self.rank if self.rank is not None else rank), (self.world_size if self.world_size is not None else world)

    def __len__(self) -> int:
        """Samples per rank and epoch."""
        return len(self.dataset) // self._position()[1]

    def set_epoch(self, epoch: int, start_batch: int = 0, batch_size: int = 1) -> None:
        """Select the epoch; `start_batch` > 0 resumes after that many batches of `batch_size`."""
        self.epoch, self.start_batch, self.batch_size = int(epoch), int(start_batch), int(batch_size)
        self.dataset.set_epoch(epoch)

    def _clips(self, stream: int, streams: int, cycle: int) -> Iterator[tuple[str, dict[str, bytes]]]:
        """(key, member bytes) of the clips this stream reads in pass `cycle` over its shards."""
        perm = np.random.default_rng([self.dataset.seed, self.epoch, cycle, 7]).permutation(len(self.shards))
        order = [self.shards[i] for i in perm]
        if len(order) >= streams:
            shards, keep = order[stream::streams], None
        else:  # fewer shards than streams: split by clip index instead
            shards, keep = order, stream
        index = 0
        for shard in shards:
            features = self._beside(self.dataset.features_dir, shard)
            moments = self._beside(self.dataset.latents_dir, shard)
            for key, files in iter_tar_samples(self.dataset.root / shard):
                if key not in self.keys:
                    continue
                if keep is None:
                    mine = True
                elif len(self.keys) >= streams:
                    mine = index % streams == keep
                else:  # fewer clips than streams: streams share clips so that none is empty
                    mine = index == keep % len(self.keys)
                index += 1
                if mine:
                    if features is not None:
                        files = dict(files, **{"features.npy": features(key)["features.npy"]})
                    if moments is not None:
                        files = dict(files, **{f"latent.{ext}": data for ext, data in moments(key).items()})
                    yield key, files

    @staticmethod
    def _beside(cache, shard: str):
        """key -> member bytes of the same shard in a cache folder (audio features, latents), read in step."""
        if cache is None:
            return None
        it = iter_tar_samples(cache / shard)
        seen: dict[str, dict[str, bytes]] = {}

        def get(key: str) -> dict[str, bytes]:
            while key not in seen:
                nxt = next(it, None)
                if nxt is None:
                    raise EMOError(f"{cache / shard}: has no entry for clip {key}; rebuild that cache")
                seen[nxt[0]] = nxt[1]
            return seen.pop(key)

        return get

    def _source(self, key: str, files: dict[str, bytes]) -> ClipSource:
        read_features = read_moments = None
        if "features.npy" in files:
            from emoportrait.data.audio_cache import decode_features

            def read_features():
                return decode_features(files["features.npy"]), self.dataset.features_context

        if self.dataset.latents_dir is not None:
            from emoportrait.data.latent_cache import moments_name

            def read_moments(index: int) -> bytes:
                return files[f"latent.{moments_name(index)}"]

        return ClipSource(key, files.__getitem__, read_features, read_moments)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        rank, world = self._position()
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        # The DataLoader asks worker 0 first; after `start_batch` batches the next batch belongs to
        # logical worker start_batch % workers, so roles are rotated to keep the order on resume.
        worker = (worker + self.start_batch) % workers
        stream, streams = rank * workers + worker, world * workers
        per_rank = len(self)
        quota = per_rank // workers + (1 if worker < per_rank % workers else 0)
        skip = len(range(worker, self.start_batch, workers)) * self.batch_size
        spc = self.dataset.samples_per_clip
        order = np.random.default_rng([self.dataset.seed, self.epoch, rank, worker, 11])
        produced, cycle = 0, 0
        while produced < quota:
            buffer: list[list] = []  # [key, files, samples left]
            clips = self._clips(stream, streams, cycle)
            exhausted, any_clip = False, False
            while produced < quota and (buffer or not exhausted):
                while not exhausted and len(buffer) < self.shuffle_buffer:
                    nxt = next(clips, None)
                    if nxt is None:
                        exhausted = True
                    else:
                        buffer.append([nxt[0], nxt[1], spc])
                        any_clip = True
                if not buffer:
                    break
                i = int(order.integers(len(buffer)))
                key, files, left = buffer[i]
                if produced >= skip:
                    rng = np.random.default_rng([self.dataset.seed, self.epoch, rank, worker, produced])
                    yield self.dataset.build(self._source(key, files), rng)
                produced += 1
                if left <= 1:
                    buffer.pop(i)
                else:
                    buffer[i][2] = left - 1
            if not any_clip:  # this stream has no clip at all (more streams than clips)
                return
            cycle += 1
