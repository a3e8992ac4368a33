"""The base of every pc3d dataset: frame list, seeded transforms and the skip_bad_frames policy.

A dataset subclass lists its frames and implements ``load(i)`` (read one frame from the official
layout and return a sample of the batch contract, pc3d.data.batch). ``dataset[i]`` loads, then
runs the transforms with a generator seeded by (seed, epoch, i) (or, with seed=None, by the
engine's per-sample seeding): the same sample comes out whatever the DataLoader's worker count or
order. Call ``set_epoch(e)`` at the start of each epoch. ``collate_fn`` batches (pc3d.data.batch).
"""
from __future__ import annotations

import random
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from pc3d.errors import DataFormatError
from pc3d.utils import seeding

from .batch import Collate, check_sample
from .transforms import Compose

TRAIN_SPLITS = ("train", "trainval", "training")


class BadFrameWarning(UserWarning):
    """A frame was skipped under skip_bad_frames=True (the message names the file and the problem)."""


class DataWarning(UserWarning):
    """The data is usable but something is absent or empty (missing sequences, empty scans): counted per
    dataset in ``dataset.notes`` and warned once per kind, naming the first file or folder and the count."""


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The augmentation seed of sample `index` in `epoch` of a run seeded with `seed` (the engine's mix too)."""
    return seeding.sample_seed(seed, epoch, index)


def seed_worker(worker_id: int) -> None:
    """DataLoader worker_init_fn: seed numpy / random from torch's per-worker seed (for code outside
    pc3d's transforms that uses the global generators)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)  # noqa: NPY002 - seeding the legacy global generator is the point here
    random.seed(seed)


class PointCloudDataset(torch.utils.data.Dataset):
    """Base dataset. Subclasses set ``self.frames`` (a list of frame records) and implement ``load``.

    augmentations: random transforms (or hydra ``_target_`` mappings, see pc3d.data.transforms),
    applied only when training; then transforms: applied to every sample (range crop, shuffle, sampling).
    training: whether to augment (default: the split is one of TRAIN_SPLITS).
    voxelizer: a pc3d.voxel voxelizer run by ``self.collate_fn`` (a Collate) in the DataLoader workers.
    point_cloud_range, voxel_size: the grid of the dataset's config, kept for models (their
    configs read ``${dataset.point_cloud_range}``); the voxelizer and RangeCrop get them explicitly.
    seed: the augmentation seed; sample i of epoch e is augmented with a generator seeded by
    (seed, e, i). None: draw each sample's seed from python's ``random``, which pc3d.engine seeds
    per sample from (run seed, epoch, index), so runs under the engine are reproducible too.
    augment_epochs: an attribute (None: every epoch): epochs from it on load training frames without the
    augmentations (pc3d.engine sets it from `train.plain_last_epochs`).
    skip_bad_frames: when a training frame raises DataFormatError, warn
    (BadFrameWarning naming the file), count it in ``self.skipped`` and return the next good frame
    instead of raising; ``skip_report()`` summarises what was skipped in this process. A frame that is not
    augmented (evaluation, test) still raises: the evaluators pair prediction i with frame i's labels.
    Usable oddities (an empty unlabelled scan, a missing sequence of a split) are counted in
    ``self.notes`` ({kind: [file or folder, ...]}) and warned once per kind (``note``).
    """

    feature_names: tuple[str, ...] = ()
    indoor = False  # an indoor scene (ScanNet): shown whole from above, boxes axis aligned in the scene's frame

    def __init__(self, transforms: Sequence[Any] | None = None, augmentations: Sequence[Any] | None = None,
                 voxelizer: Any = None, point_cloud_range: Sequence[float] | None = None,
                 voxel_size: Sequence[float] | None = None, seed: int | None = None, skip_bad_frames: bool = False,
                 training: bool | None = None):
        self.transforms = Compose(transforms)
        self.augmentations = Compose(augmentations)
        self.training = training
        self.point_cloud_range = None if point_cloud_range is None else [float(v) for v in point_cloud_range]
        self.voxel_size = None if voxel_size is None else [float(v) for v in voxel_size]
        self.collate_fn = Collate(voxelizer)
        self.seed = None if seed is None else int(seed)
        self.epoch = 0
        self.augment_epochs: int | None = None
        self.skip_bad_frames = bool(skip_bad_frames)
        self.skipped: dict[str, str] = {}
        self.notes: dict[str, list[str]] = {}
        self.frames: list = []

    @property
    def is_training(self) -> bool:
        return self.training if self.training is not None else getattr(self, "split", None) in TRAIN_SPLITS

    def __len__(self) -> int:
        return len(self.frames)

    def frame_id(self, index: int) -> str:
        return str(self.frames[index])

    def load(self, index: int) -> dict:
        """The raw sample of frame `index` (no augmentation); DataFormatError on bad input."""
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} frames")
        for attempt in range(len(self)):
            i = (index + attempt) % len(self)
            try:
                sample = self.load(i)
                check_sample(sample)
            except DataFormatError as error:
                if not self.skip_bad_frames:
                    raise
                if not self.is_training:
                    raise DataFormatError(error.path, f"{error.problem} (skip_bad_frames stands in another frame "
                                                      "for a bad one only when training: an evaluation would score "
                                                      "that frame's predictions against this one's labels)") from error
                self._skip(i, error)
                continue
            if self.seed is None:  # the caller (pc3d.engine) seeded python's generator for this sample
                seed = random.getrandbits(63)
            else:
                seed = sample_seed(self.seed, self.epoch, index)
            sample["seed"] = seed
            rng = np.random.default_rng(seed)
            if self.is_training and (self.augment_epochs is None or self.epoch < self.augment_epochs):
                sample = self.augmentations(sample, rng)
            return self.transforms(sample, rng)
        raise DataFormatError(None, f"all {len(self)} frames are bad: {self.skip_report()}")

    def _skip(self, index: int, error: DataFormatError) -> None:
        frame = self.frame_id(index)
        if frame not in self.skipped:
            self.skipped[frame] = str(error)
            warnings.warn(f"skipping frame {frame}: {error}", BadFrameWarning, stacklevel=3)

    def note(self, kind: str, *where) -> None:
        """Count files or folders under `kind` (what is absent or empty) in ``self.notes``; the first note of a
        kind warns (DataWarning) with the count and names, later ones are only counted (``skip_report``)."""
        seen = self.notes.setdefault(kind, [])
        new = [str(w) for w in where if str(w) not in seen]
        if not new:
            return
        first = not seen
        seen.extend(new)
        if first:
            names = ", ".join(new[:5]) + (", ..." if len(new) > 5 else "")
            warnings.warn(f"{type(self).__name__}: {kind}: {len(new)} ({names}); later ones are counted in "
                          "the dataset's notes, not warned", DataWarning, stacklevel=3)

    def skip_report(self) -> str:
        """'N bad frames skipped: frame: problem; ...' plus the counts of ``notes`` (empty string when none)."""
        parts = [f"{kind}: {len(where)} ({', '.join(where[:3])}{', ...' if len(where) > 3 else ''})"
                 for kind, where in self.notes.items()]
        if self.skipped:
            parts.insert(0, f"{len(self.skipped)} bad frame(s) skipped: "
                         + "; ".join(f"{k}: {v}" for k, v in self.skipped.items()))
        return "; ".join(parts)

    def scan(self, progress: Callable[[int], None] | None = None) -> dict[str, str]:
        """Load every frame once; returns {frame_id: problem} of the bad ones (used by create_data)."""
        bad = {}
        for i in range(len(self)):
            try:
                check_sample(self.load(i))
            except DataFormatError as error:
                bad[self.frame_id(i)] = str(error)
            if progress:
                progress(i + 1)
        return bad
