"""Ray casting against analytic primitives, accelerated by a uniform bird's-eye-view grid.

A scene is a float64 table ``prims [P, 16]``, one primitive a row:

    0       type: BOX (oriented box), CYLINDER (local z axis, with caps), ELLIPSOID, PLANE
    1:4     centre (PLANE: a point on the plane)
    4:13    rotation local -> world, row-major 3x3 (PLANE: its third column is the normal)
    13:16   half extents (BOX), (radius, radius, half height) (CYLINDER), radii (ELLIPSOID)

Bounded primitives are binned into BEV cells (CSR ``cell_start`` / ``cell_items``); planes and
very large primitives (the caller's ``always`` list: ground, sidewalks, terrain) are tested once per
ray before the walk, which also bounds the walk. A ray walks its cells with a 2D DDA and stops once the nearest hit lies
before the cell it is in. Every ray writes only its own output slot, so results do not depend
on thread scheduling.
"""
from __future__ import annotations

import math

import numba as nb
import numpy as np
from numba import prange

from . import numba_cache  # noqa: F401  (process-safe on-disk kernel cache)

BOX, CYLINDER, ELLIPSOID, PLANE = 0, 1, 2, 3
_EPS = 1e-6
_PARALLEL = {"parallel": True, "cache": True, "nogil": True, "boundscheck": False}
_SERIAL = {"cache": True, "nogil": True, "boundscheck": False}


@nb.njit(**_SERIAL)
def bev_bounds(prims):
    """float64 [P, 6] world AABB (xmin, ymin, zmin, xmax, ymax, zmax) of each primitive (PLANE: inf)."""
    n = prims.shape[0]
    out = np.empty((n, 6))
    for p in range(n):
        if int(prims[p, 0]) == PLANE:
            out[p, :3] = -np.inf
            out[p, 3:] = np.inf
            continue
        for a in range(3):
            reach = 0.0
            for b in range(3):
                reach += abs(prims[p, 4 + 3 * a + b]) * prims[p, 13 + b]
            out[p, a] = prims[p, 1 + a] - reach
            out[p, 3 + a] = prims[p, 1 + a] + reach
    return out


@nb.njit(**_SERIAL)
def build_grid(bounds, x0, y0, cell, nx, ny):
    """CSR cell lists (cell_start int32 [nx * ny + 1], cell_items int32 [K]) of the bounded primitives,
    and the top z of each cell's primitives (cell_top float64 [nx * ny], -inf when empty)."""
    n = bounds.shape[0]
    counts = np.zeros(nx * ny + 1, np.int32)
    top = np.full(nx * ny, -np.inf)
    for pass_ in range(2):
        if pass_ == 1:
            for c in range(nx * ny):
                counts[c + 1] += counts[c]
            items = np.empty(counts[nx * ny], np.int32)
            fill = counts[:nx * ny].copy()
        for p in range(n):
            if not np.isfinite(bounds[p, 0]):
                continue
            i0 = max(0, int(math.floor((bounds[p, 0] - x0) / cell)))
            i1 = min(nx - 1, int(math.floor((bounds[p, 3] - x0) / cell)))
            j0 = max(0, int(math.floor((bounds[p, 1] - y0) / cell)))
            j1 = min(ny - 1, int(math.floor((bounds[p, 4] - y0) / cell)))
            for i in range(i0, i1 + 1):
                for j in range(j0, j1 + 1):
                    c = i * ny + j
                    if pass_ == 0:
                        counts[c + 1] += 1
                        top[c] = max(top[c], bounds[p, 5])
                    else:
                        items[fill[c]] = p
                        fill[c] += 1
    return counts, items, top


