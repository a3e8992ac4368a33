"""The spiking 3D backbones of the detectors, in E-3DSNN's order (spikes before each conv, residuals on pre-spike
values).

SpikingVoxelResBackBone8x: VoxelResBackBone8x (CenterPoint's) with spikes in place of ReLUs.

    conv_input  encoding SubM 3^3 conv + BN (real-valued voxel features in)            stride 1
    conv1       2 SpikingBlocks                                                        stride 1
    conv2..4    SpikeConv 3^3 stride 2 -> 2 SpikingBlocks                              stride 2, 4, 8
    conv_out    SpikeConv (3, 1, 1) stride (2, 1, 1): z halved for the BEV map (out_channels None: none)

SpikingVoxelBackBone8x: E-3DSNN's released KITTI backbone (VoxelBackBone8x_3dv_snn, under its Voxel R-CNN):

    conv_input  SubM 3^3 conv + BN (real-valued voxel features in), then 2 SpikeConvs                  stride 1
    conv1       1 SpikeConv                                                                            stride 1
    conv2..4    SpikeConv 3^3 stride 2 (padding 1 on every axis) -> 2 SpikingBasicBlocks (three convs)  stride 2, 4, 8
    conv_out    (3, 1, 1) stride (2, 1, 1) conv + BN on conv4's real values, then the neuron: the BEV map is spikes

Same convention and stage names as backbones3d.voxel_backbone (forward_features -> (out, x_conv1..4),
output_shape, stage_channels), so CenterPoint / SECOND / Voxel R-CNN take them as their backbone_3d.
`neuron=nn.ReLU`: the ANN twin.
"""
from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from torch import nn

from pc3d.models.backbones3d.blocks import batch_norm
from pc3d.models.backbones3d.voxel_backbone import VoxelStages
from pc3d.models.backbones3d.voxel_res_backbone import VoxelResBackBone8x
from pc3d.models.snn.blocks import Neuron, SpikeConv, SpikingBasicBlock, SpikingBlock
from pc3d.models.snn.neuron import MultiSpike
from pc3d.sparse import SparseSequential


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


class SpikingVoxelBackBone8x(VoxelStages):
    """Stages of `channels` (16, 32, 64, 64) as the module docstring (1.72 M parameters at KITTI's 4 point
    columns); out_channels: of conv_out (None: no conv_out, the last stage's real values go out); norm_momentum
    and z_padding as VoxelBackBone8x (the released grid adds one z cell); neuron: MultiSpike or nn.ReLU."""

    def __init__(self, in_channels: int, out_channels: int | None = 128,
                 channels: Sequence[int] = (16, 32, 64, 64), norm_momentum: float = 0.01,
                 neuron: Neuron = MultiSpike, z_padding: int = 0):
        super().__init__()
        self._set_z_padding(z_padding)
        norm = batch_norm(norm_momentum)
        conv = partial(SpikeConv, neuron=neuron, norm=norm)
        basic = partial(SpikingBasicBlock, neuron=neuron, norm=norm)
        c1, c2, c3, c4 = channels
        self.conv_input = SparseSequential(
            SpikeConv(in_channels, c1, 3, "subm1", padding=1, neuron=nn.Identity, norm=norm),
            conv(c1, c1, 3, "subm1", padding=1),
            conv(c1, c1, 3, "subm1", padding=1))
        self.conv1 = SparseSequential(conv(c1, c1, 3, "subm1", padding=1))
        self.conv2, self.conv3, self.conv4 = (
            SparseSequential(conv(cin, cout, 3, f"spconv{k}", stride=2, padding=1, conv_type="spconv"),
                             basic(cout, indice_key=f"subm{k}"), basic(cout, indice_key=f"subm{k}"))
            for k, cin, cout in ((2, c1, c2), (3, c2, c3), (4, c3, c4)))
        self.conv_out = None if out_channels is None else SparseSequential(
            SpikeConv(c4, out_channels, (3, 1, 1), "spconv_down2", stride=(2, 1, 1), conv_type="spconv",
                      neuron=nn.Identity, norm=norm),
            neuron())
        self.out_channels = out_channels or c4
        self.stage_channels = (c1, c2, c3, c4)
