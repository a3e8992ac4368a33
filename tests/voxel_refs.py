"""Brute-force numpy references of the voxelizers (small clouds only: they loop in Python)."""
from __future__ import annotations

import numpy as np


def cells(positions: np.ndarray, lower, size, grid) -> tuple[np.ndarray, np.ndarray]:
    """float32 floor((p - lower) / size) per axis (fastest first) and the in-range mask."""
    lower, size = np.asarray(lower, np.float32), np.asarray(size, np.float32)
    idx = np.floor((positions.astype(np.float32) - lower) / size)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(idx).all(1) & ((idx >= 0) & (idx < np.asarray(grid))).all(1)
    return np.where(ok[:, None], idx, 0).astype(np.int64), ok


def hard_reference(points, idx, ok, max_points, max_voxels, batch_index=0):
    """spconv's PointToVoxel loop, literally: (voxels, num_points, coords, point_to_voxel)."""
    c = points.shape[1]
    ids: dict[tuple, int] = {}
    voxels, nums, coords = [], [], []
    p2v = np.full(len(points), -1, np.int64)
    for i in range(len(points)):
        if not ok[i]:
            continue
        key = tuple(idx[i][::-1])
        v = ids.get(key)
        if v is None:
            if len(ids) >= max_voxels:
                continue
            v = ids[key] = len(ids)
            voxels.append(np.zeros((max_points, c), np.float32))
            nums.append(0)
            coords.append((batch_index, *key))
        p2v[i] = v
        if nums[v] < max_points:
            voxels[v][nums[v]] = points[i]
            nums[v] += 1
    m = len(coords)
    return (np.array(voxels, np.float32).reshape(m, max_points, c), np.array(nums, np.int32),
            np.array(coords, np.int32).reshape(m, idx.shape[1] + 1), p2v)


def dynamic_reference(idx, ok, batch_index=0):
    """Sorted unique coords (b, slowest .. fastest), counts, inverse over kept points, keep."""
    rev = idx[ok][:, ::-1]
    coords, inverse, counts = np.unique(rev, axis=0, return_inverse=True, return_counts=True)
    coords = np.concatenate([np.full((len(coords), 1), batch_index), coords], 1).astype(np.int32)
    return coords.reshape(-1, idx.shape[1] + 1), counts.astype(np.int32), inverse.reshape(-1), ok


def on_boundaries(rng: np.random.Generator, n: int, lower, size, cells_per_axis) -> np.ndarray:
    """float32 [n, D] points exactly on float32 cell boundaries lower + k * size (and just beside)."""
    lower, size = np.asarray(lower, np.float32), np.asarray(size, np.float32)
    k = rng.integers(0, cells_per_axis + 1, (n, len(lower))).astype(np.float32)
    pts = lower + k * size
    nudge = rng.integers(-1, 2, pts.shape)
    return np.where(nudge == 0, pts, np.nextafter(pts, pts + nudge)).astype(np.float32)
