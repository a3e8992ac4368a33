"""FlatFormer (Liu et al., CVPR 2023): flattened window attention on pillars.

    input projection (when in_channels != channels)
    blocks x 4 attention layers, in the orders x, shifted x, y, shifted y: the voxels sorted by
        window, then by position inside it (both serpentine), cut into equal groups of group_size
    position: a fixed 2D sine-cosine encoding of each pillar's (x, y) grid cell, added to q and k

Order "x" visits windows (and cells inside a window) with x as the slowest axis, "y" with y; a shifted
order moves the windows by half a window. The four group partitions are computed once per forward pass
and shared by the blocks. Two options build the released network (mit-han-lab/flatformer; off by default,
where the simulated recipes were measured): `released_path`, its order (`pc3d.sparse.window.flat_groups`:
its "x" order walks the windows along x and the cells inside each window with x slowest, the path inside a
window reversed in every other row of windows), and `xavier_init`, its initialisation (every weight matrix
xavier-uniform, attention's q, k, v as one [3C, C] matrix with zero biases). Axis order is the grid's
(z, y, x); input and output: SparseTensor on the same sites, so it plugs into PointPillarScatter.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pc3d.errors import ConfigError
from pc3d.models.backbones3d.attention import AttentionLayer, run_layer, xavier_uniform_weights
from pc3d.sparse import SparseTensor
from pc3d.sparse.window import Slots, flat_groups

ORDERS = {"x": (2, 1, 0), "y": (1, 2, 0)}  # sort axes of (z, y, x) grids, slowest first


def sine_position_encoding(coords: torch.Tensor, channels: int, temperature: float = 10000.0) -> torch.Tensor:
    """float32 [N, channels]: sin / cos of the x and y grid indices of coords (b, z, y, x), channels / 2 each,
    at the transformer's geometric frequencies."""
    if channels % 4:
        raise ValueError(f"the sine-cosine encoding needs channels divisible by 4, got {channels}")
    quarter = channels // 4
    freq = temperature ** (-torch.arange(quarter, dtype=torch.float32, device=coords.device) / quarter)
    parts = []
    for axis in (3, 2):  # x, y
        angle = coords[:, axis].float()[:, None] * freq
        parts += [angle.sin(), angle.cos()]
    return torch.cat(parts, 1)


class FlatFormer(nn.Module):
    """FlatFormer backbone (module docstring): SparseTensor [N, in_channels] on a (Z, Y, X) grid ->
    SparseTensor [N, channels] on the same sites. window_shape: (z, y, x) cells; use_checkpoint:
    recompute attention layers in the backward pass. channels: a multiple of 4 (the sine-cosine position
    encoding: sin and cos of x and y) and of heads; checked when the module is built, as window_shape and
    group_size. released_path, xavier_init: the released network (module docstring)."""

    orders = (("x", False), ("x", True), ("y", False), ("y", True))

    def __init__(self, in_channels: int, channels: int = 128, blocks: int = 2, heads: int = 8,
                 ffn_channels: int = 256, window_shape: Sequence[int] = (1, 13, 13), group_size: int = 144,
                 dropout: float = 0.0, use_checkpoint: bool = False, released_path: bool = False,
                 xavier_init: bool = False):
        super().__init__()
        if channels % 4:
            raise ConfigError(f"FlatFormer channels={channels}: the sine-cosine position encoding needs a multiple "
                              "of 4 (sin and cos of the x and y cells)")
        if heads < 1 or channels % heads:
            raise ConfigError(f"FlatFormer channels={channels} is not a multiple of heads={heads}")
        if len(window_shape) != 3 or any(int(w) != w or w < 1 for w in window_shape):
            raise ConfigError(f"FlatFormer window_shape={list(window_shape)}: three positive ints, (z, y, x) cells")
        if group_size < 1:
            raise ConfigError(f"FlatFormer group_size={group_size}: at least 1 token a group")
        self.window_shape = tuple(window_shape)
        self.shift = tuple(w // 2 for w in self.window_shape)
        self.group_size = group_size
        self.input_proj = nn.Identity() if in_channels == channels else nn.Linear(in_channels, channels)
        self.layers = nn.ModuleList(AttentionLayer(channels, heads, ffn_channels, dropout)
                                    for _ in range(blocks * len(self.orders)))
        self.use_checkpoint = use_checkpoint
        self.released_path = released_path
        self.out_channels = channels
        if xavier_init:
            xavier_uniform_weights(self)

    def partition(self, x: SparseTensor) -> list[Slots]:
        """The groups of each order (self.orders)."""
        zero = (0,) * len(self.window_shape)
        return [flat_groups(x.coords, x.spatial_shape, self.window_shape, self.shift if shifted else zero,
                            self.group_size, ORDERS[axis], x.batch_size, self.released_path)
                for axis, shifted in self.orders]

    def forward(self, x: SparseTensor) -> SparseTensor:
        groups = self.partition(x)
        feats = self.input_proj(x.feats)
        pos = sine_position_encoding(x.coords, feats.shape[1]).to(feats.dtype)
        for i, layer in enumerate(self.layers):
            feats = run_layer(layer, self.use_checkpoint, feats, pos, groups[i % len(groups)])
        return x.replace_feature(feats)

    def output_shape(self, spatial_shape: Sequence[int]) -> tuple[int, ...]:
        return tuple(spatial_shape)

