"""Voxel RoI grid pooling (Voxel R-CNN): a grid of points inside every RoI reads the backbone's sparse stages.

    roi_grid_points    grid x grid x grid cell centres of each RoI, rotated and placed in the LiDAR frame
    NeighborVoxelPool  one stage: per scale, Linear + BN on the stage's features; the sites near each grid point
                       (pc3d.sparse.voxel_query); (their features + Linear + BN of their offsets) -> act -> max over
                       the sites -> Linear + BN (+ act); the scales concatenated

The released layers are 1x1 Conv1d / Conv2d with BatchNorm1d / 2d (OpenPCDet's NeighborVoxelSAModuleMSG); here
Linear layers with BatchNorm1d over the same rows: the offsets' norm runs over every (query, slot) pair, empty
slots included, as BatchNorm2d does there. `neuron`: None for the released ANN (ReLU after the sum, the output
layer Linear -> BN -> ReLU); a spiking neuron factory for E-3DSNN's (neuron after the sum, the output layer
neuron -> Linear -> BN).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from pc3d.errors import ConfigError
from pc3d.geometry import rotate_points_z
from pc3d.sparse import SparseTensor
from pc3d.sparse.voxel_query import voxel_centers, voxel_query


def roi_grid_points(rois: torch.Tensor, grid_size: int) -> torch.Tensor:
    """[R, grid^3, 3]: for rois [R, 7+] the centres of a grid x grid x grid split of each box (index order x, y, z,
    z fastest, as OpenPCDet's), in the LiDAR frame."""
    steps = (torch.arange(grid_size, dtype=rois.dtype, device=rois.device) + 0.5) / grid_size - 0.5
    ix, iy, iz = torch.meshgrid(steps, steps, steps, indexing="ij")
    unit = torch.stack([ix, iy, iz], -1).reshape(-1, 3)  # [G, 3] in (-0.5, 0.5)
    local = unit[None] * rois[:, None, 3:6]
    return rotate_points_z(local, rois[:, 6]) + rois[:, None, 0:3]


class NeighborVoxelPool(nn.Module):
    """Pools one sparse stage of in_channels at query points: [M] points -> [M, sum of mlps[k][-1]].

    mlps: per scale (hidden, out) widths; query_ranges: per scale the cells (z, y, x) searched either side;
    radii: per scale, metres; nsamples: per scale, sites kept; pool: 'max' or 'avg' over a query's sites."""

    def __init__(self, in_channels: int, mlps: Sequence[Sequence[int]], query_ranges: Sequence[Sequence[int]],
                 radii: Sequence[float], nsamples: Sequence[int], pool: str = "max",
                 neuron: Callable[[], nn.Module] | None = None):
        super().__init__()
        if not len(mlps) == len(query_ranges) == len(radii) == len(nsamples):
            raise ConfigError(f"NeighborVoxelPool: one mlp, query range, radius and nsample per scale, got "
                              f"{len(mlps)}, {len(query_ranges)}, {len(radii)}, {len(nsamples)}")
        if pool not in ("max", "avg"):
            raise ConfigError(f"NeighborVoxelPool pool must be 'max' or 'avg', got {pool!r}")
        self.query_ranges = [tuple(int(r) for r in q) for q in query_ranges]
        self.radii, self.nsamples, self.pool = [float(r) for r in radii], [int(n) for n in nsamples], pool
        self.spiking = neuron is not None
        act = neuron or nn.ReLU
        self.mlps_in, self.mlps_pos, self.mlps_out, self.acts = (nn.ModuleList() for _ in range(4))
        for hidden, out in mlps:
            self.mlps_in.append(nn.Sequential(nn.Linear(in_channels, hidden, bias=False), nn.BatchNorm1d(hidden)))
            self.mlps_pos.append(nn.Sequential(nn.Linear(3, hidden, bias=False), nn.BatchNorm1d(hidden)))
            layers = [nn.Linear(hidden, out, bias=False), nn.BatchNorm1d(out)]
            self.mlps_out.append(nn.Sequential(act(), *layers) if self.spiking else nn.Sequential(*layers, act()))
            self.acts.append(act())
        self.out_channels = sum(out for _, out in mlps)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: SparseTensor, query_xyz: torch.Tensor, query_batch: torch.Tensor,
                voxel_size: Sequence[float], point_cloud_range: Sequence[float]) -> torch.Tensor:
        site_xyz = voxel_centers(x, voxel_size, point_cloud_range)
        outs = []
        for k in range(len(self.mlps_in)):
            idx, count = voxel_query(x, site_xyz, query_xyz, query_batch, voxel_size, point_cloud_range,
                                     self.query_ranges[k], self.radii[k], self.nsamples[k])
            empty = (count == 0)[:, None, None]
            rows = idx.clamp(min=0)
            feats = self.mlps_in[k](x.feats)[rows].masked_fill(empty, 0.0)  # [M, S, hidden]
            offsets = (site_xyz[rows] - query_xyz[:, None]).masked_fill(empty, 0.0)
            m, s, _ = offsets.shape
            pos = self.mlps_pos[k](offsets.reshape(m * s, 3)).reshape(m, s, -1)
            h = self.acts[k](feats + pos)
            h = h.amax(1) if self.pool == "max" else h.mean(1)
            outs.append(self.mlps_out[k](h))
        return torch.cat(outs, 1)
