"""BEV backbone with residual stages (OpenPCDet's BaseBEVResBackbone, used by DSVT): BaseBEVBackbone's
layout with ResNet basic blocks in place of plain convs."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pc3d.models.bev.second_bev import _up, staged_upsampled


class BasicBlock2d(nn.Module):
    """ResNet basic block: two 3x3 convs + identity (a strided 1x1 conv when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int = 1, momentum: float = 0.01):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(cout, eps=1e-3, momentum=momentum), nn.ReLU(),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout, eps=1e-3, momentum=momentum))
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout, eps=1e-3, momentum=momentum))
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class BaseBEVResBackbone(nn.Module):
    """Stage i: a basic block of stride layer_strides[i] to num_filters[i] channels, then layer_nums[i] basic
    blocks; each stage's output is upsampled by upsample_strides[i] to num_upsample_filters[i] channels and
    the maps are concatenated: [B, in_channels, H, W] -> [B, out_channels = sum(num_upsample_filters), H', W']."""

    def __init__(self, in_channels: int, layer_nums: Sequence[int] = (1, 2, 2),
                 layer_strides: Sequence[int] = (1, 2, 2),
                 num_filters: Sequence[int] = (128, 128, 256), upsample_strides: Sequence[float] = (1, 2, 4),
                 num_upsample_filters: Sequence[int] = (128, 128, 128), norm_momentum: float = 0.01):
        super().__init__()
        self.blocks, self.deblocks = nn.ModuleList(), nn.ModuleList()
        cin = in_channels
        for n, stride, cout, up, cup in zip(layer_nums, layer_strides, num_filters, upsample_strides,
                                            num_upsample_filters, strict=True):
            blocks = [BasicBlock2d(cin, cout, stride, norm_momentum)]
            blocks += [BasicBlock2d(cout, cout, 1, norm_momentum) for _ in range(n)]
            self.blocks.append(nn.Sequential(*blocks))
            self.deblocks.append(_up(cout, cup, up, norm_momentum))
            cin = cout
        self.out_channels = sum(num_upsample_filters)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return staged_upsampled(self.blocks, self.deblocks, x)
