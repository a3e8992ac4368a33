"""Exact rotated-box overlaps (BEV and 3D IoU) and the NMS variants built on them.

Boxes are float64 [M, 7]: x, y, z, dx, dy, dz, heading. The BEV intersection of two rectangles
is computed in the frame of the first one, where it is the axis-aligned [-dx/2, dx/2] x
[-dy/2, dy/2]: the second rectangle is clipped by four axis-aligned half-planes
(Sutherland-Hodgman), which is robust to parallel, touching and identical edges because every
inside test and every cut is along one coordinate only.
"""
from __future__ import annotations

import numba as nb
import numpy as np
from numba import prange

from . import numba_cache  # noqa: F401  (process-safe on-disk kernel cache)

_PARALLEL = {"parallel": True, "cache": True, "nogil": True, "boundscheck": False}
_SERIAL = {"cache": True, "nogil": True, "boundscheck": False}

MODE_BEV = 0
MODE_3D = 1


@nb.njit(**_SERIAL)
def _clip(px, py, n, axis, sign, limit, ox, oy):
    """Keep the part of polygon (px, py)[:n] with sign * coord[axis] <= limit; writes (ox, oy)."""
    m = 0
    if n == 0:
        return 0
    sx, sy = px[n - 1], py[n - 1]
    s_val = sign * (sx if axis == 0 else sy)
    for i in range(n):
        ex, ey = px[i], py[i]
        e_val = sign * (ex if axis == 0 else ey)
        e_in = e_val <= limit
        s_in = s_val <= limit
        if e_in != s_in:
            t = (limit - s_val) / (e_val - s_val)
            t = min(max(t, 0.0), 1.0)
            if axis == 0:
                ox[m] = sign * limit
                oy[m] = sy + t * (ey - sy)
            else:
                ox[m] = sx + t * (ex - sx)
                oy[m] = sign * limit
            m += 1
        if e_in:
            ox[m] = ex
            oy[m] = ey
            m += 1
        sx, sy, s_val = ex, ey, e_val
    return m


@nb.njit(**_SERIAL)
def bev_intersection(ax, ay, adx, ady, ah, bx, by, bdx, bdy, bh):
    """Area of the intersection of two rotated rectangles (centre, size, heading)."""
    ca, sa = np.cos(ah), np.sin(ah)
    # centre of b and its axes in a's frame
    tx, ty = bx - ax, by - ay
    lx = tx * ca + ty * sa
    ly = -tx * sa + ty * ca
    rel = bh - ah
    c, s = np.cos(rel), np.sin(rel)
    hx, hy = 0.5 * bdx, 0.5 * bdy
    px = np.empty(16)
    py = np.empty(16)
    qx = np.empty(16)
    qy = np.empty(16)
    # b's corners counter-clockwise
    sgx = (1.0, -1.0, -1.0, 1.0)
    sgy = (1.0, 1.0, -1.0, -1.0)
    for k in range(4):
        u, v = sgx[k] * hx, sgy[k] * hy
        px[k] = lx + u * c - v * s
        py[k] = ly + u * s + v * c
    n = 4
    lim_x, lim_y = 0.5 * adx, 0.5 * ady
    n = _clip(px, py, n, 0, 1.0, lim_x, qx, qy)
    n = _clip(qx, qy, n, 0, -1.0, lim_x, px, py)
    n = _clip(px, py, n, 1, 1.0, lim_y, qx, qy)
    n = _clip(qx, qy, n, 1, -1.0, lim_y, px, py)
    if n < 3:
        return 0.0
    area = 0.0
    for i in range(n):
        j = i + 1 if i + 1 < n else 0
        area += px[i] * py[j] - px[j] * py[i]
    return max(0.5 * area, 0.0)


@nb.njit(**_SERIAL)
def radii(boxes):
    """Circumscribed BEV radius of each box [M, 7]."""
    return 0.5 * np.sqrt(boxes[:, 3] * boxes[:, 3] + boxes[:, 4] * boxes[:, 4])


