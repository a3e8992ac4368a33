"""The voxel grid: range, voxel size, cell of a point.

Cells are computed exactly as spconv's PointToVoxel: ``floor((p - range_min) / voxel_size)`` in
float32 (float64 arithmetic moves a few hundred points of a sweep across cell boundaries), a point
with any index outside [0, grid) is dropped, and grid = round((range_max - range_min) / voxel_size)
(so a range that is not a whole number of voxels loses its last partial cell, as in spconv).

Axis order: sizes and ranges are given fastest axis first, as the point columns are (x, y, z[, t]);
coordinates and spatial shapes are reversed, batch first: (b, z, y, x) or (b, t, z, y, x), as
spconv and pc3d.sparse.SparseTensor expect.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numba
import numpy as np
import torch
from pc3d_ops import voxelize as _k

from pc3d.errors import ConfigError
from pc3d.sparse.kernel_map import sync_threads
from pc3d.voxel.checks import INT32_MAX, check_range, check_sizes


def cell_counts(grid_size, ndim: int) -> np.ndarray:
    """int64 [ndim] cells per axis from ints (floats, even whole ones, are refused: they hide a mistake)."""
    try:
        cells = np.asarray(grid_size)
    except (ValueError, TypeError, OverflowError):
        cells = np.asarray(None)
    if cells.dtype.kind not in "iu" or cells.shape != (ndim,):
        raise ConfigError(f"grid_size must be {ndim} ints, got {grid_size!r}")
    if cells.dtype.kind == "u" and (cells > INT32_MAX).any():
        raise ConfigError(f"the grid must have 1 to 2**31 - 1 cells per axis, got {grid_size!r}")
    return cells.astype(np.int64)

MAX_CELLS = 1 << 53  # cell keys must fit the 53 bits that sort_by_cell packs beside point indices


def n_chunks() -> int:
    """Work split of the parallel kernels (numba threads follow torch's).

    Several chunks per thread, of equal point counts. Under the `workqueue` or `tbb` threading layers they
    are handed out one at a time (see `scheduling`); numba's `omp` layer, pc3d's default, splits a prange
    statically (each thread its contiguous share of the chunks, `pc3d_ops.schedule`), which suits these
    kernels: their work per point is about even.
    """
    return 8 * numba.get_num_threads()


def sort_chunks() -> int:
    """Work split of the radix sort: one chunk per thread. Each chunk scatters into its own set of
    digit buckets, so more chunks mean more concurrent write streams than the caches hold (16 chunks
    sort a 200k-point sweep 3-4x slower than 2)."""
    return numba.get_num_threads()


def scheduling():
    """Context of the voxelization kernels: parallel loop iterations are handed out one by one where the
    threading layer honours `numba.parallel_chunksize` (`workqueue`, `tbb`; the `omp` layer ignores it)."""
    return numba.parallel_chunksize(1)


class VoxelGrid:
    """A regular grid over D columns of the points (Cartesian x, y, z unless a subclass says).

    voxel_size: one number or D numbers; point_range: (min_0 .. min_D-1, max_0 .. max_D-1);
    axes: the point column of each grid axis, fastest first (default x, y, z = columns 0, 1, 2);
    grid_size: cells per axis (default round(range / voxel_size)).
    """

    def __init__(self, voxel_size: float | Sequence[float], point_range: Sequence[float],
                 axes: Sequence[int] = (0, 1, 2), grid_size: Sequence[int] | None = None):
        self.axes = np.asarray(axes, np.int64)
        ndim = len(self.axes)
        if ndim < 1 or (self.axes < 0).any() or len(set(self.axes.tolist())) != ndim:
            raise ConfigError(f"grid axes must be distinct column indices, got {tuple(axes)}")
        self.voxel_size = check_sizes(voxel_size, ndim, "voxel_size")
        self.lower, self.upper = check_range(point_range, ndim)
        if grid_size is None:
            # std::round of the float32 ratio, as spconv (half away from zero; numpy rounds to even)
            with np.errstate(over="ignore", invalid="ignore"):
                cells = np.floor((self.upper - self.lower) / self.voxel_size + np.float32(0.5))
            if not (np.isfinite(cells).all() and (cells <= INT32_MAX).all()):
                raise ConfigError(f"range / voxel_size gives {cells.tolist()} cells per axis, more than the "
                                  f"{INT32_MAX} (2**31 - 1) of int32 voxel coords, from voxel_size "
                                  f"{self.voxel_size.tolist()} and range {list(point_range)}")
            grid_size = cells.astype(np.int64)
        self.grid_size = cell_counts(grid_size, ndim)
        if (self.grid_size < 1).any() or (self.grid_size > INT32_MAX).any():
            raise ConfigError(f"the grid must have 1 to 2**31 - 1 cells per axis, got {self.grid_size.tolist()} "
                              f"from voxel_size {self.voxel_size.tolist()} and range {list(point_range)}")
        cells = math.prod(int(g) for g in self.grid_size)
        if cells > MAX_CELLS:
            raise ConfigError(f"grid {self.grid_size.tolist()} has {cells} cells, more than the 2**53 a cell key "
                              "can hold (keys are sorted together with point indices); use a coarser grid")

    @property
    def ndim(self) -> int:
        return len(self.axes)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """Cells per axis, slowest first: (z, y, x) or (t, z, y, x), the SparseTensor order."""
        return tuple(int(g) for g in self.grid_size[::-1])

    @property
    def min_columns(self) -> int:
        """Columns a point needs for this grid."""
        return max(3, int(self.axes.max()) + 1)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(voxel_size={self.voxel_size.tolist()}, lower={self.lower.tolist()}, "
                f"grid_size={self.grid_size.tolist()}, axes={self.axes.tolist()})")

    def last_inside(self) -> np.ndarray:
        """float32 [D]: per axis the largest float32 coordinate whose cell, floor((v - lower) / size) in float32 as
        the kernels compute it, is still inside the grid (the last cell's top, below the range's upper bound
        whenever rounding would carry it past)."""
        out = np.empty(self.ndim, np.float32)
        for a in range(self.ndim):
            lower, size, n = self.lower[a], self.voxel_size[a], int(self.grid_size[a])
            v = np.nextafter(np.float32(lower + np.float32(n) * size), np.float32(-np.inf))
            while np.floor((v - lower) / size) >= n:
                v = np.nextafter(v, np.float32(-np.inf))
            out[a] = v
        return out

    def positions(self, points: np.ndarray) -> np.ndarray:
        """The array whose `axes` columns the grid is laid on: the points themselves here."""
        return points

    def torch_positions(self, points: torch.Tensor) -> torch.Tensor:
        """[N, D] grid coordinates of the points in axis order (fastest first), in torch."""
        return points[:, torch.as_tensor(self.axes, device=points.device)]

    def cell_keys(self, points: np.ndarray) -> tuple[np.ndarray, int, int]:
        """int64 keys [N] of the cells of float32 points [N, C] (-1 outside, -2 NaN / inf), with
        the counts of points outside the grid and of non-finite points."""
        sync_threads()
        with scheduling():
            keys, n_outside, n_nonfinite = _k.cell_keys(points, self.positions(points), self.axes, self.lower,
                                                        self.voxel_size, self.grid_size, n_chunks())
        return keys, int(n_outside), int(n_nonfinite)

    def sort_cells(self, keys: np.ndarray) -> tuple[np.ndarray, int, np.ndarray]:
        """Points with a cell, stably sorted by key: (``key << ibits | compact index`` int64 [N'],
        ibits, input index of each compact index int64 [N'])."""
        max_key = int(np.prod(self.grid_size))
        if not _k.packed_fits(max_key, len(keys)):
            raise ConfigError(f"{self!r}: {max_key} cells and {len(keys)} points do not fit one int64 sort "
                              "key; use a coarser grid or fewer points per call")
        with scheduling():
            return _k.sort_by_cell(keys, max_key, sort_chunks())

    def voxel_centres(self, coords: torch.Tensor) -> torch.Tensor:
        """float32 [M, D] centres of cells given as coords [M, 1 + D], in axis order (x, y, z[, t])."""
        idx = coords[:, 1:].flip(1).to(torch.float32)
        size = torch.as_tensor(self.voxel_size, device=coords.device)
        lower = torch.as_tensor(self.lower, device=coords.device)
        return (idx + 0.5) * size + lower
