"""SECOND-style 2D BEV backbone: strided conv stages, each upsampled (deconv) to a common stride and
concatenated (the FPN-like neck of SECOND / PointPillars / CenterPoint)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def _conv(cin: int, cout: int, stride: int = 1, momentum: float = 0.01) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(cout, eps=1e-3, momentum=momentum), nn.ReLU()]


def _up(cin: int, cout: int, stride: float, momentum: float = 0.01) -> nn.Sequential:
    if stride >= 1:
        s = int(stride)
        conv = nn.ConvTranspose2d(cin, cout, s, stride=s, bias=False)
    else:
        s = int(round(1 / stride))
        conv = nn.Conv2d(cin, cout, s, stride=s, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(cout, eps=1e-3, momentum=momentum), nn.ReLU())


def staged_upsampled(blocks: nn.ModuleList, deblocks: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
    """The stages in turn, each stage's output upsampled by its deblock; the upsampled maps concatenated."""
    ups = []
    for block, deblock in zip(blocks, deblocks, strict=True):
        x = block(x)
        ups.append(deblock(x))
    return torch.cat(ups, 1) if len(ups) > 1 else ups[0]


class BaseBEVBackbone(nn.Module):
    """Stage i: a conv of stride layer_strides[i] to num_filters[i] channels, then layer_nums[i] convs;
    its output is upsampled by upsample_strides[i] to num_upsample_filters[i] channels; the upsampled
    maps are concatenated: [B, in_channels, H, W] -> [B, out_channels = sum(num_upsample_filters), H', W'].
    """

    def __init__(self, in_channels: int, layer_nums: Sequence[int] = (5, 5), layer_strides: Sequence[int] = (1, 2),
                 num_filters: Sequence[int] = (128, 256), upsample_strides: Sequence[float] = (1, 2),
                 num_upsample_filters: Sequence[int] = (256, 256), norm_momentum: float = 0.01):
        super().__init__()
        self.blocks = nn.ModuleList()
        self.deblocks = nn.ModuleList()
        cin = in_channels
        for n, stride, cout, up, cup in zip(layer_nums, layer_strides, num_filters, upsample_strides,
                                            num_upsample_filters, strict=True):
            layers = _conv(cin, cout, stride, norm_momentum)
            for _ in range(n):
                layers += _conv(cout, cout, 1, norm_momentum)
            self.blocks.append(nn.Sequential(*layers))
            self.deblocks.append(_up(cout, cup, up, norm_momentum))
            cin = cout
        self.out_channels = sum(num_upsample_filters)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return staged_upsampled(self.blocks, self.deblocks, x)
