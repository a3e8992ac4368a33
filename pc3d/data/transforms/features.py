"""Transforms of the points' feature values (columns 3 and on), not of their coordinates or of which points exist."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pc3d.errors import ConfigError, DataFormatError

from ..batch import clouds_of


class TanhFeatures:
    """points[:, c] = tanh(points[:, c]) for each feature column c in `columns`, on every cloud of the sample.

    FlatFormer's Waymo loader squashes intensity and elongation so (columns 3 and 4, `tanh_dim` in its configs):
    the raw values reach the thousands and would dwarf the coordinates. List it under `transforms` (train and
    test alike); they run after the augmentations, so the points GT sampling pastes in are squashed too, as
    FlatFormer's database loader squashes them."""

    def __init__(self, columns: Sequence[int] = (3, 4)):
        self.columns = [int(c) for c in columns]
        if not self.columns or min(self.columns) < 3 or len(set(self.columns)) != len(self.columns):
            raise ConfigError(f"TanhFeatures: columns must be distinct feature columns (>= 3), got {columns!r}")

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        del rng
        for cloud in clouds_of(sample):
            points = sample[cloud]
            if points.shape[1] <= max(self.columns):
                raise DataFormatError(sample.get("frame_id"), f"TanhFeatures squashes column {max(self.columns)} "
                                                              f"but {cloud} has {points.shape[1]} columns")
            points = points.copy()
            points[:, self.columns] = np.tanh(points[:, self.columns])
            sample = {**sample, cloud: points}
        return sample
