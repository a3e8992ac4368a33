"""E-3DSNN's spiking segmentation U-Net: SparseUNet's stage list (backbones3d/unet.py) built of spiking units.

    stem     encoding SubM 3^3 conv + BN (real-valued voxel features in), SpikingBlock     stride 1
    enc i    SpikeConv kernel 2 stride 2 (indice_key down{i}) -> enc_depths[i] SpikingBlocks  stride 2^(i+1)
    dec i    SpikeConv inverse of down{i} -> cat(skip) -> dec_depths[i] SpikingBlocks (the first one narrows)
    out      pre-spike features [V, out_channels] on the input sites

E-3DSNN's widths: channels (64, 128, 128, 256), two blocks per stage. `neuron=nn.ReLU`: the ANN twin.
A backbone of pc3d.models.segmentors.SparseSegmentor (forward -> SparseTensor, forward_features, out_channels).
"""
from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from torch import nn

from pc3d.models.backbones3d.blocks import batch_norm
from pc3d.models.backbones3d.unet import SparseUNet
from pc3d.models.snn.blocks import Neuron, SpikeConv, SpikingBlock
from pc3d.models.snn.neuron import MultiSpike
from pc3d.sparse import SparseSequential


class SpikingUNet(SparseUNet):
    """in_channels: voxel feature width; channels: [stem, enc 1 .. enc S]; enc_depths, dec_channels (deepest
    first), dec_depths: per stage (S each); neuron: MultiSpike or nn.ReLU; norm_momentum of BatchNorm."""

    def __init__(self, in_channels: int = 4, channels: Sequence[int] = (64, 128, 128, 256),
                 enc_depths: Sequence[int] = (2, 2, 2), dec_channels: Sequence[int] = (128, 128, 64),
                 dec_depths: Sequence[int] = (2, 2, 2), neuron: Neuron = MultiSpike, norm_momentum: float = 0.1):
        parts = {"neuron": neuron, "norm": batch_norm(norm_momentum)}

        def stem(cin: int, cout: int) -> SparseSequential:
            return SparseSequential(SpikeConv(cin, cout, 3, "subm0", padding=1, neuron=nn.Identity, norm=parts["norm"]),
                                    SpikingBlock(cout, indice_key="subm0", **parts))

        super().__init__(in_channels, channels, enc_depths, dec_channels, dec_depths,
                         block=partial(SpikingBlock, **parts), resample=partial(SpikeConv, kernel_size=2, **parts),
                         stem=stem)
