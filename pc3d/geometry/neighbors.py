"""Exact point neighbourhoods: k nearest neighbours and radius neighbours, memory O(Q k + R).

The reference points are sorted into a uniform 3D grid (cells sorted by key); each query searches
growing shells of cells and stops once no unvisited cell can hold a nearer point, so the answer
equals brute force (ties: lower reference index first) without a Q x R distance matrix.

Non-finite coordinates (NaN, inf), as elsewhere in pc3d.geometry, are points nowhere: a reference row with one is
never a neighbour, and a query row with one has none (inf / -1).
"""
from __future__ import annotations

from typing import Any

import numpy as np
from pc3d_ops import neighbors as _k

from pc3d.errors import ConfigError

from ._arrays import check_points, check_positive, like, sync_threads

# cells never finer than the extent / 2^20, so linear cell keys fit in int64
_MAX_CELLS_PER_AXIS = 2**20


def _positive_int(value: int, name: str) -> int:
    if int(value) != value or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _xyz64(points: Any, name: str) -> np.ndarray:
    return np.ascontiguousarray(check_points(points, name)[:, :3], np.float64)


def _bounds(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(min, max) float64 [3] of points [N, 3]: column by column (numpy's axis-0 min of a [N, 3] array runs ~17x
    slower than three 1-D ones)."""
    return (np.array([points[:, a].min() for a in range(3)]), np.array([points[:, a].max() for a in range(3)]))


def _floor_side(ref: np.ndarray) -> float:
    extent = float(np.subtract(*_bounds(ref)[::-1]).max()) if len(ref) else 0.0
    return max(extent / _MAX_CELLS_PER_AXIS, 1e-9)


def _knn_grid(ref: np.ndarray, k: int):
    """A grid whose occupied cells hold about k / 2 points each: the 27 cells around a query then
    usually hold the answer. Two refinements adapt the first (uniform-density) guess to clouds
    that lie on surfaces, as LiDAR sweeps do (a sweep's cells end 2-5.5x finer than the guess). They stop at 1/8
    of the guess, and a finer grid is kept only if its occupied cells grew at least as 1 / sqrt(the side's
    factor) (a surface's grow as 1 / factor^2, a line's as 1 / factor): repeated rows (a cloud padded by
    resampling) do not spread over finer cells, and tight clusters far apart do not fill the space between them;
    a grid refined for them without bound left a query between them millions of empty cells to search."""
    lo, hi = _bounds(ref)
    extent = np.maximum(hi - lo, 1e-3)
    target = max(k / 2, 2.0)
    guess = max(float(np.cbrt(np.prod(extent) * target / len(ref))), _floor_side(ref))
    side, grid = guess, _k.build_grid(ref, guess)
    for _ in range(2):
        occupancy = len(ref) / len(grid[2])
        if target / 2 <= occupancy <= target * 2:
            break
        # occupancy of a surface-like cloud grows with the cell's area
        factor = float(np.sqrt(target / occupancy))
        finer_side = max(side * factor, guess / 8, _floor_side(ref))
        finer = _k.build_grid(ref, finer_side)
        if finer_side < side and len(finer[2]) < len(grid[2]) * (side / finer_side) ** 0.5:
            break  # the points did not spread: keep the coarser grid
        side, grid = finer_side, finer
    return side, grid


def _finite_rows(points: np.ndarray) -> np.ndarray | None:
    """Rows of points [N, 3] whose coordinates are all finite, or None when every row is."""
    finite = np.isfinite(points).all(axis=1)
    return None if finite.all() else np.flatnonzero(finite)


def knn(query: Any, ref: Any, k: int) -> tuple[Any, Any]:
    """Exact k nearest neighbours of each query point among the reference points.

    query: [Q, 3+]; ref: [R, 3+] (x, y, z first). Returns (dist2 float32 [Q, k] squared distances,
    ascending; idx int64 [Q, k] rows of ref), padded with inf / -1 when R < k. Numpy or torch
    (like query).
    """
    k = _positive_int(k, "k")
    q = _xyz64(query, "query")
    r = _xyz64(ref, "ref")
    q_rows, r_rows = _finite_rows(q), _finite_rows(r)
    if q_rows is not None or r_rows is not None:  # the finite rows alone, indices mapped back (module doc)
        q_rows = np.arange(len(q)) if q_rows is None else q_rows
        r_rows = np.arange(len(r)) if r_rows is None else r_rows
        dist, idx = np.full((len(q), k), np.inf, np.float32), np.full((len(q), k), -1, np.int64)
        d, i = knn(q[q_rows], r[r_rows], k)
        dist[q_rows], idx[q_rows] = d, np.where(i >= 0, r_rows[np.maximum(i, 0)], -1)
        return like(dist, query), like(idx, query)
    if len(r) == 0 or len(q) == 0:
        return like(np.full((len(q), k), np.inf, np.float32), query), like(np.full((len(q), k), -1, np.int64), query)
    side, grid = _knn_grid(r, k)
    sync_threads()
    far = _far_queries(q, r, side)
    if far is None:
        dist, idx = _k.search(q, *grid[:2], side, *grid[2:], k, np.inf)
    else:  # queries far outside the references search a coarser grid: the same answer, far fewer empty cells
        dist, idx = np.empty((len(q), k)), np.empty((len(q), k), np.int64)
        near = np.setdiff1d(np.arange(len(q)), far[0], assume_unique=True)
        dist[near], idx[near] = _k.search(q[near], *grid[:2], side, *grid[2:], k, np.inf)
        coarse = max(side, float(np.median(far[1])) / _FAR_CELLS)
        grid = _k.build_grid(r, coarse)
        dist[far[0]], idx[far[0]] = _k.search(q[far[0]], *grid[:2], coarse, *grid[2:], k, np.inf)
    with np.errstate(over="ignore"):  # a squared distance beyond float32 is inf there
        dist = dist.astype(np.float32)
    return like(dist, query), like(idx, query)


# a query this many cells or more outside the references' box is "far"; a coarse grid is built for the far queries
# when there are at least _FAR_MIN of them, with cells of their median gap / _FAR_CELLS
_FAR_CELLS, _FAR_MIN = 16, 256


def _far_queries(q: np.ndarray, r: np.ndarray, side: float) -> tuple[np.ndarray, np.ndarray] | None:
    """(rows, gaps in metres) of the queries at least _FAR_CELLS cells of `side` outside the box of r, or None
    when fewer than _FAR_MIN are (a segmentor's points beyond its voxel grid looking for the nearest voxel: the
    fine grid's shells would step through thousands of empty cells per query)."""
    if len(q) < _FAR_MIN:
        return None
    (lo, hi), (q_lo, q_hi), margin = _bounds(r), _bounds(q), _FAR_CELLS * side
    if ((q_lo > lo - margin) & (q_hi < hi + margin)).all():
        return None  # no query is that far out (the common case: a cloud's own points)
    gap = np.linalg.norm(np.maximum(np.maximum(lo - q, q - hi), 0.0), axis=1)
    rows = np.flatnonzero(gap >= _FAR_CELLS * side)
    return (rows, gap[rows]) if len(rows) >= _FAR_MIN else None


def radius_neighbors(query: Any, ref: Any, radius: float, max_neighbors: int) -> Any:
    """Indices int64 [Q, max_neighbors] of the nearest reference points within radius (inclusive).

    Nearest first (ties: lower index), padded with -1 where fewer are in range. query: [Q, 3+];
    ref: [R, 3+]. Numpy or torch (like query).
    """
    k = _positive_int(max_neighbors, "max_neighbors")
    radius = check_positive(radius, "radius")
    q = _xyz64(query, "query")
    r = _xyz64(ref, "ref")
    q_rows, r_rows = _finite_rows(q), _finite_rows(r)
    if q_rows is not None or r_rows is not None:  # the finite rows alone, indices mapped back (module doc)
        q_rows = np.arange(len(q)) if q_rows is None else q_rows
        r_rows = np.arange(len(r)) if r_rows is None else r_rows
        idx = np.full((len(q), k), -1, np.int64)
        i = radius_neighbors(q[q_rows], r[r_rows], radius, k)
        idx[q_rows] = np.where(i >= 0, r_rows[np.maximum(i, 0)], -1)
        return like(idx, query)
    if len(r) == 0 or len(q) == 0:
        return like(np.full((len(q), k), -1, np.int64), query)
    side = max(radius, _floor_side(r))
    origin, dims, keys, starts, sorted_xyz, sorted_idx = _k.build_grid(r, side)
    sync_threads()
    _, idx = _k.search(q, origin, dims, side, keys, starts, sorted_xyz, sorted_idx, k, radius)
    return like(idx, query)


def radius_components(points: Any, radius: float, max_neighbors: int = 16) -> np.ndarray:
    """Labels int64 [N] (0, 1, ... in order of each cluster's first point) of the clusters of points [N, 3+]
    linked by distances up to `radius`: each point is linked to its `max_neighbors` nearest within radius (a
    cluster as dense as that anywhere stays one; two clusters touch only through a gap <= radius)."""
    xyz = _xyz64(points, "points")
    if len(xyz) == 0:
        return np.zeros(0, np.int64)
    return _k.components(np.asarray(radius_neighbors(xyz, xyz, radius, max_neighbors)))
