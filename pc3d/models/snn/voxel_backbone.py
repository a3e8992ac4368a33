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
from pc3d.models.backbones3d.voxel_res_backbone import VoxelResBackBone8x
from pc3d.models.snn.blocks import Neuron, SpikeConv, SpikingBlock
from pc3d.models.snn.neuron import MultiSpike


class SpikingVoxelResBackBone8x(VoxelResBackBone8x):
    """Stages of `channels` (16, 32, 64, 128), two SpikingBlocks each; in_channels / out_channels /
    norm_momentum / z_padding as VoxelResBackBone8x; neuron: MultiSpike or nn.ReLU."""

    def __init__(self, in_channels: int, out_channels: int | None = 128,
                 channels: Sequence[int] = (16, 32, 64, 128), norm_momentum: float = 0.01,
                 neuron: Neuron = MultiSpike, z_padding: int = 0):
        norm = batch_norm(norm_momentum)
        super().__init__(in_channels, out_channels, channels, block=partial(SpikeConv, neuron=neuron, norm=norm),
                         basic=partial(SpikingBlock, neuron=neuron, norm=norm),
                         first=partial(SpikeConv, neuron=nn.Identity, norm=norm), z_padding=z_padding)