@nb.njit(inline="always", **_SERIAL)
def _hit(prims, p, ox, oy, oz, dx, dy, dz, best):
    """(t, nx, ny, nz) of the first hit of the ray with primitive p before `best`, else (best, 0, 0, 0)."""
    kind = int(prims[p, 0])
    cx = ox - prims[p, 1]
    cy = oy - prims[p, 2]
    cz = oz - prims[p, 3]
    r = prims[p, 4:13]
    if kind == PLANE:
        nx, ny, nz = r[2], r[5], r[8]
        den = nx * dx + ny * dy + nz * dz
        if den >= -1e-12:
            return best, 0.0, 0.0, 0.0
        t = -(nx * cx + ny * cy + nz * cz) / den
        if t > _EPS and t < best:
            return t, nx, ny, nz
        return best, 0.0, 0.0, 0.0
    # world -> local: R^T v
    lx = r[0] * cx + r[3] * cy + r[6] * cz
    ly = r[1] * cx + r[4] * cy + r[7] * cz
    lz = r[2] * cx + r[5] * cy + r[8] * cz
    ux = r[0] * dx + r[3] * dy + r[6] * dz
    uy = r[1] * dx + r[4] * dy + r[7] * dz
    uz = r[2] * dx + r[5] * dy + r[8] * dz
    hx, hy, hz = prims[p, 13], prims[p, 14], prims[p, 15]
    t = best
    mx = 0.0
    my = 0.0
    mz = 0.0
    if kind == BOX:
        tn = -np.inf
        tf = np.inf
        axis = -1
        sign = 0.0
        for a in range(3):
            o = lx if a == 0 else (ly if a == 1 else lz)
            u = ux if a == 0 else (uy if a == 1 else uz)
            h = hx if a == 0 else (hy if a == 1 else hz)
            if abs(u) < 1e-12:
                if o < -h or o > h:
                    return best, 0.0, 0.0, 0.0
                continue
            t1 = (-h - o) / u
            t2 = (h - o) / u
            s = -1.0
            if t1 > t2:
                t1, t2 = t2, t1
                s = 1.0
            if t1 > tn:
                tn = t1
                axis = a
                sign = s
            tf = min(tf, t2)
        if tn > tf or tn <= _EPS or tn >= best or axis < 0:
            return best, 0.0, 0.0, 0.0
        t = tn
        if axis == 0:
            mx = sign
        elif axis == 1:
            my = sign
        else:
            mz = sign
    elif kind == CYLINDER:
        a2 = ux * ux + uy * uy
        if a2 > 1e-12:
            b = lx * ux + ly * uy
            c = lx * lx + ly * ly - hx * hx
            disc = b * b - a2 * c
            if disc >= 0.0:
                ts = (-b - math.sqrt(disc)) / a2
                if ts > _EPS and ts < t and abs(lz + ts * uz) <= hz:
                    t = ts
                    mx = (lx + ts * ux) / hx
                    my = (ly + ts * uy) / hx
        if abs(uz) > 1e-12:
            cap = hz if lz > 0.0 else -hz
            tc = (cap - lz) / uz
            if tc > _EPS and tc < t:
                px = lx + tc * ux
                py = ly + tc * uy
                if px * px + py * py <= hx * hx:
                    t = tc
                    mx = 0.0
                    my = 0.0
                    mz = 1.0 if cap > 0.0 else -1.0
        if t >= best:
            return best, 0.0, 0.0, 0.0
    else:  # ELLIPSOID
        sx = lx / hx
        sy = ly / hy
        sz = lz / hz
        vx = ux / hx
        vy = uy / hy
        vz = uz / hz
        a2 = vx * vx + vy * vy + vz * vz
        b = sx * vx + sy * vy + sz * vz
        c = sx * sx + sy * sy + sz * sz - 1.0
        disc = b * b - a2 * c
        if disc < 0.0:
            return best, 0.0, 0.0, 0.0
        ts = (-b - math.sqrt(disc)) / a2
        if ts <= _EPS or ts >= best:
            return best, 0.0, 0.0, 0.0
        t = ts
        mx = (lx + ts * ux) / (hx * hx)
        my = (ly + ts * uy) / (hy * hy)
        mz = (lz + ts * uz) / (hz * hz)
        norm = math.sqrt(mx * mx + my * my + mz * mz)
        mx /= norm
        my /= norm
        mz /= norm
    # local -> world normal: R n
    return (t, r[0] * mx + r[1] * my + r[2] * mz, r[3] * mx + r[4] * my + r[5] * mz,
            r[6] * mx + r[7] * my + r[8] * mz)


