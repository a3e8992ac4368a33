"""Pillars (PointPillars): voxels as tall as the point range, on a (1, y, x) grid."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pc3d.errors import ConfigError
from pc3d.voxel.checks import INT32_MAX, check_range, check_sizes
from pc3d.voxel.dynamic import DynamicGridVoxelizer
from pc3d.voxel.grid import VoxelGrid
from pc3d.voxel.hard import HardGridVoxelizer


def pillar_grid(pillar_size: float | Sequence[float], point_range: Sequence[float]) -> VoxelGrid:
    """A Cartesian grid whose z size is the range height: coords (b, 0, y, x), spatial_shape (1, Y, X).

    pillar_size: one or 2 numbers (x, y); point_range: (x_min, y_min, z_min, x_max, y_max, z_max).
    """
    size_xy = check_sizes(pillar_size, 2, "pillar_size")
    lower, upper = check_range(point_range, 3)
    with np.errstate(over="ignore", invalid="ignore"):
        cells_xy = np.floor((upper[:2] - lower[:2]) / size_xy + np.float32(0.5))
    if not (np.isfinite(cells_xy).all() and (cells_xy <= INT32_MAX).all()):
        raise ConfigError(f"range / pillar_size gives {cells_xy.tolist()} pillars per axis, more than the "
                          f"{INT32_MAX} (2**31 - 1) of int32 coords, from pillar_size {size_xy.tolist()} and "
                          f"range {list(point_range)}")
    cells_xy = cells_xy.astype(np.int64)
    # one cell in z, whatever float32 rounding of (z_max - z_min) / height would give
    return VoxelGrid((*size_xy, upper[2] - lower[2]), point_range, grid_size=(*cells_xy, 1))


class PillarVoxelizer(HardGridVoxelizer):
    """Hard pillars: at most `max_points_per_pillar` points in each of at most `max_pillars`
    pillars (the HardGridVoxelizer rules), as OpenPCDet / spconv PointToVoxel with vz = range height."""

    def __init__(self, pillar_size: float | Sequence[float], point_range: Sequence[float],
                 max_points_per_pillar: int = 32, max_pillars: int = 16000, shuffle: bool = False, *,
                 nan_policy: str = "warn"):
        super().__init__(pillar_grid(pillar_size, point_range), max_points_per_pillar, max_pillars, shuffle,
                         nan_policy=nan_policy)


class DynamicPillarVoxelizer(DynamicGridVoxelizer):
    """Dynamic pillars (dynamic PointPillars / CenterPoint-pillar): every in-range point keeps its pillar."""

    def __init__(self, pillar_size: float | Sequence[float], point_range: Sequence[float], *,
                 nan_policy: str = "warn"):
        super().__init__(pillar_grid(pillar_size, point_range), nan_policy=nan_policy)
