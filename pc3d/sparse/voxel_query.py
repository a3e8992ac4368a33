"""Voxel query: the active sites of a sparse tensor near given points (Voxel R-CNN's neighbour search).

Conventions (OpenPCDet's, so a Voxel R-CNN reads the sites it was trained on):
- a site's centre is (index + 0.5) x voxel_size x stride + the grid's minimum, per axis (x, y, z), whatever the
  padding of the strided convs that made it;
- a point's cell at a stride is floor((p - minimum) / voxel_size) floor-divided by the stride;
- a query takes the first `nsample` sites within `radius` of it among the cells of its own cell +- query_range
  (z, y, x), scanned z, then y, then x offset; sites are matched within the query's sample only.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from pc3d_ops import voxel_query as _k

from pc3d.errors import ConfigError
from pc3d.sparse.kernel_map import sync_threads
from pc3d.sparse.tensor import SparseTensor


def voxel_centers(x: SparseTensor, voxel_size: Sequence[float], point_cloud_range: Sequence[float]) -> torch.Tensor:
    """float32 [N, 3]: the centre (x, y, z, metres) of each site of x (a 3D tensor, coords b, z, y, x)."""
    cell = torch.tensor([float(v) * s for v, s in zip(voxel_size, x.stride[::-1], strict=True)],
                        dtype=torch.float32, device=x.coords.device)
    low = torch.tensor([float(v) for v in point_cloud_range[:3]], dtype=torch.float32, device=x.coords.device)
    return (x.coords[:, [3, 2, 1]].float() + 0.5) * cell + low


def point_cells(xyz: torch.Tensor, stride: Sequence[int], voxel_size: Sequence[float],
                point_cloud_range: Sequence[float]) -> torch.Tensor:
    """int64 [M, 3] (z, y, x): the cell of each point xyz [M, 3] in a grid of `stride` (z, y, x) over the base
    grid (voxel_size x, y, z), which may lie outside the grid."""
    size = xyz.new_tensor([float(v) for v in voxel_size])
    low = xyz.new_tensor([float(v) for v in point_cloud_range[:3]])
    base = torch.div(xyz - low, size, rounding_mode="floor")  # the release's `//`: exact at cell borders
    return torch.div(base, base.new_tensor([float(s) for s in stride[::-1]]), rounding_mode="floor"
                     ).long()[:, [2, 1, 0]]


def voxel_query(x: SparseTensor, site_xyz: torch.Tensor, query_xyz: torch.Tensor, query_batch: torch.Tensor,
                voxel_size: Sequence[float], point_cloud_range: Sequence[float], query_range: Sequence[int],
                radius: float, nsample: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(idx int64 [M, nsample]: rows of x's sites, -1 where the query found none; count int64 [M]: sites found,
    at most nsample) for query points query_xyz [M, 3] of samples query_batch [M]. site_xyz: voxel_centers(x).
    As OpenPCDet, a query with fewer than nsample sites repeats its first one in the slots left."""
    if len(x.spatial_shape) != 3:
        raise ConfigError(f"voxel_query needs a 3D sparse tensor, got spatial shape {x.spatial_shape}")
    if len(query_range) != 3 or min(query_range) < 0 or nsample < 1 or radius <= 0:
        raise ConfigError(f"voxel_query: query_range (z, y, x) >= 0, nsample >= 1 and radius > 0, got "
                          f"{tuple(query_range)}, {nsample}, {radius}")
    cells = point_cells(query_xyz.detach().float(), x.stride, voxel_size, point_cloud_range)
    coords = torch.cat([query_batch.long()[:, None], cells], 1)
    fits = (coords.abs() < 2**31 - 2**10).all(1)  # far points: no site near them, and no int32 overflow
    coords = torch.where(fits[:, None], coords, coords.new_tensor([-1, 0, 0, 0]))
    sync_threads()
    volume = _k.index_volume(x.coords.cpu().numpy().astype(np.int32), x.batch_size, *x.spatial_shape)
    idx, count = _k.voxel_query(volume, coords.cpu().numpy().astype(np.int32),
                                np.ascontiguousarray(query_xyz.detach().float().cpu().numpy()),
                                np.ascontiguousarray(site_xyz.detach().float().cpu().numpy()),
                                *(int(r) for r in query_range), float(radius), int(nsample))
    device = query_xyz.device
    return torch.from_numpy(idx).to(device), torch.from_numpy(count).long().to(device)
