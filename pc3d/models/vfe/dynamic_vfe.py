"""DynamicVFE (dynamic voxelization, MVF / CenterPoint-pillar style): every in-range point keeps its
voxel; a PointNet with scatter-max pooling encodes each voxel from its points plus their offsets to
the voxel's point mean (cluster) and to the voxel's centre."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pc3d.models.vfe.pfn import PFNLayer
from pc3d.sparse import SparseTensor
from pc3d.voxel import scatter_max, scatter_mean


class DynamicVFE(nn.Module):
    """Dynamic voxels (batch["point_to_voxel"] [N], voxel_coords (b, z, y, x)) -> SparseTensor
    [V, num_filters[-1]]. Works for voxels and, with a pillar grid, for dynamic pillars."""

    def __init__(self, in_channels: int, voxel_size: Sequence[float], point_cloud_range: Sequence[float],
                 num_filters: Sequence[int] = (64, 64), with_cluster_center: bool = True,
                 with_voxel_center: bool = True, norm_momentum: float = 0.01):
        super().__init__()
        self.with_cluster_center, self.with_voxel_center = with_cluster_center, with_voxel_center
        channels = [in_channels + 3 * int(with_cluster_center) + 3 * int(with_voxel_center), *num_filters]
        last = len(num_filters) - 1
        self.pfn_layers = nn.ModuleList(
            PFNLayer(channels[i], channels[i + 1], i == last, norm_momentum) for i in range(len(num_filters)))
        self.register_buffer("voxel_size", torch.tensor(voxel_size[:3], dtype=torch.float32), persistent=False)
        self.register_buffer("offset", torch.tensor(point_cloud_range[:3], dtype=torch.float32), persistent=False)
        self.out_channels = num_filters[-1]

    def forward(self, batch: dict) -> SparseTensor:
        keep = batch["point_to_voxel"] >= 0
        points, inverse, coords = batch["points"][keep], batch["point_to_voxel"][keep], batch["voxel_coords"]
        num_voxels = len(coords)
        xyz = points[:, :3]
        parts = [points]
        if self.with_cluster_center:
            parts.append(xyz - scatter_mean(xyz, inverse, num_voxels)[inverse])
        if self.with_voxel_center:
            centre = (coords[:, [3, 2, 1]].float() + 0.5) * self.voxel_size + self.offset
            parts.append(xyz - centre[inverse])
        x = torch.cat(parts, -1)
        for layer in self.pfn_layers:
            h = layer(x)
            pooled = scatter_max(h, inverse, num_voxels)
            x = pooled if layer.last else torch.cat([h, pooled[inverse]], -1)
        return SparseTensor(x, coords, batch["spatial_shape"], batch["batch_size"])
