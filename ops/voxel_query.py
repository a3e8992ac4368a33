"""Voxel query (Voxel R-CNN): for each query point, the first `nsample` active voxels of a box of cells around
its own cell whose centres lie within a radius, in the order z, then y, then x offset (each from -range to
+range), as OpenPCDet's voxel_query_kernel_stack. The sites are found through a dense index volume of the
batch's grid (cell -> row, -1 empty), which the query reads at most (2 rz + 1)(2 ry + 1)(2 rx + 1) times.
"""
from __future__ import annotations

import numba as nb
import numpy as np
from numba import prange

from . import numba_cache  # noqa: F401  (process-safe on-disk kernel cache)

_PARALLEL = {"parallel": True, "cache": True, "nogil": True, "boundscheck": False}
_SERIAL = {"cache": True, "nogil": True, "boundscheck": False}


@nb.njit(**_SERIAL)
def index_volume(coords, batch_size, nz, ny, nx):
    """int32 [B, Z, Y, X]: the row of coords (int32 [N, 4]: b, z, y, x, unique, inside the grid) at each
    cell, -1 where no site is."""
    volume = np.full((batch_size, nz, ny, nx), -1, np.int32)
    for i in range(coords.shape[0]):
        volume[coords[i, 0], coords[i, 1], coords[i, 2], coords[i, 3]] = i
    return volume


@nb.njit(**_PARALLEL)
def voxel_query(volume, query_coords, query_xyz, voxel_xyz, rz, ry, rx, radius, nsample):
    """(idx int64 [M, nsample], count int32 [M]) for M queries (query_coords int32 [M, 4]: b, z, y, x, any
    integers, cells outside the grid are skipped; query_xyz float32 [M, 3]) over the sites of volume whose
    centres are voxel_xyz float32 [N, 3]. A site counts when its squared distance (float32) is at most
    radius^2. A query's slots are filled with its first site once one is found, then the later sites overwrite
    slots 1, 2, ...; a query with none keeps -1 in every slot (count 0). The scan stops at nsample sites: the
    sites after them would be dropped, so the result is the full scan's."""
    m = query_coords.shape[0]
    _, nz, ny, nx = volume.shape
    idx = np.full((m, nsample), -1, np.int64)
    count = np.zeros(m, np.int32)
    r2 = np.float32(radius) * np.float32(radius)
    for q in prange(m):
        b = query_coords[q, 0]
        if b < 0 or b >= volume.shape[0]:
            continue
        qx, qy, qz = query_xyz[q, 0], query_xyz[q, 1], query_xyz[q, 2]
        cnt = 0
        for dz in range(-rz, rz + 1):
            z = query_coords[q, 1] + dz
            if z < 0 or z >= nz:
                continue
            for dy in range(-ry, ry + 1):
                y = query_coords[q, 2] + dy
                if y < 0 or y >= ny:
                    continue
                for dx in range(-rx, rx + 1):
                    x = query_coords[q, 3] + dx
                    if x < 0 or x >= nx:
                        continue
                    row = volume[b, z, y, x]
                    if row < 0:
                        continue
                    ex = voxel_xyz[row, 0] - qx
                    ey = voxel_xyz[row, 1] - qy
                    ez = voxel_xyz[row, 2] - qz
                    if ex * ex + ey * ey + ez * ez > r2:
                        continue
                    if cnt == 0:
                        for s in range(nsample):
                            idx[q, s] = row
                    idx[q, cnt] = row
                    cnt += 1
                    if cnt == nsample:
                        break
                if cnt == nsample:
                    break
            if cnt == nsample:
                break
        count[q] = cnt
    return idx, count