@nb.njit(**_SERIAL)
def pair_iou(a, i, b, j, mode, ra, rb):
    """IoU of box a[i] and box b[j] (BEV when mode == 0, 3D when mode == 1); ra, rb: their radii."""
    ddx = a[i, 0] - b[j, 0]
    ddy = a[i, 1] - b[j, 1]
    if ddx * ddx + ddy * ddy >= (ra + rb) * (ra + rb):
        return 0.0
    zo = 1.0
    if mode == MODE_3D:
        zo = min(a[i, 2] + 0.5 * a[i, 5], b[j, 2] + 0.5 * b[j, 5]) - max(a[i, 2] - 0.5 * a[i, 5],
                                                                         b[j, 2] - 0.5 * b[j, 5])
        if zo <= 0.0:
            return 0.0
    inter = bev_intersection(a[i, 0], a[i, 1], a[i, 3], a[i, 4], a[i, 6],
                             b[j, 0], b[j, 1], b[j, 3], b[j, 4], b[j, 6])
    if inter <= 0.0:
        return 0.0
    va = a[i, 3] * a[i, 4]
    vb = b[j, 3] * b[j, 4]
    if mode == MODE_3D:
        inter *= zo
        va *= a[i, 5]
        vb *= b[j, 5]
    union = va + vb - inter
    if union <= 0.0:
        return 0.0
    return min(inter / union, 1.0)


@nb.njit(**_PARALLEL)
def iou_matrix(a, b, mode):
    """IoU [Na, Nb] float64 of every pair of boxes a [Na, 7], b [Nb, 7]."""
    na, nb_ = a.shape[0], b.shape[0]
    out = np.zeros((na, nb_))
    ra, rb = radii(a), radii(b)
    for i in prange(na):
        for j in range(nb_):
            out[i, j] = pair_iou(a, i, b, j, mode, ra[i], rb[j])
    return out


@nb.njit(**_PARALLEL)
def iou_aligned(a, b, mode):
    """IoU [N] float64 of the row pairs (a[i], b[i])."""
    n = a.shape[0]
    out = np.zeros(n)
    ra, rb = radii(a), radii(b)
    for i in prange(n):
        out[i] = pair_iou(a, i, b, i, mode, ra[i], rb[i])
    return out


@nb.njit(**_SERIAL)
def _nearest_aabb(box):
    """Axis-aligned BEV box (x1, y1, x2, y2) after turning the box to its nearest axis."""
    h = box[6] - np.floor(box[6] / np.pi + 0.5) * np.pi  # heading modulo pi, in [-pi/2, pi/2)
    dx, dy = box[3], box[4]
    if np.abs(h) >= np.pi / 4:  # OpenPCDet keeps the dims only below pi / 4
        dx, dy = dy, dx
    return box[0] - 0.5 * dx, box[1] - 0.5 * dy, box[0] + 0.5 * dx, box[1] + 0.5 * dy


@nb.njit(**_PARALLEL)
def nearest_bev_iou(a, b):
    """IoU [Na, Nb] of the axis-aligned BEV boxes after turning every box to its nearest axis."""
    na, nb_ = a.shape[0], b.shape[0]
    bb = np.empty((nb_, 4))
    for j in range(nb_):
        bb[j, 0], bb[j, 1], bb[j, 2], bb[j, 3] = _nearest_aabb(b[j])
    out = np.zeros((na, nb_))
    for i in prange(na):
        x1, y1, x2, y2 = _nearest_aabb(a[i])
        area_a = (x2 - x1) * (y2 - y1)
        for j in range(nb_):
            w = min(x2, bb[j, 2]) - max(x1, bb[j, 0])
            h = min(y2, bb[j, 3]) - max(y1, bb[j, 1])
            if w > 0.0 and h > 0.0:
                inter = w * h
                union = area_a + (bb[j, 2] - bb[j, 0]) * (bb[j, 3] - bb[j, 1]) - inter
                out[i, j] = inter / union if union > 0.0 else 0.0
    return out


@nb.njit(**_SERIAL)
def _cell_index(x, y, cell):
    """Cells (ix, iy) of centres on a grid of side `cell`, origin at the minimum, and the key base."""
    n = x.shape[0]
    x0, y0 = np.min(x), np.min(y)
    ix = np.empty(n, np.int64)
    iy = np.empty(n, np.int64)
    for i in range(n):
        ix[i] = np.int64(np.floor((x[i] - x0) / cell)) + 1
        iy[i] = np.int64(np.floor((y[i] - y0) / cell)) + 1
    ny = np.max(iy) + 2
    keys = ix * ny + iy
    return ix, iy, ny, keys


@nb.njit(**_SERIAL)
def _range_of(sorted_keys, key):
    return np.searchsorted(sorted_keys, key, "left"), np.searchsorted(sorted_keys, key, "right")


