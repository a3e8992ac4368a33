"""Data loading for the engine: resumable, rank-sharded samplers, per-sample seeding, `to_device`.

Contract with datasets: a map-style dataset (`__len__`, `__getitem__(index)`) returns one sample;
its `collate_fn` attribute (a function or staticmethod, optional; torch's default collate
otherwise) batches samples into a dict of tensors / numpy arrays / objects with `.to(device)`
(SparseTensor). Augmentation draws from python's `random`, `np.random` or torch's global
generator; `SeededDataset` seeds those before each sample from (run seed, epoch, index).

Items are `(index, seed, epoch)` triples. Datasets with their own augmentation seed
(pc3d.data.dataset.PointCloudDataset with `seed=`) have a `set_epoch(epoch)`; `SeededDataset`
calls it inside whichever process loads the item, so DataLoader workers stay persistent across
epochs (no worker start-up per epoch, and no worker torn down while it still prefetches).

Datasets with an `augment_epochs` attribute (pc3d.data.dataset.PointCloudDataset) augment only the epochs
below it; `train.plain_last_epochs: N` sets it so that the run's last N epochs load frames as they are
(`stop_augmenting`: DSVT's last epoch; OpenPCDet's DisableAugmentationHook, mmdet3d's DisableAugHook).

Samplers. `EpochBatchSampler` is the training sampler (it replaces DistributedSampler): epoch `e`
shuffles with a generator seeded by (seed, e), pads to a multiple of the world size like
DistributedSampler, gives rank `r` the positions r, r + W, r + 2W, ... and batches them; a
resumed run starts it at a batch offset inside the epoch. With the same global batch, W ranks of
batch B see exactly the samples one process of batch W * B sees. `ShardSampler` splits an
evaluation set into rank shards (index r, r + W, ...) without padding, so no sample is
evaluated twice.
"""
from __future__ import annotations

import math
import multiprocessing
import multiprocessing.forkserver as forkserver
import os
import random
import signal
import threading
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info
from torch.utils.data._utils.collate import default_collate

from pc3d.engine.seeding import sample_seed, seed_globals
from pc3d.errors import ConfigError

PRELOAD = "pc3d.engine.forkserver_signals"


class Item(NamedTuple):
    """One sample request: dataset index, the seed its augmentation draws from, and the epoch
    (-1 for evaluation)."""

    index: int
    seed: int
    epoch: int = -1


class SeededDataset(Dataset):
    """Wraps a dataset; items are `Item(index, seed, epoch)` and each sample is loaded after seeding
    the global generators with `seed` (and telling a dataset with `set_epoch` the item's epoch). In
    the main process (workers=0) the caller's generator states are saved and restored around each
    batch, so data loading never moves the model's RNG."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset
        set_epoch = getattr(dataset, "set_epoch", None)
        self._set_epoch = set_epoch if callable(set_epoch) else None
        self._epoch: int | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: Item) -> Any:
        return self.__getitems__([item])[0]

    def __getitems__(self, items: Sequence[Item]) -> list:
        main = get_worker_info() is None
        if main:
            saved = random.getstate(), np.random.get_state(), torch.get_rng_state()  # noqa: NPY002
        try:
            samples = []
            for index, seed, epoch in items:
                if self._set_epoch is not None and epoch >= 0 and epoch != self._epoch:
                    self._set_epoch(epoch)
                    self._epoch = epoch
                seed_globals(seed)
                samples.append(self.dataset[index])
            return samples
        finally:
            if main:
                random.setstate(saved[0])
                np.random.set_state(saved[1])  # noqa: NPY002
                torch.set_rng_state(saved[2])


class EpochBatchSampler(Sampler[list[Item]]):
    """Batches of `Item(index, sample_seed, epoch)` for one rank; deterministic per (seed, epoch); resumable."""

    def __init__(self, num_samples: int, batch_size: int, *, shuffle: bool = True, seed: int = 0,
                 rank: int = 0, world_size: int = 1, drop_last: bool = True):
        self.num_samples, self.batch_size, self.shuffle = num_samples, batch_size, shuffle
        self.seed, self.rank, self.world_size, self.drop_last = seed, rank, world_size, drop_last
        self.per_rank = math.ceil(num_samples / world_size)
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch's order and skip its first `start_batch` batches (resume)."""
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        """Batches per epoch (before any skip)."""
        n = self.per_rank // self.batch_size
        return n if self.drop_last or self.per_rank % self.batch_size == 0 else n + 1

    def __iter__(self) -> Iterator[list[Item]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch))
            order = torch.randperm(self.num_samples, generator=g).tolist()
        else:
            order = list(range(self.num_samples))
        total = self.per_rank * self.world_size
        pad = total - len(order)  # repeated as often as needed (DistributedSampler's rule): W > 2N pads beyond one copy
        if pad and order:
            order += (order * math.ceil(pad / len(order)))[:pad]
        mine = order[self.rank:total:self.world_size]
        items = [Item(i, sample_seed(self.seed, self.epoch, i), self.epoch) for i in mine]
        for b in range(self.start_batch, len(self)):
            yield items[b * self.batch_size:(b + 1) * self.batch_size]


class ShardSampler(Sampler[Item]):
    """This rank's evaluation indices (rank, rank + W, ...) with a fixed seed per index; no padding."""

    def __init__(self, num_samples: int, *, rank: int = 0, world_size: int = 1, seed: int = 0):
        self.indices = list(range(rank, num_samples, world_size))
        self.seed = seed

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[Item]:
        return iter(Item(i, sample_seed(self.seed, -1, i)) for i in self.indices)


def collate_fn_of(dataset: Dataset):
    """The dataset's `collate_fn` attribute, or torch's default collate."""
    return getattr(dataset, "collate_fn", None) or default_collate


