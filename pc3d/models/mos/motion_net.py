"""The 4D motion network of 4DMOS / InsMOS: a sparse U-Net over (t, z, y, x) voxels of a scan window.

    stem     SubM (1, 5, 5, 5): kernel 5 in space, 1 in time, in -> stem_channels           stride 1
    enc i    down (1, k, k, k) stride (1, 2, 2, 2) -> residual block(s) of channels[i]      stride 2^(i+1) in space
    dec j    up: inverse of down{i} -> cat(skip of stride 2^i) -> residual block(s) of dec_channels[j]
    out      features [V, dec_channels[-1]] on the input sites

Time is never strided: every time slice keeps its own sites at every scale, and the residual blocks'
SubM convs (kernel time_kernel x 3 x 3 x 3) mix neighbouring scans. With the defaults (stem 8, channels
8, 16, 32, 64, dec_channels 64, 32, 16, 8, one block per stage) this is 4DMOS's MinkUNet14.
Coordinates are the TemporalVoxelizer's (b, t, z, y, x), spatial_shape (T, Z, Y, X).
The blocks are pc3d's (`backbones3d.blocks`): conv -> BatchNorm -> ReLU, residual blocks.
"""
from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from torch import nn

from pc3d.models.backbones3d.blocks import ResidualBlock, batch_norm, post_act_block, sparse_conv
from pc3d.models.backbones3d.unet import unet_forward
from pc3d.sparse import SparseModule, SparseSequential, SparseTensor


class MotionUNet(SparseModule):
    """4D sparse U-Net; returns a SparseTensor on the input sites with `out_channels` features.

    in_channels: voxel feature width (the mean point columns: x, y, z, intensity, time).
    stem_channels: width of the stem (stride 1). channels: encoder widths, one stage per entry (each
    halves space); dec_channels: decoder widths, deepest first (same length). depth: residual blocks per
    stage. stem_kernel, down_kernel: spatial kernel of the stem and of the strided / inverse convs (their
    time kernel is 1). time_kernel: time extent of the residual blocks' SubM kernels (space: 3).
    norm_momentum: BatchNorm momentum (short CPU runs: 0.1).
    """

    def __init__(self, in_channels: int = 5, stem_channels: int = 8, channels: Sequence[int] = (8, 16, 32, 64),
                 dec_channels: Sequence[int] = (64, 32, 16, 8), depth: int = 1, stem_kernel: int = 5,
                 down_kernel: int = 2, time_kernel: int = 3, norm_momentum: float = 0.1, act=nn.ReLU):
        super().__init__()
        if len(channels) != len(dec_channels) or not channels:
            raise ValueError(f"channels and dec_channels need one entry per stage, got {list(channels)} and "
                             f"{list(dec_channels)}")
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        parts = {"ndim": 4, "act": act, "norm": batch_norm(norm_momentum)}
        subm = partial(sparse_conv, "subm", 4, kernel_size=(time_kernel, 3, 3, 3))
        block = partial(ResidualBlock, conv=subm, **parts)
        space_only = (1, down_kernel, down_kernel, down_kernel)

        def stage(cin: int, cout: int, key: str) -> SparseSequential:
            return SparseSequential(*[block(cin if k == 0 else cout, cout, indice_key=key) for k in range(depth)])

        self.stem = post_act_block(in_channels, stem_channels, (1, stem_kernel, stem_kernel, stem_kernel),
                                   indice_key="stem", **parts)
        widths = [stem_channels, *channels]
        self.down, self.enc = nn.ModuleList(), nn.ModuleList()
        for i, width in enumerate(channels):
            self.down.append(post_act_block(widths[i], widths[i], space_only, indice_key=f"down{i}",
                                            stride=(1, 2, 2, 2), conv_type="spconv", **parts))
            self.enc.append(stage(widths[i], width, f"subm{i + 1}"))
        self.up, self.dec = nn.ModuleList(), nn.ModuleList()
        width = channels[-1]
        for j, out in enumerate(dec_channels):  # deepest first: stage j undoes down{i}
            i = len(channels) - 1 - j
            self.up.append(post_act_block(width, out, space_only, indice_key=f"down{i}", conv_type="inverseconv",
                                          **parts))
            self.dec.append(stage(out + widths[i], out, f"subm{i}"))
            width = out
        self.dec_channels = list(dec_channels)  # decoder widths, deepest first ("dec{S-1}" .. "dec0")
        self.out_channels = width

    def forward(self, x: SparseTensor) -> SparseTensor:
        return self.forward_features(x)[0]

    def forward_features(self, x: SparseTensor) -> tuple[SparseTensor, dict[str, SparseTensor]]:
        """The output and every stage's tensor: "enc{i}" / "dec{i}" at spatial stride 2^i (dec0 is the output)."""
        return unet_forward(self, x)
