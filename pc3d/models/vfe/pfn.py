"""The PointNet layer shared by the pillar and dynamic VFEs: Linear -> BatchNorm -> ReLU, then a max
over the points of each voxel."""
from __future__ import annotations

import torch
from torch import nn

from pc3d.sparse import BatchNorm1d


class PFNLayer(nn.Module):
    """Per-point Linear(in, out) + BatchNorm1d + ReLU. With `last=False` the voxel max is concatenated
    back to every point (out channels = 2 x units, PointPillars' PFN convention)."""

    def __init__(self, in_channels: int, out_channels: int, last: bool = True, norm_momentum: float = 0.01):
        super().__init__()
        self.last = last
        units = out_channels if last else out_channels // 2
        self.linear = nn.Linear(in_channels, units, bias=False)
        self.norm = BatchNorm1d(units, eps=1e-3, momentum=norm_momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, in] -> [N, units] per-point features (the caller reduces them per voxel)."""
        return torch.relu(self.norm(self.linear(x)))
