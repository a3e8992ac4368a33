"""Augmentation of clouds whose feature columns hold surface normals (ModelNet40's nx, ny, nz).

A sample names its normal columns (`normal_columns`, pc3d.data.batch), and every global transform
(pc3d.data.transforms.global_ops.affine_sample) turns them as directions: rotations and mirrors turn them,
uniform scaling leaves them. This transform is PointNet++'s rotation for samples that do not name them.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pc3d.errors import ConfigError

from .global_ops import _pair, rotate_sample


class RotationWithNormals:
    """Rotate the sample about z by an angle uniform in `angle` (radians; one number a = [-a, a]) with its normals
    (PointNet++'s rotate_point_cloud_with_normal): `columns` (the indices of nx, ny, nz; 3, 4, 5 for ModelNet40)
    join the sample's `normal_columns`, so this and every later global transform turn them."""

    def __init__(self, angle: float | Sequence[float] = (-np.pi, np.pi), columns: Sequence[int] = (3, 4, 5)):
        self.low, self.high = _pair(angle, "angle")
        if len(columns) != 3:
            raise ConfigError(f"columns must name the 3 normal columns, got {columns!r}")
        self.columns = tuple(int(c) for c in columns)

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        a = rng.uniform(self.low, self.high)
        named = tuple(sample.get("normal_columns", ()))
        if not set(self.columns) <= set(named):
            sample["normal_columns"] = named + self.columns
        return rotate_sample(sample, a)
