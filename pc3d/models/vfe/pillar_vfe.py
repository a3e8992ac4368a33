"""PillarVFE (PointPillars): a PointNet over the points of each pillar, with offsets from the pillar's
point mean and from its centre as extra inputs."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pc3d.models.vfe.pfn import PFNLayer
from pc3d.sparse import SparseTensor


class PillarVFE(nn.Module):
    """Hard pillars (batch["voxels"] [V, P, 3 + C], voxel_num_points, voxel_coords (b, 0, y, x)) ->
    SparseTensor [V, num_filters[-1]] on the (1, Y, X) grid.

    Per point: x, y, z, features, offset to the pillar's mean (3), offset to the pillar's centre (3)
    (+ distance to the sensor with with_distance). Padded point slots are zeroed before the max.
    """

    def __init__(self, in_channels: int, voxel_size: Sequence[float], point_cloud_range: Sequence[float],
                 num_filters: Sequence[int] = (64,), with_distance: bool = False, norm_momentum: float = 0.01):
        super().__init__()
        self.with_distance = with_distance
        channels = [in_channels + 6 + int(with_distance), *num_filters]
        last = len(num_filters) - 1
        self.pfn_layers = nn.ModuleList(
            PFNLayer(channels[i], channels[i + 1], i == last, norm_momentum) for i in range(len(num_filters)))
        self.register_buffer("voxel_size", torch.tensor(voxel_size[:3], dtype=torch.float32), persistent=False)
        self.register_buffer("offset", torch.tensor(point_cloud_range[:3], dtype=torch.float32), persistent=False)
        self.out_channels = num_filters[-1]

    def forward(self, batch: dict) -> SparseTensor:
        voxels, counts, coords = batch["voxels"], batch["voxel_num_points"].long(), batch["voxel_coords"]
        mask = torch.arange(voxels.shape[1], device=voxels.device)[None, :] < counts[:, None]  # [V, P]
        xyz = voxels[..., :3]
        mean = (xyz * mask[..., None]).sum(1, keepdim=True) / counts.clamp(min=1)[:, None, None]
        centre = (coords[:, [3, 2, 1]].float() + 0.5) * self.voxel_size + self.offset  # (x, y, z) of the cell
        parts = [voxels, xyz - mean, xyz - centre[:, None, :]]
        if self.with_distance:
            parts.append(xyz.norm(dim=-1, keepdim=True))
        x = torch.cat(parts, -1) * mask[..., None]
        v, p, _ = x.shape
        for layer in self.pfn_layers:
            h = layer(x.reshape(v * p, -1)).reshape(v, p, -1) * mask[..., None]
            pooled = h.max(1, keepdim=True).values
            x = pooled if layer.last else torch.cat([h, pooled.expand_as(h)], -1)
        return SparseTensor(x[:, 0], coords, batch["spatial_shape"], batch["batch_size"])
