"""Point and box kernels: points in rotated boxes (BEV bucketed) and range-image projection.

Points-in-boxes never forms an N x M table: boxes are bucketed (counting sort) by the cells of a
coarse BEV grid their axis-aligned footprints cover, and each point tests only its own cell's
boxes. The grid is at most about 1024 x 1024 cells whatever N and M are.
"""
from __future__ import annotations

import numba as nb
import numpy as np
from numba import prange

from . import numba_cache  # noqa: F401  (process-safe on-disk kernel cache)

_PARALLEL = {"parallel": True, "cache": True, "nogil": True, "boundscheck": False}
_SERIAL = {"cache": True, "nogil": True, "boundscheck": False}

# the number of per-chunk count rows: fixed, so the work split does not depend on the thread count
_COUNT_CHUNKS = 64


@nb.njit(**_SERIAL)
def box_buckets(boxes, cell):
    """Bucket boxes [M, 7] float64 by the BEV cells of side `cell` their footprints touch.

    The grid spans the boxes' footprints: nx x ny cells from (origin_x, origin_y); the caller
    picks `cell` so that nx * ny stays small. Returns (origin_x, origin_y, nx, ny, starts int64
    [nx * ny + 1], box_ids int32 [E]): the boxes of cell ix * ny + iy are
    box_ids[starts[c]:starts[c + 1]], in ascending order.
    """
    m = boxes.shape[0]
    ex = np.empty(m)
    ey = np.empty(m)
    for b in range(m):
        c, s = np.abs(np.cos(boxes[b, 6])), np.abs(np.sin(boxes[b, 6]))
        # a hair of slack so a point on a face cannot fall into an unlisted neighbouring cell
        ex[b] = 0.5 * (c * boxes[b, 3] + s * boxes[b, 4]) + 1e-6
        ey[b] = 0.5 * (s * boxes[b, 3] + c * boxes[b, 4]) + 1e-6
    ox = np.min(boxes[:, 0] - ex)
    oy = np.min(boxes[:, 1] - ey)
    nx = np.int64(np.floor((np.max(boxes[:, 0] + ex) - ox) / cell)) + 1
    ny = np.int64(np.floor((np.max(boxes[:, 1] + ey) - oy) / cell)) + 1
    ix0 = np.empty(m, np.int64)
    ix1 = np.empty(m, np.int64)
    iy0 = np.empty(m, np.int64)
    iy1 = np.empty(m, np.int64)
    starts = np.zeros(nx * ny + 1, np.int64)
    for b in range(m):
        ix0[b] = max(np.int64(np.floor((boxes[b, 0] - ex[b] - ox) / cell)), 0)
        ix1[b] = min(np.int64(np.floor((boxes[b, 0] + ex[b] - ox) / cell)), nx - 1)
        iy0[b] = max(np.int64(np.floor((boxes[b, 1] - ey[b] - oy) / cell)), 0)
        iy1[b] = min(np.int64(np.floor((boxes[b, 1] + ey[b] - oy) / cell)), ny - 1)
        for ix in range(ix0[b], ix1[b] + 1):
            for iy in range(iy0[b], iy1[b] + 1):
                starts[ix * ny + iy + 1] += 1
    for c in range(nx * ny):
        starts[c + 1] += starts[c]
    fill = starts[:-1].copy()
    ids = np.empty(starts[nx * ny], np.int32)
    for b in range(m):  # boxes in index order, so each cell's list ascends
        for ix in range(ix0[b], ix1[b] + 1):
            for iy in range(iy0[b], iy1[b] + 1):
                c = ix * ny + iy
                ids[fill[c]] = b
                fill[c] += 1
    return ox, oy, nx, ny, starts, ids


@nb.njit(**_SERIAL)
def _box_frames(boxes):
    """Per box: cx, cy, cz, cos, sin, half dx, half dy, half dz (float64 [M, 8])."""
    m = boxes.shape[0]
    f = np.empty((m, 8))
    for b in range(m):
        f[b, 0] = boxes[b, 0]
        f[b, 1] = boxes[b, 1]
        f[b, 2] = boxes[b, 2]
        f[b, 3] = np.cos(boxes[b, 6])
        f[b, 4] = np.sin(boxes[b, 6])
        f[b, 5] = 0.5 * boxes[b, 3]
        f[b, 6] = 0.5 * boxes[b, 4]
        f[b, 7] = 0.5 * boxes[b, 5]
    return f


