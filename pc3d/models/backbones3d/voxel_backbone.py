"""VoxelBackBone8x (SECOND's sparse backbone, OpenPCDet's stage layout): 8x downsampling."""
from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from torch import nn

from pc3d.models.backbones3d.blocks import post_act_block
from pc3d.sparse import SparseConv3d, SparseSequential, SparseTensor, SubMConv3d


class VoxelBackBone8x(nn.Module):
    """Stages of 16, 32, 64, 64 channels (`channels`); stages 2-4 start with a stride-2 sparse conv.
    norm_momentum: BatchNorm momentum (OpenPCDet's 0.01 suits long runs; short CPU runs need ~0.1, else
    the running statistics used in eval mode lag far behind the weights).

    With `out_channels` (128 in SECOND), a (3, 1, 1) / (2, 1, 1) conv further halves z for BEV.
    Returns the last stage and a dict of every stage's output (for multi-scale heads).
    """

    def __init__(self, in_channels: int, out_channels: int | None = 128,
                 channels: Sequence[int] = (16, 32, 64, 64), norm_momentum: float = 0.01):
        super().__init__()
        c1, c2, c3, c4 = channels
        block = partial(post_act_block, norm_momentum=norm_momentum)
        self.conv_input = SparseSequential(
            SubMConv3d(in_channels, c1, 3, padding=1, bias=False, indice_key="subm1"),
            nn.BatchNorm1d(c1, eps=1e-3, momentum=norm_momentum), nn.ReLU())
        self.conv1 = SparseSequential(block(c1, c1, 3, indice_key="subm1"))
        self.conv2 = SparseSequential(
            block(c1, c2, 3, stride=2, padding=1, indice_key="spconv2", conv_type="spconv"),
            block(c2, c2, 3, indice_key="subm2"),
            block(c2, c2, 3, indice_key="subm2"))
        self.conv3 = SparseSequential(
            block(c2, c3, 3, stride=2, padding=1, indice_key="spconv3", conv_type="spconv"),
            block(c3, c3, 3, indice_key="subm3"),
            block(c3, c3, 3, indice_key="subm3"))
        self.conv4 = SparseSequential(
            block(c3, c4, 3, stride=2, padding=(0, 1, 1), indice_key="spconv4", conv_type="spconv"),
            block(c4, c4, 3, indice_key="subm4"),
            block(c4, c4, 3, indice_key="subm4"))
        self.conv_out = z_halving(c4, out_channels, norm_momentum)
        self.out_channels = out_channels or c4

    def forward(self, x: SparseTensor) -> tuple[SparseTensor, dict[str, SparseTensor]]:
        return run_stages(self, x)


def z_halving(cin: int, out_channels: int | None, norm_momentum: float) -> SparseSequential | None:
    """SECOND's (3, 1, 1) / (2, 1, 1) conv that halves z before the BEV map (None: no such conv)."""
    if out_channels is None:
        return None
    return SparseSequential(
        SparseConv3d(cin, out_channels, (3, 1, 1), stride=(2, 1, 1), padding=0, bias=False, indice_key="spconv_down2"),
        nn.BatchNorm1d(out_channels, eps=1e-3, momentum=norm_momentum), nn.ReLU())


def run_stages(net: nn.Module, x: SparseTensor) -> tuple[SparseTensor, dict[str, SparseTensor]]:
    """conv_input -> conv1..conv4 (-> conv_out): the last output and every stage's output."""
    x1 = net.conv1(net.conv_input(x))
    x2 = net.conv2(x1)
    x3 = net.conv3(x2)
    x4 = net.conv4(x3)
    out = x4 if net.conv_out is None else net.conv_out(x4)
    return out, {"x_conv1": x1, "x_conv2": x2, "x_conv3": x3, "x_conv4": x4}
