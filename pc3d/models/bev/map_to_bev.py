"""Sparse 3D features -> dense BEV maps: height compression (SECOND) and pillar scatter (PointPillars)."""
from __future__ import annotations

import torch
from torch import nn

from pc3d.sparse import SparseTensor


class HeightCompression(nn.Module):
    """SparseTensor on a (Z, Y, X) grid with C channels -> dense [B, C * Z, Y, X] (z folded into channels)."""

    def __init__(self, num_bev_features: int):
        super().__init__()
        self.num_bev_features = num_bev_features

    def forward(self, x: SparseTensor) -> torch.Tensor:
        dense = x.dense()  # [B, C, Z, Y, X]
        b, c, z, h, w = dense.shape
        return dense.reshape(b, c * z, h, w)


class PointPillarScatter(nn.Module):
    """Pillar features (SparseTensor on a (1, Y, X) grid, C channels) -> the dense pseudo-image [B, C, Y, X]."""

    def __init__(self, num_bev_features: int):
        super().__init__()
        self.num_bev_features = num_bev_features

    def forward(self, x: SparseTensor) -> torch.Tensor:
        return x.dense()[:, :, 0]
