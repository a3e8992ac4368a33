"""E-3DSNN's spiking segmentation U-Net: SparseUNet's stage list (backbones3d/unet.py) built of spiking units.

    stem     encoding SubM 3^3 conv + BN (real-valued voxel features in), SpikingBlock     stride 1
    enc i    SpikeConv kernel 2 stride 2 (indice_key down{i}) -> enc_depths[i] SpikingBlocks  stride 2^(i+1)
    dec i    SpikeConv inverse of down{i} -> cat(skip) -> dec_depths[i] SpikingBlocks (the first one narrows)
    out      pre-spike features [V, out_channels] on the input sites

E-3DSNN's widths: channels (64, 128, 128, 256), two blocks per stage. `neuron=nn.ReLU`: the ANN twin.
A backbone of pc3d.models.segmentors.SparseSegmentor (forward -> SparseTensor, forward_features, out_channels).

E-3DSNN's network as released (semseg-3dsnn-v1m1-0-base, about 20 M parameters): `stem="convs"` (the encoding
conv and two SpikeConvs, no residual), `block="basic"` (SpikingBasicBlocks, three convs each), `decoder="fuse"`
(each decoder stage one SpikingFuse: the inverse conv's output plus two 1x1 SpikeConvs of cat(up, skip)), with
channels (64, 64, 128, 128, 256), enc_depths (2, 2, 2, 2), dec_channels (256, 256, 256, 256), dec_depths
(1, 1, 1, 1). The defaults (a SpikingBlock stem and SpikingBlocks throughout) are what the simulated recipe was
measured with.
"""
from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from torch import nn

from pc3d.errors import ConfigError
from pc3d.models.backbones3d.blocks import batch_norm
from pc3d.models.backbones3d.unet import SparseUNet
from pc3d.models.snn.blocks import RESIDUAL_BLOCKS, Neuron, SpikeConv, SpikingBlock, SpikingFuse
from pc3d.models.snn.neuron import MultiSpike
from pc3d.sparse import SparseSequential


class SpikingUNet(SparseUNet):
    """in_channels: voxel feature width; channels: [stem, enc 1 .. enc S]; enc_depths, dec_channels (deepest
    first), dec_depths: per stage (S each); neuron: MultiSpike or nn.ReLU; norm_momentum of BatchNorm;
    stem: "block" | "convs", block: "pair" | "basic", decoder: "blocks" | "fuse" (see the module docstring)."""

    def __init__(self, in_channels: int = 4, channels: Sequence[int] = (64, 128, 128, 256),
                 enc_depths: Sequence[int] = (2, 2, 2), dec_channels: Sequence[int] = (128, 128, 64),
                 dec_depths: Sequence[int] = (2, 2, 2), neuron: Neuron = MultiSpike, norm_momentum: float = 0.1,
                 stem: str = "block", block: str = "pair", decoder: str = "blocks"):
        if stem not in ("block", "convs") or block not in RESIDUAL_BLOCKS or decoder not in ("blocks", "fuse"):
            raise ConfigError(f"SpikingUNet: stem 'block' | 'convs', block {sorted(RESIDUAL_BLOCKS)}, decoder "
                              f"'blocks' | 'fuse'; got {stem!r}, {block!r}, {decoder!r}")
        if decoder == "fuse" and any(depth != 1 for depth in dec_depths):
            raise ConfigError(f"SpikingUNet: decoder 'fuse' is one SpikingFuse per stage, dec_depths all 1; got "
                              f"{tuple(dec_depths)}")
        parts = {"neuron": neuron, "norm": batch_norm(norm_momentum)}
        enc_block = partial(RESIDUAL_BLOCKS[block], **parts)

        def first(cin: int, cout: int) -> SparseSequential:
            encoding = SpikeConv(cin, cout, 3, "subm0", padding=1, neuron=nn.Identity, norm=parts["norm"])
            if stem == "block":
                return SparseSequential(encoding, SpikingBlock(cout, indice_key="subm0", **parts))
            convs = [SpikeConv(cout, cout, 3, "subm0", padding=1, **parts) for _ in range(2)]
            return SparseSequential(encoding, *convs)

        dec_block = partial(SpikingFuse, **parts) if decoder == "fuse" else partial(SpikingBlock, **parts)
        super().__init__(in_channels, channels, enc_depths, dec_channels, dec_depths, block=enc_block,
                         resample=partial(SpikeConv, kernel_size=2, **parts), stem=first, dec_block=dec_block)
