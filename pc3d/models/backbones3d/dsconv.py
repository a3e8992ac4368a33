"""Sparse Depthwise Separable Convolution (SDSC, Less is More / LiM3D) and its residual block.

SDSC = a per-channel (depthwise, groups = C) sparse conv followed by a 1x1 conv that mixes channels
(a Linear on the features: a 1x1 submanifold conv has no neighbours to gather). A k^3 conv from C to
C' costs k^3 C C' weights; SDSC costs k^3 C + C C'. Unlike the released LiM3D code, the depthwise
weights here are ordinary trainable parameters (they receive gradients and change).
"""
from __future__ import annotations

from torch import nn

from pc3d.models.backbones3d.blocks import ResidualBlock
from pc3d.sparse import SparseConv3d, SparseInverseConv3d, SparseSequential, SubMConv3d

_NORM = {"eps": 1e-3, "momentum": 0.01}


class SparseDepthwiseSeparableConv3d(SparseSequential):
    """Depthwise sparse conv (groups = in_channels) -> BatchNorm -> 1x1 conv (Linear, no bias).

    kind: "subm" (sites kept), "spconv" (strided: stride / padding apply) or "inverseconv" (restores the
    sites of the strided conv registered under `indice_key`). Features [N, in_channels] -> [N', out_channels].
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size=3, kind: str = "subm", stride=1,
                 padding=0, indice_key: str | None = None):
        if kind == "subm":
            depthwise = SubMConv3d(in_channels, in_channels, kernel_size, groups=in_channels, bias=False,
                                   indice_key=indice_key)
        elif kind == "spconv":
            depthwise = SparseConv3d(in_channels, in_channels, kernel_size, stride=stride, padding=padding,
                                     groups=in_channels, bias=False, indice_key=indice_key)
        elif kind == "inverseconv":
            depthwise = SparseInverseConv3d(in_channels, in_channels, kernel_size, groups=in_channels, bias=False,
                                            indice_key=indice_key)
        else:
            raise ValueError(f"kind must be 'subm', 'spconv' or 'inverseconv', not {kind!r}")
        super().__init__(depthwise, nn.BatchNorm1d(in_channels, **_NORM),
                         nn.Linear(in_channels, out_channels, bias=False))

    @property
    def depthwise(self) -> SubMConv3d:
        return self[0]

    @property
    def pointwise(self) -> nn.Linear:
        return self[2]


def ds_act_block(in_channels: int, out_channels: int, kernel_size=2, kind: str = "spconv", stride=1,
                 indice_key: str | None = None) -> SparseSequential:
    """SDSC -> BatchNorm -> ReLU: the separable counterpart of blocks.post_act_block (down / up sampling)."""
    return SparseSequential(
        SparseDepthwiseSeparableConv3d(in_channels, out_channels, kernel_size, kind, stride, indice_key=indice_key),
        nn.BatchNorm1d(out_channels, **_NORM), nn.ReLU())


def _sdsc3(in_channels: int, out_channels: int, indice_key: str | None = None) -> SparseDepthwiseSeparableConv3d:
    return SparseDepthwiseSeparableConv3d(in_channels, out_channels, 3, indice_key=indice_key)


class DSResidualBlock(ResidualBlock):
    """Residual block of two SDSC 3x3x3 convs (each followed by BatchNorm, ReLU after the sum);
    a Linear projection on the shortcut when the channel count changes. [N, in] -> [N, out], sites kept."""

    def __init__(self, in_channels: int, out_channels: int, indice_key: str | None = None):
        super().__init__(in_channels, out_channels, indice_key, conv=_sdsc3)