@nb.njit(**_SERIAL)
def _cast_one(prims, always, cell_start, cell_items, cell_top, x0, y0, cell, nx, ny, zlo, zhi,
              ox, oy, oz, dx, dy, dz, max_range):
    best = max_range
    hit = -1
    bnx = 0.0
    bny = 0.0
    bnz = 0.0
    for k in range(always.shape[0]):
        p = always[k]
        t, mx, my, mz = _hit(prims, p, ox, oy, oz, dx, dy, dz, best)
        if t < best:
            best, hit, bnx, bny, bnz = t, p, mx, my, mz
    # clip the ray to the grid's box (x, y) and to the bounded primitives' z range
    t0 = 0.0
    t1 = best
    for a in range(3):
        o = ox if a == 0 else (oy if a == 1 else oz)
        u = dx if a == 0 else (dy if a == 1 else dz)
        lo = x0 if a == 0 else (y0 if a == 1 else zlo)
        hi = x0 + nx * cell if a == 0 else (y0 + ny * cell if a == 1 else zhi)
        if abs(u) < 1e-12:
            if o < lo or o > hi:
                t1 = -1.0
            continue
        ta = (lo - o) / u
        tb = (hi - o) / u
        if ta > tb:
            ta, tb = tb, ta
        t0 = max(t0, ta)
        t1 = min(t1, tb)
    if t1 <= t0:
        return best, hit, bnx, bny, bnz
    px = ox + t0 * dx
    py = oy + t0 * dy
    i = min(nx - 1, max(0, int(math.floor((px - x0) / cell))))
    j = min(ny - 1, max(0, int(math.floor((py - y0) / cell))))
    step_i = 1 if dx > 0.0 else -1
    step_j = 1 if dy > 0.0 else -1
    if abs(dx) > 1e-12:
        next_x = x0 + (i + (1 if dx > 0.0 else 0)) * cell
        tmax_x = (next_x - ox) / dx
        tdelta_x = cell / abs(dx)
    else:
        tmax_x = np.inf
        tdelta_x = np.inf
    if abs(dy) > 1e-12:
        next_y = y0 + (j + (1 if dy > 0.0 else 0)) * cell
        tmax_y = (next_y - oy) / dy
        tdelta_y = cell / abs(dy)
    else:
        tmax_y = np.inf
        tdelta_y = np.inf
    t_enter = t0
    while True:
        c = i * ny + j
        t_exit = min(tmax_x, tmax_y)
        # skip the cell when the ray passes above everything in it
        if oz + dz * (min(t_exit, t1) if dz < 0.0 else t_enter) <= cell_top[c]:
            for k in range(cell_start[c], cell_start[c + 1]):
                p = cell_items[k]
                t, mx, my, mz = _hit(prims, p, ox, oy, oz, dx, dy, dz, best)
                if t < best:
                    best, hit, bnx, bny, bnz = t, p, mx, my, mz
        if best <= t_exit or t_exit >= t1:
            break
        t_enter = t_exit
        if tmax_x < tmax_y:
            i += step_i
            tmax_x += tdelta_x
            if i < 0 or i >= nx:
                break
        else:
            j += step_j
            tmax_y += tdelta_y
            if j < 0 or j >= ny:
                break
    return best, hit, bnx, bny, bnz


@nb.njit(**_PARALLEL)
def cast_rays(origins, dirs, max_range, prims, always, cell_start, cell_items, cell_top, grid):
    """First hits of rays (origins, unit dirs float64 [R, 3]) within max_range.

    grid: float64 [7] = (x0, y0, cell, nx, ny, zlo, zhi). Returns range float64 [R] (inf: no hit),
    primitive int32 [R] (-1: no hit) and cos_incidence float32 [R] (|normal . -dir|).
    """
    n = origins.shape[0]
    rng = np.empty(n)
    prim = np.empty(n, np.int32)
    cos_inc = np.empty(n, np.float32)
    x0, y0, cell = grid[0], grid[1], grid[2]
    nx, ny = int(grid[3]), int(grid[4])
    zlo, zhi = grid[5], grid[6]
    for r in prange(n):
        t, p, mx, my, mz = _cast_one(prims, always, cell_start, cell_items, cell_top, x0, y0, cell, nx, ny, zlo, zhi,
                                     origins[r, 0], origins[r, 1], origins[r, 2],
                                     dirs[r, 0], dirs[r, 1], dirs[r, 2], max_range)
        if p < 0:
            rng[r] = np.inf
            prim[r] = -1
            cos_inc[r] = 0.0
        else:
            rng[r] = t
            prim[r] = p
            cos_inc[r] = abs(mx * dirs[r, 0] + my * dirs[r, 1] + mz * dirs[r, 2])
    return rng, prim, cos_inc


