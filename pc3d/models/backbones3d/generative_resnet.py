"""A sparse ResNet encoder with a generative transposed-conv neck, the backbone of FCAF3D / TR3D (indoor
detection).

    voxels (stride 1) -> stem: SubM conv + residual blocks
    -> stage l = 1 .. L-1: kernel-2 stride-2 conv + residual blocks           (stride 2^l)
    -> neck, l = L-1 down to out_level + 1: generative transposed conv (kernel 2, stride 2) to stride 2^(l-1),
       plus the encoder's features where it has sites, + a residual block
    -> SparseTensor at stride 2^out_level, `out_channels` = channels[out_level]

Why generative: an object's centre is often where no point is (the middle of a table, under a bed's top).
A transposed conv that writes every child of every coarse site fills each coarse cell that holds points,
so the head has sites at the centres it must predict from. FCAF3D prunes the generated sites with a learned
score; indoor scenes at the CPU recipe's strides are small enough to keep them all.

Kernel-2 stride-2 convs keep the grids nested: a site at stride s covers exactly the voxels
[c s, (c + 1) s) of the input grid, so its centre is `range_min + (c + 0.5) s voxel`, and every encoder
site of a level is a child of a coarser one (what `add_at_sites` needs).
"""
from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from pc3d.sparse import SparseConvTranspose3d, SparseModule, SparseSequential, SparseTensor, add_at_sites

from .blocks import ResidualBlock, batch_norm, post_act_block


class GenerativeSparseResNet(SparseModule):
    """in_channels: voxel feature width. channels: widths of the stem (stride 1) and of each stage (stride 2,
    4, ...). blocks: residual blocks per stage and per neck step. out_level: the stride 2^out_level of the
    output. [N, in_channels] at stride 1 -> [M, channels[out_level]] at stride 2^out_level."""

    def __init__(self, in_channels: int, channels: Sequence[int] = (32, 48, 64, 96, 128), blocks: int = 1,
                 out_level: int = 2, norm_momentum: float = 0.1):
        super().__init__()
        if not 0 <= out_level < len(channels):
            raise ValueError(f"out_level must index channels (0..{len(channels) - 1}), got {out_level}")
        norm = batch_norm(norm_momentum)

        def residuals(width: int) -> list[ResidualBlock]:
            return [ResidualBlock(width, width, norm=norm) for _ in range(blocks)]

        self.stem = SparseSequential(post_act_block(in_channels, channels[0], 3, norm=norm), *residuals(channels[0]))
        self.stages = nn.ModuleList(
            SparseSequential(post_act_block(channels[level - 1], channels[level], 2, stride=2, conv_type="spconv",
                                            norm=norm), *residuals(channels[level]))
            for level in range(1, len(channels)))
        self.ups = nn.ModuleList(  # ups[i] returns from level i + 1 to level i
            SparseSequential(SparseConvTranspose3d(channels[level + 1], channels[level], 2, stride=2, bias=False),
                             norm(channels[level]), nn.ReLU())
            for level in range(out_level, len(channels) - 1))
        self.merges = nn.ModuleList(SparseSequential(*residuals(channels[level]))
                                    for level in range(out_level, len(channels) - 1))
        self.out_level, self.out_channels = out_level, channels[out_level]

    def forward(self, x: SparseTensor) -> SparseTensor:
        levels = [self.stem(x)]
        for stage in self.stages:
            levels.append(stage(levels[-1]))
        y = levels[-1]
        for level in reversed(range(self.out_level, len(levels) - 1)):
            i = level - self.out_level
            y = self.merges[i](add_at_sites(self.ups[i](y), levels[level]))
        return y
