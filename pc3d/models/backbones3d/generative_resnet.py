"""A sparse ResNet encoder with a generative transposed-conv neck, the backbone of FCAF3D / TR3D (indoor
detection).

    voxels (stride 1) -> stem: SubM conv + residual blocks
    -> stage l = 1 .. L-1: kernel-2 stride-2 conv + residual blocks           (stride 2^l)
    -> neck, l = L-1 down to out_level + 1: generative transposed conv (kernel 2, stride 2) to stride 2^(l-1),
       plus the encoder's features where it has sites, + a residual block
    -> SparseTensor at stride 2^out_level, `out_channels` = channels[out_level]; or, with several out levels
       (TR3D's two head levels), one SparseTensor per level, finest first, each through its own SubM conv to
       `head_channels` (TR3D's out blocks) so that one head reads them all

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
    4, ...). blocks: residual blocks per level (one number for every level and neck step, or one per level: the
    encoder's, the neck then takes neck_blocks). out_level: the stride 2^out_level of the output, or a list of
    levels (several outputs, finest first, each taken to head_channels). [N, in_channels] at stride 1 ->
    [M, channels[out_level]] at stride 2^out_level (or the list)."""

    def __init__(self, in_channels: int, channels: Sequence[int] = (32, 48, 64, 96, 128),
                 blocks: int | Sequence[int] = 1, out_level: int | Sequence[int] = 2, norm_momentum: float = 0.1,
                 neck_blocks: int | None = None, head_channels: int | None = None):
        super().__init__()
        self.multi_level = not isinstance(out_level, int)
        self.out_levels = sorted(int(v) for v in out_level) if self.multi_level else [int(out_level)]
        if not self.out_levels or not all(0 <= v < len(channels) for v in self.out_levels):
            raise ValueError(f"out_level must index channels (0..{len(channels) - 1}), got {out_level}")
        if self.multi_level and head_channels is None:
            raise ValueError("several out levels need head_channels (one width for the head to read them all)")
        depths = [blocks] * len(channels) if isinstance(blocks, int) else list(blocks)
        if len(depths) != len(channels):
            raise ValueError(f"blocks: one number, or one per level ({len(channels)}), got {blocks}")
        neck_depth = (blocks if isinstance(blocks, int) else 1) if neck_blocks is None else neck_blocks
        norm = batch_norm(norm_momentum)

        def residuals(width: int, n: int) -> list[ResidualBlock]:
            return [ResidualBlock(width, width, norm=norm) for _ in range(n)]

        self.stem = SparseSequential(post_act_block(in_channels, channels[0], 3, norm=norm),
                                     *residuals(channels[0], depths[0]))
        self.stages = nn.ModuleList(
            SparseSequential(post_act_block(channels[level - 1], channels[level], 2, stride=2, conv_type="spconv",
                                            norm=norm), *residuals(channels[level], depths[level]))
            for level in range(1, len(channels)))
        finest = self.out_levels[0]
        self.ups = nn.ModuleList(  # ups[i] returns from level finest + i + 1 to level finest + i
            SparseSequential(SparseConvTranspose3d(channels[level + 1], channels[level], 2, stride=2, bias=False),
                             norm(channels[level]), nn.ReLU())
            for level in range(finest, len(channels) - 1))
        self.merges = nn.ModuleList(SparseSequential(*residuals(channels[level], neck_depth))
                                    for level in range(finest, len(channels) - 1))
        self.heads_in = nn.ModuleList(post_act_block(channels[level], head_channels, 3, norm=norm)
                                      for level in self.out_levels) if self.multi_level else None
        self.out_level = self.out_levels[0]
        self.out_channels = head_channels if self.multi_level else channels[self.out_level]

    def forward(self, x: SparseTensor) -> SparseTensor | list[SparseTensor]:
        levels = [self.stem(x)]
        for stage in self.stages:
            levels.append(stage(levels[-1]))
        y, outs = levels[-1], {len(levels) - 1: levels[-1]}
        for level in reversed(range(self.out_level, len(levels) - 1)):
            i = level - self.out_level
            y = self.merges[i](add_at_sites(self.ups[i](y), levels[level]))
            outs[level] = y
        if not self.multi_level:
            return y
        return [head_in(outs[level]) for head_in, level in zip(self.heads_in, self.out_levels, strict=True)]
