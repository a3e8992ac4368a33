"""Voxelization kernels: cell keys of points, unique cells with their point maps, hard-voxel fill.

A point's cell on a D-axis grid is ``floor((p - lower) / size)`` computed in float32, exactly as
spconv's PointToVoxel, and linearised into an int64 key with the first axis fastest (x, then y,
z[, t]): ``key = ((t * nz + z) * ny + y) * nx + x``. Keys preserve the (t, z, y, x) order.

Unique cells come from a stable parallel radix sort of the keys (sequential memory traffic: on
LiDAR sweeps it is several times faster than an exact hash table, whose probes miss the cache).
Stability keeps input order inside a cell, so the first points of a cell, the order of first
appearance and every output are independent of the thread count.
"""
from __future__ import annotations

import numba as nb
import numpy as np
from numba import prange

from . import numba_cache  # noqa: F401  (process-safe on-disk kernel cache)

_PARALLEL = {"parallel": True, "cache": True, "nogil": True, "boundscheck": False}
_SERIAL = {"cache": True, "nogil": True, "boundscheck": False}

OUTSIDE = -1  # key of a finite point outside the grid
NONFINITE = -2  # key of a point with a NaN or inf column



@nb.njit(**_PARALLEL)
def cell_keys(points, positions, axes, lower, size, grid, n_chunks):
    """Cell key of every point: (keys int64 [N], n_outside, n_nonfinite).

    points: float32 [N, C], checked for NaN / inf; positions: float32 [N, C'] the coordinates the
    grid is defined on (`points` itself for Cartesian grids); axes: int64 [D] columns of positions,
    fastest grid axis first; lower, size: float32 [D]; grid: int64 [D] cells per axis. A point with
    any non-finite column gets NONFINITE, a point whose index on any axis falls outside [0, grid)
    gets OUTSIDE.
    """
    n, c = points.shape
    d = axes.shape[0]
    keys = np.empty(n, np.int64)
    outside = np.zeros(n_chunks, np.int64)
    nonfinite = np.zeros(n_chunks, np.int64)
    for ch in prange(n_chunks):
        lo, hi = _chunk_bounds(n, n_chunks, ch)
        for i in range(lo, hi):
            finite = True
            for k in range(c):
                if not np.isfinite(points[i, k]):
                    finite = False
            key = np.int64(0)
            inside = True
            if finite:
                for a in range(d - 1, -1, -1):
                    # float32 throughout, as spconv: float64 would move points near cell boundaries
                    f = np.floor((positions[i, axes[a]] - lower[a]) / size[a])
                    if not (f >= 0 and f < grid[a]):
                        inside = False
                        break
                    key = key * grid[a] + np.int64(f)
            if not finite:
                keys[i] = NONFINITE
                nonfinite[ch] += 1
            elif not inside:
                keys[i] = OUTSIDE
                outside[ch] += 1
            else:
                keys[i] = key
    return keys, outside.sum(), nonfinite.sum()


@nb.njit(**_SERIAL)
def _chunk_bounds(n, n_chunks, c):
    size = (n + n_chunks - 1) // n_chunks
    return min(n, c * size), min(n, (c + 1) * size)


@nb.njit(**_SERIAL)
def _bits(count):
    """Bits that hold the values 0 .. count - 1."""
    b = 1
    while (np.int64(1) << b) < count:
        b += 1
    return b


@nb.njit(**_SERIAL)
def packed_fits(max_key, n):
    """Whether a key below max_key and an index below n fit together in one int64 (and the key in
    the 53 bits a float64 holds exactly)."""
    return _bits(max_key) <= 53 and _bits(max_key) + _bits(max(n, 1)) <= 63