@nb.njit(**_SERIAL)
def nms_rotated(boxes, iou_threshold, max_keep, cell):
    """Greedy rotated BEV NMS over boxes [K, 7] already in descending score order.

    A box is suppressed by a kept, higher-ranked box whose BEV IoU exceeds the threshold. Only
    boxes in the 3 x 3 neighbouring cells of a grid of side `cell` (>= twice the largest
    circumscribed radius) can overlap, so each kept box visits its neighbours only.
    Returns the kept ranks (int64, ascending), at most max_keep of them.
    """
    k = boxes.shape[0]
    keep = np.empty(k, np.int64)
    if k == 0 or max_keep <= 0:
        return keep[:0]
    ix, iy, ny, keys = _cell_index(boxes[:, 0], boxes[:, 1], cell)
    order = np.argsort(keys, kind="mergesort")  # stable: ranks ascend within a cell
    sorted_keys = keys[order]
    suppressed = np.zeros(k, np.bool_)
    r = radii(boxes)
    n_keep = 0
    for i in range(k):
        if suppressed[i]:
            continue
        keep[n_keep] = i
        n_keep += 1
        if n_keep >= max_keep:
            break
        for ddx in range(-1, 2):
            for ddy in range(-1, 2):
                lo, hi = _range_of(sorted_keys, (ix[i] + ddx) * ny + iy[i] + ddy)
                for e in range(lo, hi):
                    j = order[e]
                    if j > i and not suppressed[j]:
                        if pair_iou(boxes, i, boxes, j, MODE_BEV, r[i], r[j]) > iou_threshold:
                            suppressed[j] = True
    return keep[:n_keep]


@nb.njit(**_SERIAL)
def nms_axis_aligned(boxes, iou_threshold):
    """Greedy NMS by axis-aligned 3D IoU over boxes [K, 6+] (centre, size) already in descending score order:
    bool [K], True for the kept ones. A box is suppressed by a kept, higher-ranked box whose IoU exceeds the
    threshold; the IoU is computed only between a kept box and the boxes after it still alive, in the float64
    steps of pc3d.geometry.iou_axis_aligned (box = centre -+ size / 2, a pair of zero union 0)."""
    k = boxes.shape[0]
    alive = np.ones(k, np.bool_)
    lo = np.empty((k, 3))
    hi = np.empty((k, 3))
    vol = np.empty(k)
    for i in range(k):
        for a in range(3):
            lo[i, a] = boxes[i, a] - boxes[i, 3 + a] / 2
            hi[i, a] = boxes[i, a] + boxes[i, 3 + a] / 2
        vol[i] = boxes[i, 3] * boxes[i, 4] * boxes[i, 5]
    for i in range(k):
        if not alive[i]:
            continue
        for j in range(i + 1, k):
            if not alive[j]:
                continue
            inter = 1.0
            for a in range(3):
                inter *= max(min(hi[i, a], hi[j, a]) - max(lo[i, a], lo[j, a]), 0.0)
            union = vol[i] + vol[j] - inter
            if union > 0 and inter / max(union, 1e-12) > iou_threshold:
                alive[j] = False
    return alive


@nb.njit(**_SERIAL)
def nms_circle(xy, min_radius, max_keep, cell):
    """Greedy circle NMS over BEV centres xy [K, 2] in descending score order.

    A centre within min_radius (inclusive) of a kept, higher-ranked centre is suppressed; the
    grid side `cell` must be >= min_radius.
    Returns the kept ranks (int64, ascending).
    """
    k = xy.shape[0]
    keep = np.empty(k, np.int64)
    if k == 0 or max_keep <= 0:
        return keep[:0]
    ix, iy, ny, keys = _cell_index(xy[:, 0], xy[:, 1], cell)
    order = np.argsort(keys, kind="mergesort")
    sorted_keys = keys[order]
    suppressed = np.zeros(k, np.bool_)
    r2 = min_radius * min_radius
    n_keep = 0
    for i in range(k):
        if suppressed[i]:
            continue
        keep[n_keep] = i
        n_keep += 1
        if n_keep >= max_keep:
            break
        for ddx in range(-1, 2):
            for ddy in range(-1, 2):
                lo, hi = _range_of(sorted_keys, (ix[i] + ddx) * ny + iy[i] + ddy)
                for e in range(lo, hi):
                    j = order[e]
                    if j > i and not suppressed[j]:
                        ex = xy[i, 0] - xy[j, 0]
                        ey = xy[i, 1] - xy[j, 1]
                        if ex * ex + ey * ey <= r2:
                            suppressed[j] = True
    return keep[:n_keep]
