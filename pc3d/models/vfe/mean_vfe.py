"""MeanVFE (SECOND): each voxel's feature is the mean of its points."""
from __future__ import annotations

from torch import nn

from pc3d.data.batch import sparse_input
from pc3d.sparse import SparseTensor


class MeanVFE(nn.Module):
    """batch (hard or dynamic voxels) -> SparseTensor of voxel means [V, 3 + C], spatial shape (Z, Y, X)."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.out_channels = in_channels

    def forward(self, batch: dict) -> SparseTensor:
        return sparse_input(batch, batch["points"].device)
