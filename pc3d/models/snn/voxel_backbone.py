"""The spiking residual 3D backbone of the detectors: VoxelResBackBone8x (CenterPoint's) with spikes in
place of ReLUs, in E-3DSNN's order (spikes before each conv, residuals on pre-spike values).

    conv_input  encoding SubM 3^3 conv + BN (real-valued voxel features in)            stride 1
    conv1       2 SpikingBlocks                                                        stride 1
    conv2..4    SpikeConv 3^3 stride 2 -> 2 SpikingBlocks                              stride 2, 4, 8
    conv_out    SpikeConv (3, 1, 1) stride (2, 1, 1): z halved for the BEV map (out_channels None: none)

Same convention and stage names as backbones3d.voxel_backbone (forward_features -> (out, x_conv1..4),
output_shape), so CenterPoint / SECOND take it as their backbone_3d. `neuron=nn.ReLU`: the ANN twin.
"""
from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from torch import nn

from pc3d.models.backbones3d.blocks import batch_norm
from pc3d.models.backbones3d.voxel_backbone import VoxelStages, z_halving
from pc3d.models.snn.blocks import Neuron, SpikeConv, SpikingBlock
from pc3d.models.snn.neuron import MultiSpike
from pc3d.sparse import SparseSequential


class SpikingVoxelResBackBone8x(VoxelStages):
    """Stages of `channels` (16, 32, 64, 128), two SpikingBlocks each; in_channels / out_channels /
    norm_momentum as VoxelResBackBone8x; neuron: MultiSpike or nn.ReLU."""

    def __init__(self, in_channels: int, out_channels: int | None = 128,
                 channels: Sequence[int] = (16, 32, 64, 128), norm_momentum: float = 0.01,
                 neuron: Neuron = MultiSpike):
        super().__init__()
        c1, c2, c3, c4 = channels
        norm = batch_norm(norm_momentum)
        unit = partial(SpikeConv, neuron=neuron, norm=norm)
        block = partial(SpikingBlock, neuron=neuron, norm=norm)
        self.conv_input = SpikeConv(in_channels, c1, 3, "subm1", padding=1, neuron=nn.Identity, norm=norm)
        self.conv1 = SparseSequential(block(c1, indice_key="res1"), block(c1, indice_key="res1"))
        self.conv2 = SparseSequential(
            unit(c1, c2, 3, stride=2, padding=1, indice_key="spconv2", conv_type="spconv"),
            block(c2, indice_key="res2"),
            block(c2, indice_key="res2"))
        self.conv3 = SparseSequential(
            unit(c2, c3, 3, stride=2, padding=1, indice_key="spconv3", conv_type="spconv"),
            block(c3, indice_key="res3"),
            block(c3, indice_key="res3"))
        self.conv4 = SparseSequential(
            unit(c3, c4, 3, stride=2, padding=(0, 1, 1), indice_key="spconv4", conv_type="spconv"),
            block(c4, indice_key="res4"),
            block(c4, indice_key="res4"))
        self.conv_out = z_halving(unit, c4, out_channels)
        self.out_channels = out_channels or c4
