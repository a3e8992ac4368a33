"""E-3DSNN's spiking BEV backbone (BaseBEVBackbone_spike): SECOND's stages and upsampling with the neuron before
every conv and no ReLU after it (neuron -> conv -> BN), so each conv reads spike counts and the concatenated
output is the BatchNorms' real values (the anchor head reads them).

The released blocks pad with ZeroPad2d(1) before the neuron and convolve without padding; a spike of a zero is
zero, so padding the conv instead is the same network.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pc3d.models.bev.second_bev import staged_upsampled
from pc3d.models.snn.blocks import Neuron
from pc3d.models.snn.neuron import MultiSpike


class SpikingBEVBackbone(nn.Module):
    """BaseBEVBackbone's arguments (pc3d.models.bev.second_bev) and neuron: MultiSpike or nn.ReLU (the ANN twin
    in the spiking order). [B, in_channels, H, W] -> [B, sum(num_upsample_filters), H', W']."""

    def __init__(self, in_channels: int, layer_nums: Sequence[int] = (5, 5), layer_strides: Sequence[int] = (1, 2),
                 num_filters: Sequence[int] = (64, 128), upsample_strides: Sequence[float] = (1, 2),
                 num_upsample_filters: Sequence[int] = (128, 128), norm_momentum: float = 0.01,
                 neuron: Neuron = MultiSpike):
        super().__init__()

        def norm(c: int) -> nn.BatchNorm2d:
            return nn.BatchNorm2d(c, eps=1e-3, momentum=norm_momentum)

        self.blocks, self.deblocks = nn.ModuleList(), nn.ModuleList()
        cin = in_channels
        for n, stride, cout, up, cup in zip(layer_nums, layer_strides, num_filters, upsample_strides,
                                            num_upsample_filters, strict=True):
            layers = [neuron(), nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), norm(cout)]
            for _ in range(n):
                layers += [neuron(), nn.Conv2d(cout, cout, 3, padding=1, bias=False), norm(cout)]
            self.blocks.append(nn.Sequential(*layers))
            if up >= 1:
                conv = nn.ConvTranspose2d(cout, cup, int(up), stride=int(up), bias=False)
            else:
                conv = nn.Conv2d(cout, cup, round(1 / up), stride=round(1 / up), bias=False)
            self.deblocks.append(nn.Sequential(neuron(), conv, norm(cup)))
            cin = cout
        self.out_channels = sum(num_upsample_filters)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return staged_upsampled(self.blocks, self.deblocks, x)
