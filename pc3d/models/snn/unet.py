"""E-3DSNN's spiking segmentation U-Net: the SparseUNet stage list (backbones3d/unet.py) with spiking units.

    stem     encoding SubM 3^3 conv + BN (real-valued voxel features in), SpikingBlock     stride 1
    enc i    SpikeConv kernel 2 stride 2 (indice_key down{i}) -> enc_depths[i] SpikingBlocks  stride 2^(i+1)
    dec i    SpikeConv inverse of down{i} -> cat(skip) -> dec_depths[i] SpikingBlocks (the first one narrows)
    out      pre-spike features [V, out_channels] on the input sites

E-3DSNN's widths: channels (64, 128, 128, 256), two blocks per stage. `neuron=nn.ReLU`: the ANN twin.
A backbone of pc3d.models.segmentors.SparseSegmentor (forward -> SparseTensor, forward_features, out_channels).
"""
from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from pc3d.models.backbones3d.blocks import batch_norm
from pc3d.models.backbones3d.unet import unet_forward
from pc3d.models.snn.blocks import Neuron, SpikeConv, SpikingBlock
from pc3d.models.snn.neuron import MultiSpike
from pc3d.sparse import SparseModule, SparseSequential, SparseTensor


class SpikingUNet(SparseModule):
    """in_channels: voxel feature width; channels: [stem, enc 1 .. enc S]; enc_depths, dec_channels (deepest
    first), dec_depths: per stage (S each); neuron: MultiSpike or nn.ReLU; norm_momentum of BatchNorm."""

    def __init__(self, in_channels: int = 4, channels: Sequence[int] = (64, 128, 128, 256),
                 enc_depths: Sequence[int] = (2, 2, 2), dec_channels: Sequence[int] = (128, 128, 64),
                 dec_depths: Sequence[int] = (2, 2, 2), neuron: Neuron = MultiSpike, norm_momentum: float = 0.1):
        super().__init__()
        stages = len(channels) - 1
        if not (len(enc_depths) == len(dec_channels) == len(dec_depths) == stages) or stages < 1:
            raise ValueError("need len(channels) - 1 = len(enc_depths) = len(dec_channels) = len(dec_depths) >= 1")
        parts = {"neuron": neuron, "norm": batch_norm(norm_momentum)}
        self.stem = SparseSequential(
            SpikeConv(in_channels, channels[0], 3, "subm0", padding=1, neuron=nn.Identity, norm=parts["norm"]),
            SpikingBlock(channels[0], indice_key="subm0", **parts))
        self.down, self.enc = nn.ModuleList(), nn.ModuleList()
        for i in range(stages):
            self.down.append(SpikeConv(channels[i], channels[i + 1], 2, f"down{i}", stride=2, conv_type="spconv",
                                       **parts))
            self.enc.append(SparseSequential(*[SpikingBlock(channels[i + 1], indice_key=f"subm{i + 1}", **parts)
                                               for _ in range(enc_depths[i])]))
        self.up, self.dec = nn.ModuleList(), nn.ModuleList()
        width = channels[-1]
        for j in range(stages):  # deepest first: decoder stage j restores the sites of down{stages - 1 - j}
            i = stages - 1 - j
            self.up.append(SpikeConv(width, dec_channels[j], 2, f"down{i}", conv_type="inverseconv", **parts))
            blocks = [SpikingBlock(dec_channels[j] + channels[i], dec_channels[j], f"subm{i}", **parts)]
            blocks += [SpikingBlock(dec_channels[j], indice_key=f"subm{i}", **parts) for _ in range(dec_depths[j] - 1)]
            self.dec.append(SparseSequential(*blocks))
            width = dec_channels[j]
        self.out_channels = width

    def forward(self, x: SparseTensor) -> SparseTensor:
        return self.forward_features(x)[0]

    def forward_features(self, x: SparseTensor) -> tuple[SparseTensor, dict[str, SparseTensor]]:
        return unet_forward(self, x)
