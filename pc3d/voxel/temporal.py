"""Spatio-temporal (4D) voxels of multi-sweep clouds: a (x, y, z, t) grid for D = 4 sparse tensors.

Points carry their time (e.g. seconds relative to the key frame) in column `time_column`; the time
axis has cells of `dt` over time_range. Coords are (b, t, z, y, x) int32 [M, 5] with spatial_shape
(T, Z, Y, X): time is the slowest axis, so each time slice is a contiguous block of the sorted
coords and a kernel map treats it as any other axis.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pc3d.errors import ConfigError
from pc3d.voxel.checks import check_range, check_sizes
from pc3d.voxel.dynamic import DynamicGridVoxelizer
from pc3d.voxel.grid import VoxelGrid
from pc3d.voxel.hard import HardGridVoxelizer


def temporal_grid(voxel_size: float | Sequence[float], point_range: Sequence[float], dt: float,
                  time_range: Sequence[float], time_column: int = 3) -> VoxelGrid:
    """The (x, y, z, t) grid: voxel_size (x, y, z), point_range (x_min, y_min, z_min, x_max, y_max,
    z_max), cells of dt over time_range (t_min, t_max), time read from column `time_column`."""
    if isinstance(time_column, bool) or not isinstance(time_column, int | np.integer) or time_column < 3:
        raise ConfigError(f"time_column must be an int >= 3 (after x, y, z), got {time_column!r}")
    size = check_sizes(voxel_size, 3, "voxel_size")
    step = check_sizes(dt, 1, "dt")
    lower, upper = check_range(point_range, 3)
    (t_min,), (t_max,) = check_range(time_range, 1, "time_range")
    return VoxelGrid((*size, *step), (*lower, t_min, *upper, t_max), axes=(0, 1, 2, int(time_column)))


class TemporalVoxelizer(DynamicGridVoxelizer):
    """Dynamic 4D voxels: coords (b, t, z, y, x) sorted, inverse map per point."""

    def __init__(self, voxel_size: float | Sequence[float], point_range: Sequence[float], dt: float,
                 time_range: Sequence[float], time_column: int = 3, *, nan_policy: str = "warn"):
        super().__init__(temporal_grid(voxel_size, point_range, dt, time_range, time_column), nan_policy=nan_policy)


class HardTemporalVoxelizer(HardGridVoxelizer):
    """Hard 4D voxels: the HardGridVoxelizer rules on a (x, y, z, t) grid; coords (b, t, z, y, x)."""

    def __init__(self, voxel_size: float | Sequence[float], point_range: Sequence[float], dt: float,
                 time_range: Sequence[float], max_points_per_voxel: int, max_voxels: int, time_column: int = 3,
                 shuffle: bool = False, *, nan_policy: str = "warn"):
        super().__init__(temporal_grid(voxel_size, point_range, dt, time_range, time_column), max_points_per_voxel,
                         max_voxels, shuffle, nan_policy=nan_policy)