@nb.njit(**_SERIAL)
def _inside(f, b, x, y, z):
    tx = x - f[b, 0]
    ty = y - f[b, 1]
    lx = tx * f[b, 3] + ty * f[b, 4]
    ly = -tx * f[b, 4] + ty * f[b, 3]
    return np.abs(lx) <= f[b, 5] and np.abs(ly) <= f[b, 6] and np.abs(z - f[b, 2]) <= f[b, 7]


@nb.njit(**_SERIAL)
def _cell_of(x, y, ox, oy, nx, ny, cell):
    """The point's BEV cell, or -1 outside the grid."""
    ix = np.floor((x - ox) / cell)
    iy = np.floor((y - oy) / cell)
    if not (ix >= 0 and ix < nx and iy >= 0 and iy < ny):  # also false for NaN
        return -1
    return np.int64(ix) * ny + np.int64(iy)


@nb.njit(**_PARALLEL)
def points_in_boxes_first(points, boxes, cell):
    """int32 [N]: the lowest index of the boxes [M, 7] containing each point [N, 3+], or -1.

    Faces count as inside. boxes float64; cell: the BEV bucket side.
    """
    n = points.shape[0]
    out = np.full(n, -1, np.int32)
    if boxes.shape[0] == 0:
        return out
    ox, oy, nx, ny, starts, ids = box_buckets(boxes, cell)
    f = _box_frames(boxes)
    for i in prange(n):
        x, y, z = np.float64(points[i, 0]), np.float64(points[i, 1]), np.float64(points[i, 2])
        c = _cell_of(x, y, ox, oy, nx, ny, cell)
        if c < 0:
            continue
        for e in range(starts[c], starts[c + 1]):
            if _inside(f, ids[e], x, y, z):
                out[i] = ids[e]
                break
    return out


