"""VoxelResBackBone8x (CenterPoint's sparse backbone): VoxelBackBone8x with residual basic blocks."""
from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from torch import nn

from pc3d.models.backbones3d.blocks import SparseBasicBlock, post_act_block
from pc3d.models.backbones3d.voxel_backbone import run_stages, z_halving
from pc3d.sparse import SparseSequential, SparseTensor, SubMConv3d


class VoxelResBackBone8x(nn.Module):
    """Stages of 16, 32, 64, 128 channels (`channels`), two basic blocks each; stages 2-4 start with a
    stride-2 sparse conv. `out_channels` adds the (3, 1, 1) / (2, 1, 1) z-halving conv (None: skip it).
    Returns the last stage and a dict of every stage's output.
    """

    def __init__(self, in_channels: int, out_channels: int | None = 128,
                 channels: Sequence[int] = (16, 32, 64, 128), norm_momentum: float = 0.01):
        super().__init__()
        c1, c2, c3, c4 = channels
        block = partial(post_act_block, norm_momentum=norm_momentum)
        basic = partial(SparseBasicBlock, norm_momentum=norm_momentum)
        self.conv_input = SparseSequential(
            SubMConv3d(in_channels, c1, 3, padding=1, bias=False, indice_key="subm1"),
            nn.BatchNorm1d(c1, eps=1e-3, momentum=norm_momentum), nn.ReLU())
        self.conv1 = SparseSequential(
            basic(c1, indice_key="res1"),
            basic(c1, indice_key="res1"))
        self.conv2 = SparseSequential(
            block(c1, c2, 3, stride=2, padding=1, indice_key="spconv2", conv_type="spconv"),
            basic(c2, indice_key="res2"),
            basic(c2, indice_key="res2"))
        self.conv3 = SparseSequential(
            block(c2, c3, 3, stride=2, padding=1, indice_key="spconv3", conv_type="spconv"),
            basic(c3, indice_key="res3"),
            basic(c3, indice_key="res3"))
        self.conv4 = SparseSequential(
            block(c3, c4, 3, stride=2, padding=(0, 1, 1), indice_key="spconv4", conv_type="spconv"),
            basic(c4, indice_key="res4"),
            basic(c4, indice_key="res4"))
        self.conv_out = z_halving(c4, out_channels, norm_momentum)
        self.out_channels = out_channels or c4

    def forward(self, x: SparseTensor) -> tuple[SparseTensor, dict[str, SparseTensor]]:
        return run_stages(self, x)