@nb.njit(**_PARALLEL)
def sort_by_cell(keys, max_key, n_chunks):
    """Points that have a cell, stably sorted by key (a parallel LSD radix sort).

    keys: int64 [N] (negative = no cell), all < max_key; packed_fits(max_key, N) must hold.
    The points with a cell get a compact index p (their rank in input order). Returns the sorted
    ``key << ibits | p`` int64 [N'] (one word per element: half the memory traffic of key + index
    arrays), ibits and valid_idx int64 [N'] (input index of compact index p).
    """
    n = keys.shape[0]
    ibits = _bits(max(n, 1))
    kbits = _bits(max_key)
    passes = (kbits + 10) // 11
    # equal-width digits: fewer buckets than 11-bit ones for the same number of passes
    width = (kbits + passes - 1) // passes
    radix = np.int64(1) << width
    dmask = radix - 1
    # first pass reads the keys themselves: compaction, packing and the first digit in one go
    hist = np.zeros((n_chunks, radix), np.int64)
    base = np.zeros(n_chunks + 1, np.int64)
    for c in prange(n_chunks):
        lo, hi = _chunk_bounds(n, n_chunks, c)
        cnt = 0
        for i in range(lo, hi):
            k = keys[i]
            if k >= 0:
                cnt += 1
                hist[c, k & dmask] += 1
        base[c + 1] = cnt
    for c in range(n_chunks):
        base[c + 1] += base[c]
    n_valid = base[n_chunks]
    _digit_offsets(hist)
    cur = np.empty(n_valid, np.int64)
    nxt = np.empty(n_valid, np.int64)
    valid_idx = np.empty(n_valid, np.int64)
    for c in prange(n_chunks):
        lo, hi = _chunk_bounds(n, n_chunks, c)
        p = base[c]
        for i in range(lo, hi):
            k = keys[i]
            if k >= 0:
                valid_idx[p] = i
                d = k & dmask
                cur[hist[c, d]] = (k << ibits) | p
                hist[c, d] += 1
                p += 1
    for step in range(1, passes):
        shift = ibits + step * width
        for c in prange(n_chunks):
            lo, hi = _chunk_bounds(n_valid, n_chunks, c)
            hist[c, :] = 0
            for j in range(lo, hi):
                hist[c, (cur[j] >> shift) & dmask] += 1
        _digit_offsets(hist)
        for c in prange(n_chunks):
            lo, hi = _chunk_bounds(n_valid, n_chunks, c)
            for j in range(lo, hi):
                d = (cur[j] >> shift) & dmask
                nxt[hist[c, d]] = cur[j]
                hist[c, d] += 1
        cur, nxt = nxt, cur
    return cur, ibits, valid_idx


@nb.njit(**_SERIAL)
def _digit_offsets(hist):
    """Per-chunk counts -> scatter offsets, digit-major then chunk: chunks are in order, so the sort
    is stable."""
    n_chunks, radix = hist.shape
    offset = np.int64(0)
    for d in range(radix):
        for c in range(n_chunks):
            cnt = hist[c, d]
            hist[c, d] = offset
            offset += cnt


@nb.njit(**_SERIAL)
def _decode(key, grid, inv_grid, coords, row):
    """coords[row, 1:] = the cell of key, slowest axis first.

    A float64 reciprocal and an exact integer correction instead of int64 division, which costs
    as much as the rest of the kernel: keys stay below 2**53 (packed_fits), so q is off by <= 1.
    """
    d = grid.shape[0]
    for a in range(d):
        g = grid[a]
        q = np.int64(np.float64(key) * inv_grid[a])
        r = key - q * g
        while r < 0:
            q -= 1
            r += g
        while r >= g:
            q += 1
            r -= g
        coords[row, d - a] = r
        key = q


@nb.njit(**_PARALLEL)
def hard_voxels(points, keys, packed, ibits, valid_idx, grid, batch_index, max_voxels, max_points, n_chunks):
    """Hard voxels: the first max_points points of each of the first max_voxels cells.

    Cells are numbered in order of first appearance of a point, as spconv's PointToVoxel. Inputs
    are cell_keys and sort_by_cell outputs. Returns voxels float32 [M, P, C] (zero padded),
    num_points int32 [M], coords int32 [M, 1 + D], point_to_voxel int64 [N] (-1: no kept voxel)
    and the number of occupied cells.
    """
    n, c = points.shape
    nv = packed.shape[0]
    imask = (np.int64(1) << ibits) - 1
    # int32: these are written in sorted (random) order, half the bytes is half the cache misses
    first_of = np.empty(nv, np.int32)  # compact index of the first point of each point's cell
    slot = np.empty(nv, np.int32)  # how many earlier points share the cell
    length = np.empty(nv, np.int32)  # points of the cell, stored at its first point
    for ch in prange(n_chunks):
        lo, hi = _chunk_bounds(nv, n_chunks, ch)
        start = lo
        while start > 0 and (packed[start - 1] >> ibits) == (packed[lo] >> ibits):
            start -= 1
        for j in range(lo, hi):
            key = packed[j] >> ibits
            if j > lo and key != (packed[j - 1] >> ibits):
                start = j
            pf = packed[start] & imask  # stable sort: the run's first entry is its earliest point
            p = packed[j] & imask
            first_of[p] = pf
            slot[p] = j - start
            if j + 1 == nv or (packed[j + 1] >> ibits) != key:
                length[pf] = j + 1 - start
    # voxel numbers in input order: a chunked count of first points, then their ranks
    base = np.zeros(n_chunks + 1, np.int64)
    for ch in prange(n_chunks):
        lo, hi = _chunk_bounds(nv, n_chunks, ch)
        cnt = 0
        for p in range(lo, hi):
            if first_of[p] == p:
                cnt += 1
        base[ch + 1] = cnt
    for ch in range(n_chunks):
        base[ch + 1] += base[ch]
    n_cells = base[n_chunks]
    m = min(n_cells, max_voxels)
    d = grid.shape[0]
    inv_grid = 1.0 / grid.astype(np.float64)
    voxels = np.empty((m, max_points, c), np.float32)
    num_points = np.empty(m, np.int32)
    coords = np.empty((m, d + 1), np.int32)
    vid = np.empty(nv, np.int32)  # voxel number, stored at first points
    for ch in prange(n_chunks):
        lo, hi = _chunk_bounds(nv, n_chunks, ch)
        v = base[ch]
        for p in range(lo, hi):
            if first_of[p] != p:
                continue
            vid[p] = v
            if v < m:
                cnt = min(length[p], max_points)
                num_points[v] = cnt
                coords[v, 0] = batch_index
                _decode(keys[valid_idx[p]], grid, inv_grid, coords, v)
                for s in range(cnt, max_points):
                    for k in range(c):
                        voxels[v, s, k] = 0.0
            v += 1
    point_to_voxel = np.full(n, -1, np.int64)
    # input order: voxels are numbered by first appearance, so these writes are nearly sequential
    for ch in prange(n_chunks):
        lo, hi = _chunk_bounds(nv, n_chunks, ch)
        for p in range(lo, hi):
            v = vid[first_of[p]]
            if v >= m:
                continue
            i = valid_idx[p]
            point_to_voxel[i] = v
            s = slot[p]
            if s < max_points:
                for k in range(c):
                    voxels[v, s, k] = points[i, k]
    return voxels, num_points, coords, point_to_voxel, n_cells


