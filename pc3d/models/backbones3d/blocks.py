"""Sparse conv blocks shared by every backbone (import them; never copy them)."""
from __future__ import annotations

import torch
from torch import nn

from pc3d.sparse import SparseConv3d, SparseInverseConv3d, SparseModule, SparseSequential, SubMConv3d


def post_act_block(in_channels: int, out_channels: int, kernel_size=3, indice_key: str | None = None,
                   stride=1, padding=0, conv_type: str = "subm", norm_eps: float = 1e-3,
                   norm_momentum: float = 0.01) -> SparseSequential:
    """conv -> BatchNorm1d -> ReLU, with conv_type 'subm', 'spconv' (strided) or 'inverseconv'."""
    if conv_type == "subm":
        conv = SubMConv3d(in_channels, out_channels, kernel_size, bias=False, indice_key=indice_key)
    elif conv_type == "spconv":
        conv = SparseConv3d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False,
                            indice_key=indice_key)
    elif conv_type == "inverseconv":
        conv = SparseInverseConv3d(in_channels, out_channels, kernel_size, bias=False, indice_key=indice_key)
    else:
        raise ValueError(f"conv_type must be 'subm', 'spconv' or 'inverseconv', not {conv_type!r}")
    return SparseSequential(conv, nn.BatchNorm1d(out_channels, eps=norm_eps, momentum=norm_momentum), nn.ReLU())


class SparseBasicBlock(SparseModule):
    """ResNet basic block on one set of sites: two SubM convs with BatchNorm, identity shortcut."""

    expansion = 1

    def __init__(self, channels: int, indice_key: str | None = None, norm_eps: float = 1e-3,
                 norm_momentum: float = 0.01):
        super().__init__()
        self.conv1 = SubMConv3d(channels, channels, 3, padding=1, bias=False, indice_key=indice_key)
        self.bn1 = nn.BatchNorm1d(channels, eps=norm_eps, momentum=norm_momentum)
        self.conv2 = SubMConv3d(channels, channels, 3, padding=1, bias=False, indice_key=indice_key)
        self.bn2 = nn.BatchNorm1d(channels, eps=norm_eps, momentum=norm_momentum)

    def forward(self, x):
        out = self.conv1(x)
        out = out.replace_feature(torch.relu(self.bn1(out.feats)))
        out = self.conv2(out)
        return out.replace_feature(torch.relu(self.bn2(out.feats) + x.feats))


def subm3(in_channels: int, out_channels: int, indice_key: str | None = None) -> SubMConv3d:
    """A bias-free SubM 3x3x3 conv (the default conv of ResidualBlock)."""
    return SubMConv3d(in_channels, out_channels, 3, bias=False, indice_key=indice_key)


class ResidualBlock(SparseModule):
    """Basic residual block: conv -> BN -> ReLU -> conv -> BN, + shortcut (Linear + BN when the width
    changes), ReLU. [N, in] -> [N, out], sites kept. conv(in, out, indice_key) builds each 3x3x3 conv:
    SubM by default, a depthwise-separable one in the separable U-Net (dsconv.DSResidualBlock)."""

    def __init__(self, in_channels: int, out_channels: int, indice_key: str | None = None, conv=subm3,
                 norm_eps: float = 1e-3, norm_momentum: float = 0.01):
        super().__init__()
        norm = {"eps": norm_eps, "momentum": norm_momentum}
        self.conv1 = SparseSequential(conv(in_channels, out_channels, indice_key),
                                      nn.BatchNorm1d(out_channels, **norm), nn.ReLU())
        self.conv2 = SparseSequential(conv(out_channels, out_channels, indice_key),
                                      nn.BatchNorm1d(out_channels, **norm))
        self.shortcut = (nn.Identity() if in_channels == out_channels else
                         nn.Sequential(nn.Linear(in_channels, out_channels, bias=False),
                                       nn.BatchNorm1d(out_channels, **norm)))

    def forward(self, x):
        out = self.conv2(self.conv1(x))
        return out.replace_feature((out.feats + self.shortcut(x.feats)).relu())
