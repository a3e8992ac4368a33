"""Augmentation of clouds whose feature columns hold surface normals (ModelNet40's nx, ny, nz).

The global transforms (pc3d.data.transforms.global_ops) move x, y, z only; a normal must turn with the
surface. Uniform scaling and jitter leave normals as they are, so only rotation needs its own transform.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pc3d.errors import ConfigError

from .global_ops import _pair, affine_sample


class RotationWithNormals:
    """Rotate the sample about z by an angle uniform in `angle` (radians; one number a = [-a, a]) and turn the
    normal columns with it (PointNet++'s rotate_point_cloud_with_normal; GlobalRotation moves x, y, z only).

    columns: the indices of nx, ny, nz in points (3, 4, 5 for ModelNet40)."""

    def __init__(self, angle: float | Sequence[float] = (-np.pi, np.pi), columns: Sequence[int] = (3, 4, 5)):
        self.low, self.high = _pair(angle, "angle")
        if len(columns) != 3:
            raise ConfigError(f"columns must name the 3 normal columns, got {columns!r}")
        self.columns = [int(c) for c in columns]

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        a = rng.uniform(self.low, self.high)
        turn = np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])
        sample = affine_sample(sample, turn)  # copies the points
        points = sample["points"]
        points[:, self.columns] = (points[:, self.columns] @ turn.T).astype(points.dtype)
        return sample
