"""VoxelResBackBone8x (CenterPoint's sparse backbone): VoxelBackBone8x with residual basic blocks.
Same convention as voxel_backbone.py: forward -> SparseTensor, forward_features -> (SparseTensor, stages)."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

from torch import nn

from pc3d.models.backbones3d.blocks import Act, Norm, SparseBasicBlock, batch_norm, post_act_block
from pc3d.models.backbones3d.voxel_backbone import VoxelStages, z_halving
from pc3d.sparse import SparseModule, SparseSequential


class VoxelResBackBone8x(VoxelStages):
    """Stages of 16, 32, 64, 128 channels (`channels`), two basic blocks each; stages 2-4 start with a
    stride-2 sparse conv. `out_channels` adds the (3, 1, 1) / (2, 1, 1) z-halving conv (None: skip it).
    norm_momentum, act, norm: as in VoxelBackBone8x. block, basic, first: other units for the same stages
    (the spiking backbone's): block with post_act_block's signature (the strided convs and z-halving), basic(c,
    indice_key=...) a residual block, first with post_act_block's signature for the input conv (default: block).
    """

    def __init__(self, in_channels: int, out_channels: int | None = 128,
                 channels: Sequence[int] = (16, 32, 64, 128), norm_momentum: float = 0.01, act: Act = nn.ReLU,
                 norm: Norm | None = None, block: Callable[..., SparseModule] | None = None,
                 basic: Callable[..., SparseModule] | None = None, first: Callable[..., SparseModule] | None = None,
                 z_padding: int = 0):
        super().__init__()
        self._set_z_padding(z_padding)
        c1, c2, c3, c4 = channels
        parts = {"act": act, "norm": norm or batch_norm(norm_momentum)}
        block = block or partial(post_act_block, **parts)
        basic = basic or partial(SparseBasicBlock, **parts)
        self.conv_input = (first or block)(in_channels, c1, 3, indice_key="subm1", padding=1)
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
        self.conv_out = z_halving(block, c4, out_channels)
        self.out_channels = out_channels or c4
        self.stage_channels = (c1, c2, c3, c4)
