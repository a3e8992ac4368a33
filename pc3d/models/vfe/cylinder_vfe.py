"""Cylinder3D's point encoder: each voxel of a cylindrical grid encoded from its points by a shared MLP and a max.

    per point   [rho, phi, z minus its cell's centre (3), rho, phi, z (3), x, y (2), the feature columns]
    MLP         BatchNorm -> Linear 64 -> BN, ReLU -> 128 -> BN, ReLU -> 256 -> BN, ReLU -> Linear 256
    per voxel   max over its points -> Linear out_channels -> ReLU  (Cylinder3D's "compress": 16)

The grid is pc3d.voxel.CylindricalGrid (the dataset's CylindricalVoxelizer): voxel coords (b, z, phi, rho).
Points the voxelizer left out (point_to_voxel -1) are not encoded. Cylinder3D shuffles the points before its
scatter-max (a max does not depend on the order) and compresses each point's features too (unused here).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pc3d.sparse import SparseTensor
from pc3d.voxel import scatter_max
from pc3d.voxel.cylindrical import CylindricalGrid


class CylinderPointEncoder(nn.Module):
    """in_channels: the points' columns (x, y, z + features: 4 for SemanticKITTI); grid_size, rho_range, z_range:
    the CylindricalVoxelizer's. widths: the point MLP's; out_channels: the voxel features' width.
    forward(batch) -> SparseTensor [V, out_channels] on batch["voxel_coords"]."""

    def __init__(self, in_channels: int, grid_size: Sequence[int] = (480, 360, 32),
                 rho_range: Sequence[float] = (0.0, 50.0), z_range: Sequence[float] = (-4.0, 2.0),
                 widths: Sequence[int] = (64, 128, 256, 256), out_channels: int = 16, norm_momentum: float = 0.1):
        super().__init__()
        grid = CylindricalGrid(grid_size, rho_range, z_range)
        self.grid = grid
        self.register_buffer("lower", torch.tensor(grid.lower, dtype=torch.float32), persistent=False)
        self.register_buffer("cell", torch.tensor(grid.voxel_size, dtype=torch.float32), persistent=False)
        layers, width = [nn.BatchNorm1d(in_channels + 5, momentum=norm_momentum)], in_channels + 5
        for k, w in enumerate(widths):
            layers.append(nn.Linear(width, w))
            if k < len(widths) - 1:
                layers += [nn.BatchNorm1d(w, momentum=norm_momentum), nn.ReLU()]
            width = w
        self.mlp = nn.Sequential(*layers)
        self.compress = nn.Sequential(nn.Linear(width, out_channels), nn.ReLU())
        self.out_channels = out_channels

    def point_features(self, points: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        """[N, in_channels + 5] of points [N, in_channels] in voxels with coords [N, 4] (b, z, phi, rho)."""
        polar = self.grid.torch_positions(points[:, :3].float())
        centre = self.lower + (coords[:, [3, 2, 1]].to(polar.dtype) + 0.5) * self.cell
        return torch.cat([polar - centre, polar, points[:, :2], points[:, 3:]], 1)

    def forward(self, batch: dict) -> SparseTensor:
        keep = batch["point_to_voxel"] >= 0
        inverse, coords = batch["point_to_voxel"][keep], batch["voxel_coords"]
        feats = self.mlp(self.point_features(batch["points"][keep], coords[inverse]))
        return SparseTensor(self.compress(scatter_max(feats, inverse, len(coords))), coords, batch["spatial_shape"],
                            batch["batch_size"])