def stop_augmenting(dataset: Dataset, total_epochs: int, last: int) -> None:
    """Make `dataset` load the last `last` of `total_epochs` epochs without augmentation (its `augment_epochs`
    attribute); ConfigError when it has no such attribute or no augmented epoch would be left."""
    if not hasattr(dataset, "augment_epochs"):
        raise ConfigError(f"train.plain_last_epochs needs a dataset that can stop augmenting (an augment_epochs "
                          f"attribute, as pc3d.data.dataset.PointCloudDataset has); {type(dataset).__name__} has none")
    if last >= total_epochs:
        raise ConfigError(f"train.plain_last_epochs={last} leaves no augmented epoch of the run's {total_epochs}")
    dataset.augment_epochs = total_epochs - last


def worker_context(workers: int) -> str | None:
    """Start method of DataLoader workers: forkserver where there is one, since libgomp (numba's and
    torch's OpenMP) aborts in a child forked after a parallel region ran in the parent. The forkserver preloads
    `pc3d.engine.forkserver_signals` (it ignores a group's SIGTERM there), if it has not started yet."""
    if workers > 0 and "forkserver" in multiprocessing.get_all_start_methods():
        # ['__main__'] by default (a private attribute: a Python without it keeps that default); effective until the
        # forkserver starts
        preload = getattr(forkserver._forkserver, "_preload_modules", ["__main__"])
        if PRELOAD not in preload:
            forkserver.set_forkserver_preload([*preload, PRELOAD])
        return "forkserver"
    return None


def init_worker(worker_id: int) -> None:
    """`worker_init_fn` of every loader.

    Threads: numba's kernels in a worker (voxelizers, the simulator) run on as many threads as torch there
    (torch sets 1 in each worker), so N workers add N threads, not N x cores. The bounded OpenMP spin of pc3d's
    thread policy reaches workers through the environment.

    Signals: a worker ignores SIGINT, and SIGTERM from anyone but the process that started it
    (`leave_foreign_sigterm_to_the_trainer`). Ctrl-C reaches the whole foreground process group, and SLURM's
    SIGTERM every process of the job; a worker that died of either would end the run at the next batch with
    "DataLoader worker exited unexpectedly", before the trainer's stop (pc3d.engine.signals) saves at the step
    boundary. The forkserver ignores SIGINT itself, and SIGTERM by `worker_context`'s preload."""
    del worker_id
    from pc3d_ops.threads import use_threads

    use_threads(torch.get_num_threads())
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    leave_foreign_sigterm_to_the_trainer()


def leave_foreign_sigterm_to_the_trainer() -> None:
    """In a loader's worker: exit at once on a SIGTERM from the process that started it (the loader ending a
    worker that did not stop, or multiprocessing at exit: torch's worker handler does the same), and ignore one
    from anyone else (a group's or a job's, which the trainer hears too and answers by stopping at the step
    boundary, then ending its workers itself; should the trainer die instead, torch's worker loop sees it and
    exits). The sender is known only to `sigwaitinfo`: SIGTERM is blocked in this thread, and so in every thread
    started after it, and one thread waits for it. Where there is no sigwaitinfo (macOS) SIGTERM keeps torch's
    handling."""
    if not hasattr(signal, "sigwaitinfo"):
        return
    starter = multiprocessing.parent_process()
    senders = {os.getppid(), starter.pid if starter is not None else os.getppid()}  # forkserver worker: 2 pids
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})

    def wait() -> None:
        while True:
            info = signal.sigwaitinfo({signal.SIGTERM})
            if info.si_pid in senders:
                os._exit(0)

    threading.Thread(target=wait, name="pc3d-sigterm", daemon=True).start()


def train_loader(dataset: Dataset, sampler: EpochBatchSampler, *, workers: int, pin_memory: bool = False
                 ) -> DataLoader:
    return DataLoader(SeededDataset(dataset), batch_sampler=sampler, num_workers=workers,
                      collate_fn=collate_fn_of(dataset), pin_memory=pin_memory, persistent_workers=workers > 0,
                      multiprocessing_context=worker_context(workers), worker_init_fn=init_worker,
                      generator=torch.Generator().manual_seed(sampler.seed))


def eval_loader(dataset: Dataset, *, batch_size: int, workers: int, rank: int = 0, world_size: int = 1,
                seed: int = 0, pin_memory: bool = False) -> DataLoader:
    sampler = ShardSampler(len(dataset), rank=rank, world_size=world_size, seed=seed)
    return DataLoader(SeededDataset(dataset), batch_size=batch_size, sampler=sampler, num_workers=workers,
                      collate_fn=collate_fn_of(dataset), pin_memory=pin_memory,
                      multiprocessing_context=worker_context(workers), worker_init_fn=init_worker,
                      generator=torch.Generator().manual_seed(seed))


def to_device(obj: Any, device: torch.device, non_blocking: bool = True) -> Any:
    """Move tensors (and objects with `.to`, like SparseTensor) inside dicts / lists / tuples to
    `device`; numpy arrays and everything else are returned unchanged."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=non_blocking)
    if isinstance(obj, dict):
        return {k: to_device(v, device, non_blocking) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        moved = [to_device(v, device, non_blocking) for v in obj]
        return type(obj)(*moved) if hasattr(obj, "_fields") else type(obj)(moved)
    if isinstance(obj, np.ndarray | str | bytes | int | float) or obj is None:
        return obj
    move = getattr(obj, "to", None)
    return move(device) if callable(move) else obj


def to_cpu(obj: Any) -> Any:
    """Detach tensors to CPU inside nested containers (predictions before gathering)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        moved = [to_cpu(v) for v in obj]
        return type(obj)(*moved) if hasattr(obj, "_fields") else type(obj)(moved)
    return obj