@nb.njit(**_PARALLEL)
def points_in_boxes_count(points, boxes, cell):
    """int32 [M]: how many points [N, 3+] each box [M, 7] contains (a point counts in every box)."""
    n, m = points.shape[0], boxes.shape[0]
    if m == 0 or n == 0:
        return np.zeros(m, np.int32)
    ox, oy, nx, ny, starts, ids = box_buckets(boxes, cell)
    f = _box_frames(boxes)
    chunks = min(_COUNT_CHUNKS, n)
    partial = np.zeros((chunks, m), np.int32)
    for t in prange(chunks):
        for i in range(t * n // chunks, (t + 1) * n // chunks):
            x, y, z = np.float64(points[i, 0]), np.float64(points[i, 1]), np.float64(points[i, 2])
            c = _cell_of(x, y, ox, oy, nx, ny, cell)
            if c < 0:
                continue
            for e in range(starts[c], starts[c + 1]):
                if _inside(f, ids[e], x, y, z):
                    partial[t, ids[e]] += 1
    return partial.sum(axis=0).astype(np.int32)


@nb.njit(**_PARALLEL)
def project_to_range_image(points, rotation_t, translation, inclinations, width, az_correction):
    """Pixels of vehicle-frame points [N, 3] in a Waymo range image; nearest point wins a pixel.

    rotation_t: [3, 3] transpose of the extrinsic rotation (vehicle -> sensor); inclinations: [H]
    float64, row 0 the highest beam (descending). Returns (image float32 [H, W] of ranges, 0 =
    empty; row int64 [N]; col int64 [N]; valid bool [N]) with row = col = -1 where invalid.
    """
    n = points.shape[0]
    h = inclinations.shape[0]
    row = np.full(n, -1, np.int64)
    col = np.full(n, -1, np.int64)
    rng = np.zeros(n, np.float32)
    # row boundaries halfway between beams, half a spacing beyond the outer beams
    top = inclinations[0] + 0.5 * (inclinations[0] - inclinations[1]) if h > 1 else inclinations[0] + 1e-3
    bottom = inclinations[h - 1] - 0.5 * (inclinations[h - 2] - inclinations[h - 1]) if h > 1 else \
        inclinations[0] - 1e-3
    for i in prange(n):
        px = points[i, 0] - translation[0]
        py = points[i, 1] - translation[1]
        pz = points[i, 2] - translation[2]
        x = rotation_t[0, 0] * px + rotation_t[0, 1] * py + rotation_t[0, 2] * pz
        y = rotation_t[1, 0] * px + rotation_t[1, 1] * py + rotation_t[1, 2] * pz
        z = rotation_t[2, 0] * px + rotation_t[2, 1] * py + rotation_t[2, 2] * pz
        r = np.sqrt(x * x + y * y + z * z)
        if not r > 0.0:
            continue
        incl = np.arctan2(z, np.sqrt(x * x + y * y))
        if incl > top or incl < bottom:
            continue
        # nearest beam: inclinations descend, so search the negated (ascending) values
        lo, hi = 0, h - 1
        while lo < hi:
            mid = (lo + hi) // 2
            if inclinations[mid] > incl:
                lo = mid + 1
            else:
                hi = mid
        rr = lo
        if rr > 0 and np.abs(inclinations[rr - 1] - incl) <= np.abs(inclinations[rr] - incl):
            rr -= 1
        az = np.arctan2(y, x) + az_correction
        az = az - np.floor(az / (2 * np.pi) + 0.5) * 2 * np.pi
        cc = np.int64(np.floor(width - (az / np.pi + 1.0) * 0.5 * width))
        cc = cc % width
        row[i] = rr
        col[i] = cc
        rng[i] = np.float32(r)
    image = np.zeros((h, width), np.float32)
    for i in range(n):
        if row[i] >= 0:
            current = image[row[i], col[i]]
            if current == 0.0 or rng[i] < current:
                image[row[i], col[i]] = rng[i]
    return image, row, col, row >= 0


@nb.njit(**_PARALLEL)
def in_image(points, m, depth_offset, width, height):
    """bool [N]: points [N, >= 3] whose projection h = m[:, :3] @ p + m[:, 3] (m float32 [3, 4], a camera's
    fused velodyne -> pixel map) lands in a width x height image, with depth h[2] - depth_offset > 0.

    One pass in float32 (each row's three sums in x, y, z order), the pixel tests as KITTI's: 0 <= u < width,
    0 <= v < height, u = h[0] / h[2], v = h[1] / h[2]."""
    n = points.shape[0]
    keep = np.empty(n, np.bool_)
    for i in prange(n):
        x, y, z = points[i, 0], points[i, 1], points[i, 2]
        h0 = m[0, 0] * x + m[0, 1] * y + m[0, 2] * z + m[0, 3]
        h1 = m[1, 0] * x + m[1, 1] * y + m[1, 2] * z + m[1, 3]
        h2 = m[2, 0] * x + m[2, 1] * y + m[2, 2] * z + m[2, 3]
        u, v = h0 / h2, h1 / h2  # h2 = 0 gives inf or nan: outside either way
        keep[i] = (h2 - depth_offset > 0) & (u >= 0) & (u < width) & (v >= 0) & (v < height)
    return keep


@nb.njit(**_PARALLEL)
def affine_points(points, m, t):
    """A copy of points [N, C] (float32) with x, y, z mapped to m @ p + t (m [3, 3], t [3] float64),
    computed in float64 and rounded once; the other columns unchanged."""
    n, c = points.shape
    out = np.empty_like(points)
    for i in prange(n):
        x, y, z = np.float64(points[i, 0]), np.float64(points[i, 1]), np.float64(points[i, 2])
        out[i, 0] = m[0, 0] * x + m[0, 1] * y + m[0, 2] * z + t[0]
        out[i, 1] = m[1, 0] * x + m[1, 1] * y + m[1, 2] * z + t[1]
        out[i, 2] = m[2, 0] * x + m[2, 1] * y + m[2, 2] * z + t[2]
        for j in range(3, c):
            out[i, j] = points[i, j]
    return out
