"""Unique-coordinates grid sampling: points -> voxel coordinates and the inverse map."""
from __future__ import annotations

import numpy as np

from pc3d.errors import DataFormatError


def unique_voxels(points: np.ndarray, voxel_size: float | tuple[float, float, float],
                  point_range: tuple[float, ...] | None = None, batch_index: int = 0):
    """Voxel coordinates of the occupied cells of a point cloud.

    points: [N, 3 + C] float32 (LiDAR frame). Indices are float32 floor((p - min) / size), as
    spconv computes them. Returns (coords int32 [M, 4] as (batch, z, y, x) sorted, spatial_shape
    (z, y, x), inverse int64 [N'] voxel of each kept point, keep bool [N] points inside the range).
    """
    xyz = np.asarray(points, np.float32)[:, :3]
    if not np.isfinite(xyz).all():
        raise DataFormatError(None, f"{int((~np.isfinite(xyz)).any(1).sum())} points are NaN or inf")
    size = np.broadcast_to(np.asarray(voxel_size, np.float32), (3,))
    if point_range is None:
        lo = xyz.min(0) if len(xyz) else np.zeros(3, np.float32)
        hi = (xyz.max(0) if len(xyz) else np.zeros(3, np.float32)) + size
    else:
        lo, hi = np.asarray(point_range[:3], np.float32), np.asarray(point_range[3:], np.float32)
    grid = np.round((hi - lo) / size).astype(np.int64)
    idx = np.floor((xyz - lo) / size).astype(np.int64)
    keep = ((idx >= 0) & (idx < grid)).all(1)
    idx = idx[keep]
    keys = (idx[:, 2] * grid[1] + idx[:, 1]) * grid[0] + idx[:, 0]
    uniq, inverse = np.unique(keys, return_inverse=True)
    z, rem = np.divmod(uniq, grid[1] * grid[0])
    y, x = np.divmod(rem, grid[0])
    coords = np.stack([np.full_like(z, batch_index), z, y, x], 1).astype(np.int32)
    return coords, (int(grid[2]), int(grid[1]), int(grid[0])), inverse, keep