@nb.njit(**_PARALLEL)
def cast_sweep(pose_start, pose_end, inclinations, azimuths, distort, max_range, prims, always, cell_start,
               cell_items, cell_top, grid):
    """One sweep of a spinning LiDAR, cast in the world: per ray (row-major, row 0 first) the range
    float64 [H * W] (inf: none), primitive int32 [H * W] (-1), cos incidence float32 [H * W] and
    world hit point float64 [H * W, 3].

    pose_*: float64 [4, 4] sensor -> world at the first / last column; with `distort` each column
    fires from its own pose, interpolated linearly in translation and in yaw about the sensor's z
    (ego motion during the sweep); otherwise every column fires from pose_start.
    """
    h = inclinations.shape[0]
    w = azimuths.shape[0]
    rng = np.empty(h * w)
    prim = np.empty(h * w, np.int32)
    cos_inc = np.empty(h * w, np.float32)
    hits = np.empty((h * w, 3))
    x0, y0, cell = grid[0], grid[1], grid[2]
    nx, ny = int(grid[3]), int(grid[4])
    zlo, zhi = grid[5], grid[6]
    yaw0 = math.atan2(pose_start[1, 0], pose_start[0, 0])
    yaw1 = math.atan2(pose_end[1, 0], pose_end[0, 0])
    dyaw = (yaw1 - yaw0 + math.pi) % (2 * math.pi) - math.pi
    for col in prange(w):
        f = col / max(w - 1, 1) if distort else 0.0
        c = math.cos(dyaw * f)
        s = math.sin(dyaw * f)
        # rotation at this firing: R_start @ Rz(dyaw * f)
        r00 = c * pose_start[0, 0] + s * pose_start[0, 1]
        r10 = c * pose_start[1, 0] + s * pose_start[1, 1]
        r20 = c * pose_start[2, 0] + s * pose_start[2, 1]
        r01 = -s * pose_start[0, 0] + c * pose_start[0, 1]
        r11 = -s * pose_start[1, 0] + c * pose_start[1, 1]
        r21 = -s * pose_start[2, 0] + c * pose_start[2, 1]
        r02, r12, r22 = pose_start[0, 2], pose_start[1, 2], pose_start[2, 2]
        ox = pose_start[0, 3] + f * (pose_end[0, 3] - pose_start[0, 3])
        oy = pose_start[1, 3] + f * (pose_end[1, 3] - pose_start[1, 3])
        oz = pose_start[2, 3] + f * (pose_end[2, 3] - pose_start[2, 3])
        ca = math.cos(azimuths[col])
        sa = math.sin(azimuths[col])
        for row in range(h):
            ci = math.cos(inclinations[row])
            lx, ly, lz = ca * ci, sa * ci, math.sin(inclinations[row])
            dx = r00 * lx + r01 * ly + r02 * lz
            dy = r10 * lx + r11 * ly + r12 * lz
            dz = r20 * lx + r21 * ly + r22 * lz
            k = row * w + col
            t, p, mx, my, mz = _cast_one(prims, always, cell_start, cell_items, cell_top, x0, y0, cell, nx, ny,
                                         zlo, zhi, ox, oy, oz, dx, dy, dz, max_range)
            if p < 0:
                rng[k] = np.inf
                prim[k] = -1
                cos_inc[k] = 0.0
                hits[k, 0] = np.nan
                hits[k, 1] = np.nan
                hits[k, 2] = np.nan
            else:
                rng[k] = t
                prim[k] = p
                cos_inc[k] = abs(mx * dx + my * dy + mz * dz)
                hits[k, 0] = ox + t * dx
                hits[k, 1] = oy + t * dy
                hits[k, 2] = oz + t * dz
    return rng, prim, cos_inc, hits


@nb.njit(**_SERIAL)
def cast_rays_serial(origins, dirs, max_range, prims, always, cell_start, cell_items, cell_top, grid):
    """cast_rays on the calling thread, for small batches where a parallel launch costs more than the work."""
    n = origins.shape[0]
    rng = np.empty(n)
    prim = np.empty(n, np.int32)
    cos_inc = np.empty(n, np.float32)
    nx, ny = int(grid[3]), int(grid[4])
    for r in range(n):
        t, p, mx, my, mz = _cast_one(prims, always, cell_start, cell_items, cell_top, grid[0], grid[1], grid[2], nx, ny,
                                     grid[5], grid[6], origins[r, 0], origins[r, 1], origins[r, 2],
                                     dirs[r, 0], dirs[r, 1], dirs[r, 2], max_range)
        rng[r] = t if p >= 0 else np.inf
        prim[r] = p
        cos_inc[r] = abs(mx * dirs[r, 0] + my * dirs[r, 1] + mz * dirs[r, 2]) if p >= 0 else 0.0
    return rng, prim, cos_inc


@nb.njit(**_SERIAL)
def cast_groups(origins, dirs, max_range, prims, group_start, group_items, ray_group):
    """First hit of each ray among the primitives of its group only (brute force; small groups).

    group g owns primitives group_items[group_start[g]:group_start[g + 1]]; ray r belongs to group
    ray_group[r]. Returns range float64 [R] (inf: none) and primitive int32 [R] (-1).
    """
    n = origins.shape[0]
    rng = np.full(n, np.inf)
    prim = np.full(n, -1, np.int32)
    for r in range(n):
        g = ray_group[r]
        best = max_range
        for k in range(group_start[g], group_start[g + 1]):
            p = group_items[k]
            t, mx, my, mz = _hit(prims, p, origins[r, 0], origins[r, 1], origins[r, 2], dirs[r, 0], dirs[r, 1],
                                 dirs[r, 2], best)
            if t < best:
                best = t
                prim[r] = p
                rng[r] = t
    return rng, prim
