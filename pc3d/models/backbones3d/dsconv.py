"""Sparse Depthwise Separable Convolution (SDSC, Less is More / LiM3D) and its residual block.

SDSC = a per-channel (depthwise, groups = C) sparse conv followed by a 1x1 conv that mixes channels
(a Linear on the features: a 1x1 submanifold conv has no neighbours to gather). A k^3 conv from C to
C' costs k^3 C C' weights; SDSC costs k^3 C + C C'. Unlike the released LiM3D code, the depthwise
weights here are ordinary trainable parameters (they receive gradients and change).
`ndim`, `act` and `norm` as in blocks.py.
"""
from __future__ import annotations

from functools import partial

from torch import nn

from pc3d.models.backbones3d.blocks import BATCH_NORM, Act, Norm, ResidualBlock, sparse_conv
from pc3d.sparse import Linear, SparseConvolution, SparseSequential


class SparseDepthwiseSeparableConv(SparseSequential):
    """Depthwise sparse conv (groups = in_channels) -> norm -> 1x1 conv (Linear, no bias).

    kind: "subm" (sites kept), "spconv" (strided: stride / padding apply) or "inverseconv" (restores the
    sites of the strided conv registered under `indice_key`). Features [N, in_channels] -> [N', out_channels].
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size=3, kind: str = "subm", stride=1,
                 padding=0, indice_key: str | None = None, ndim: int = 3, norm: Norm = BATCH_NORM):
        depthwise = sparse_conv(kind, ndim, in_channels, in_channels, kernel_size, indice_key, stride, padding,
                                groups=in_channels)
        super().__init__(depthwise, norm(in_channels), Linear(in_channels, out_channels, bias=False))

    @property
    def depthwise(self) -> SparseConvolution:
        return self[0]

    @property
    def pointwise(self) -> Linear:
        return self[2]


def ds_act_block(in_channels: int, out_channels: int, kernel_size=2, indice_key: str | None = None, stride=1,
                 padding=0, conv_type: str = "spconv", ndim: int = 3, act: Act = nn.ReLU,
                 norm: Norm = BATCH_NORM) -> SparseSequential:
    """SDSC -> norm -> act: the separable counterpart of blocks.post_act_block (same arguments)."""
    conv = SparseDepthwiseSeparableConv(in_channels, out_channels, kernel_size, conv_type, stride, padding, indice_key,
                                        ndim, norm)
    return SparseSequential(conv, norm(out_channels), act())


class DSResidualBlock(ResidualBlock):
    """Residual block of two SDSC 3^ndim convs (each followed by norm, act after the sum); a Linear
    projection on the shortcut when the channel count changes. [N, in] -> [N, out], sites kept."""

    def __init__(self, in_channels: int, out_channels: int, indice_key: str | None = None, ndim: int = 3,
                 act: Act = nn.ReLU, norm: Norm = BATCH_NORM):
        sdsc = partial(SparseDepthwiseSeparableConv, kernel_size=3, ndim=ndim, norm=norm)
        super().__init__(in_channels, out_channels, indice_key, conv=sdsc, ndim=ndim, act=act, norm=norm)
