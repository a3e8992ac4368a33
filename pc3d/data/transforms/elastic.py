"""Elastic distortion of indoor scenes (MinkowskiEngine's and Pointcept's ElasticDistortion).

For each (granularity g, magnitude m) in turn: a grid of Gaussian noise vectors with cells g metres apart
covers the scene (one cell beyond it on every side), is smoothed by a box filter three cells wide along x,
then y, then z, twice (zeros outside the grid), and each point moves by m x the noise interpolated
trilinearly at it. Pointcept's ScanNet recipes apply (0.2, 0.4) then (0.8, 1.6) to 95 % of the scenes.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pc3d.errors import ConfigError, DataFormatError

from ..batch import clouds_of, vector_keys


def smooth(noise: np.ndarray, passes: int = 2) -> np.ndarray:
    """noise [X, Y, Z, 3] averaged over 3 neighbours along x, y and z in turn, `passes` times; zeros outside."""
    out = noise.astype(np.float32, copy=True)
    for _ in range(passes):
        for axis in range(3):
            padded = np.pad(out, [(1, 1) if a == axis else (0, 0) for a in range(4)])
            n = out.shape[axis]
            out = (padded.take(range(0, n), axis) + padded.take(range(1, n + 1), axis)
                   + padded.take(range(2, n + 2), axis)) / np.float32(3)
    return out


def trilinear(grid: np.ndarray, origin: np.ndarray, spacing: float, xyz: np.ndarray) -> np.ndarray:
    """[N, C] values of grid [X, Y, Z, C] (node i at origin + i x spacing) interpolated at xyz [N, 3]; 0 outside."""
    t = (xyz.astype(np.float64) - origin) / spacing
    i0 = np.floor(t).astype(np.int64)
    f = t - i0
    size = np.array(grid.shape[:3])
    out = np.zeros((len(xyz), grid.shape[3]), np.float64)
    for corner in range(8):
        step = np.array([(corner >> 2) & 1, (corner >> 1) & 1, corner & 1])
        idx = i0 + step
        weight = np.prod(np.where(step == 1, f, 1.0 - f), axis=1)
        inside = ((idx >= 0) & (idx < size)).all(1)
        values = grid[tuple(np.clip(idx, 0, size - 1).T)]
        out += np.where(inside, weight, 0.0)[:, None] * values
    return out


class ElasticDistortion:
    """Distort every cloud's x, y, z by smoothed noise fields (module docstring) with probability `prob`.

    params: (granularity, magnitude) pairs in metres. One field per pair, drawn over the extent of all the
    sample's clouds, moves them all. For samples without boxes or flow (segmentation): a distorted box no longer
    bounds its object, so a sample with gt_boxes, other_boxes or flow is a DataFormatError."""

    def __init__(self, params: Sequence[Sequence[float]] = ((0.2, 0.4), (0.8, 1.6)), prob: float = 0.95):
        self.params = [(float(g), float(m)) for g, m in params]
        if not all(g > 0 and m >= 0 for g, m in self.params) or not 0 <= prob <= 1:
            raise ConfigError(f"ElasticDistortion: granularity > 0, magnitude >= 0 and prob in [0, 1], got "
                              f"{params!r}, {prob!r}")
        self.prob = float(prob)

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        clouds = clouds_of(sample)
        if "gt_boxes" in sample or "other_boxes" in sample or any(k in sample for c in clouds for k in vector_keys(c)):
            raise DataFormatError(sample.get("frame_id"), "ElasticDistortion would leave boxes / flow behind the "
                                                          "distorted points: use it on segmentation samples")
        if rng.random() >= self.prob or not sum(len(sample[c]) for c in clouds):
            return sample
        xyz = np.concatenate([sample[c][:, :3] for c in clouds]).astype(np.float64)
        for granularity, magnitude in self.params:
            lo = xyz.min(0)
            cells = ((xyz.max(0) - lo) // granularity).astype(np.int64) + 3
            field = smooth(rng.standard_normal((*cells, 3), dtype=np.float32))
            xyz = xyz + magnitude * trilinear(field, lo - granularity, granularity, xyz)
        start = 0
        for cloud in clouds:
            pts = sample[cloud].copy()
            pts[:, :3] = xyz[start:start + len(pts)]
            sample[cloud], start = pts, start + len(pts)
        return sample