@nb.njit(**_PARALLEL)
def dynamic_voxels(packed, ibits, grid, batch_index, n_chunks):
    """Cells sorted by key: coords int32 [M, 1 + D], counts int32 [M] and the inverse map int64
    [N'] (cell of each point that has one, by compact index, i.e. in input order)."""
    nv = packed.shape[0]
    imask = (np.int64(1) << ibits) - 1
    base = np.zeros(n_chunks + 1, np.int64)
    for ch in prange(n_chunks):
        lo, hi = _chunk_bounds(nv, n_chunks, ch)
        cnt = 0
        for j in range(lo, hi):
            if j == 0 or (packed[j] >> ibits) != (packed[j - 1] >> ibits):
                cnt += 1
        base[ch + 1] = cnt
    for ch in range(n_chunks):
        base[ch + 1] += base[ch]
    m = base[n_chunks]
    starts = np.empty(m + 1, np.int64)
    starts[m] = nv
    inverse = np.empty(nv, np.int64)
    for ch in prange(n_chunks):
        lo, hi = _chunk_bounds(nv, n_chunks, ch)
        g = base[ch] - 1  # a run open at the chunk's start belongs to the cell before base[ch]
        for j in range(lo, hi):
            if j == 0 or (packed[j] >> ibits) != (packed[j - 1] >> ibits):
                g += 1
                starts[g] = j
            inverse[packed[j] & imask] = g
    d = grid.shape[0]
    inv_grid = 1.0 / grid.astype(np.float64)
    coords = np.empty((m, d + 1), np.int32)
    counts = np.empty(m, np.int32)
    for ch in prange(n_chunks):
        lo, hi = _chunk_bounds(m, n_chunks, ch)
        for g in range(lo, hi):
            counts[g] = starts[g + 1] - starts[g]
            coords[g, 0] = batch_index
            _decode(packed[starts[g]] >> ibits, grid, inv_grid, coords, g)
    return coords, counts, inverse


@nb.njit(**_PARALLEL)
def cylindrical_positions(points, phi_top):
    """float32 [N, 3] (rho, phi, z) of points [N, 3 + C]; phi in [-pi, phi_top], phi_top < pi the
    largest azimuth of the grid's last cell (larger ones are float32 rounding of that cell)."""
    n = points.shape[0]
    out = np.empty((n, 3), np.float32)
    pi = np.float32(np.pi)
    for i in prange(n):
        x = points[i, 0]
        y = points[i, 1]
        phi = np.arctan2(y, x)
        # atan2 returns +pi on the negative x axis; that cell is the one at -pi
        if phi >= pi:
            phi = -pi
        elif phi > phi_top:
            phi = phi_top
        out[i, 0] = np.sqrt(x * x + y * y)
        out[i, 1] = phi
        out[i, 2] = points[i, 2]
    return out
