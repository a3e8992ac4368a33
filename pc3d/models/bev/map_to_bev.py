"""Sparse 3D features -> dense BEV maps: height compression (SECOND) and pillar scatter (PointPillars).

Both take the width and the spatial shape (Z, Y, X) of the sparse tensor they receive and expose
`out_channels`, the BEV map's width, so no config carries it.

Both return the map in channels-last memory (`torch.channels_last`: strides of [B, Y, X, C]), the order the
scatter writes in, so no transpose copy is made; every 2D conv after them then runs in oneDNN's NHWC
layout, which on CPU takes half the time of NCHW for the BEV backbones' forward + backward.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pc3d.errors import ConfigError
from pc3d.sparse import SparseTensor


class HeightCompression(nn.Module):
    """SparseTensor on a (Z, Y, X) grid with C channels -> dense [B, C * Z, Y, X] (z folded into channels)."""

    def __init__(self, in_channels: int, spatial_shape: Sequence[int]):
        super().__init__()
        self.out_channels = in_channels * int(spatial_shape[0])

    def forward(self, x: SparseTensor) -> torch.Tensor:
        dense = x.dense(channels_first=False)  # [B, Z, Y, X, C]
        b, z, h, w, c = dense.shape
        if c * z != self.out_channels:
            raise ConfigError(f"HeightCompression was built for {self.out_channels} BEV channels, got {c} x {z} z "
                              f"cells (spatial shape {x.spatial_shape}): the grid does not match the model's")
        # BEV channel c * Z + z (SECOND's order), laid out channels-last
        return dense.permute(0, 2, 3, 4, 1).reshape(b, h, w, c * z).permute(0, 3, 1, 2)


class PointPillarScatter(nn.Module):
    """Pillar features (SparseTensor on a (1, Y, X) grid, C channels) -> the dense pseudo-image [B, C, Y, X]."""

    def __init__(self, in_channels: int, spatial_shape: Sequence[int]):
        super().__init__()
        if int(spatial_shape[0]) != 1:
            raise ConfigError(f"PointPillarScatter needs a pillar grid one cell tall, got spatial shape "
                              f"{tuple(spatial_shape)} (voxel_size z must be the range height)")
        self.out_channels = in_channels

    def forward(self, x: SparseTensor) -> torch.Tensor:
        return x.dense(channels_first=False)[:, 0].permute(0, 3, 1, 2)  # [B, C, Y, X], channels-last
