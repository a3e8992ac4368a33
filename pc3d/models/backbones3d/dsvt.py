"""DSVT (Wang et al., CVPR 2023): dynamic sparse window attention on pillars or voxels.

    input projection (when in_channels != channels[0])
    stage i: blocks[i] DSVT blocks; block b, counted over the whole network (the released code's
             block_id), uses window (window_shape[i], 0) when b is even and (shifted_window_shape[i],
             shift[i]) when b is odd, so one-block stages (the voxel variant) alternate too; a block = a set
             attention layer over y-major sets, then one over x-major sets, of set_size[i] voxels
    between stages (voxel variant): z pooling by attention (ZAttentionPool), z shrinks by pool_z[i]

Each block learns its own position embedding (Linear, BN, ReLU, Linear on the voxel's offset from its
window centre), so stages, blocks and shifts never share one (the released code indexes it by layer).
Set partitions are computed once per stage for each (window, order) and shared by its blocks.

Four options build the released code's network (OpenPCDet's dsvt.py; off by default, where the simulated
recipes were measured): `residual_norms` adds a residual and a LayerNorm around each set attention layer
(x = norm(x + layer(x)), on top of the layer's own two post-norm residuals) and around each block;
`layer_pos_embeds` gives each of a block's two layers its own position MLP (the released code's two per
block, each here fed the block's own window offsets: the released code feeds layer i the offsets of
window configuration i whatever the block's, its issue #50); `planar_pos` embeds only the (y, x) offsets
in windows one cell tall (the released code's 2D input on pillar grids); `xavier_init` draws every weight
matrix xavier-uniform (its `_reset_parameters`; q, k and v as the one [3C, C] matrix of
nn.MultiheadAttention).

Pillar DSVT: one stage, 4 blocks, 192 channels, set 36, window (1, 12, 12), shifted (1, 24, 24) by 6.
Voxel DSVT: 4 stages, set 48, windows 12 x 12 x {32, 8, 2, 1}, z pooled by 4, 4, 2.
Axis order is the grid's (z, y, x) for every shape and shift. Input and output: SparseTensor; the output
keeps the input's sites (pillar) or the pooled ones, so it plugs into PointPillarScatter (z = 1 cell).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pc3d.models.backbones3d.attention import AttentionLayer, run_layer, xavier_uniform_weights
from pc3d.sparse import BatchNorm1d, SparseTensor
from pc3d.sparse.window import Slots, dynamic_sets, relative_to_window_centre

Y_MAJOR, X_MAJOR = (1, 2, 0), (2, 1, 0)  # sort axes of (z, y, x) grids, slowest first; z fastest


def position_embedding(channels: int, ndim: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Linear(ndim, channels), BatchNorm1d(channels), nn.ReLU(), nn.Linear(channels, channels))


class DSVTBlock(nn.Module):
    """Its position embedding and two set attention layers (y-major sets, then x-major sets); with
    residual_norms, layer_pos_embeds and pos_dims 2 the released code's block (module docstring)."""

    def __init__(self, channels: int, heads: int, ffn_channels: int, dropout: float = 0.0,
                 residual_norms: bool = False, layer_pos_embeds: bool = False, pos_dims: int = 3):
        super().__init__()
        self.pos_dims = pos_dims
        self.pos_embed = position_embedding(channels, pos_dims)
        self.second_pos_embed = position_embedding(channels, pos_dims) if layer_pos_embeds else None
        self.layers = nn.ModuleList(AttentionLayer(channels, heads, ffn_channels, dropout) for _ in range(2))
        self.layer_norms = nn.ModuleList(nn.LayerNorm(channels) for _ in range(2)) if residual_norms else None
        self.block_norm = nn.LayerNorm(channels) if residual_norms else None

    def forward(self, x: torch.Tensor, offsets: torch.Tensor, sets: Sequence[Slots], use_checkpoint: bool = False
                ) -> torch.Tensor:
        offsets = offsets[:, offsets.shape[1] - self.pos_dims:].to(self.pos_embed[0].weight.dtype)  # 2: (y, x)
        pos = [self.pos_embed(offsets)]
        if self.second_pos_embed is not None:
            pos.append(self.second_pos_embed(offsets))
        identity = x
        for i, (layer, slots) in enumerate(zip(self.layers, sets, strict=True)):
            y = run_layer(layer, use_checkpoint, x, pos[i % len(pos)], slots)
            x = y if self.layer_norms is None else self.layer_norms[i](x + y)
        return x if self.block_norm is None else self.block_norm(x + identity)


class DSVTStage(nn.Module):
    """`blocks` DSVT blocks alternating the unshifted and the shifted window configuration."""

    def __init__(self, channels: int, blocks: int, set_size: int, window_shape: Sequence[int],
                 shifted_window_shape: Sequence[int], shift: Sequence[int], heads: int, ffn_channels: int,
                 dropout: float = 0.0, **block_options):
        super().__init__()
        self.set_size = set_size
        self.windows = ((tuple(window_shape), (0,) * len(window_shape)), (tuple(shifted_window_shape), tuple(shift)))
        self.blocks = nn.ModuleList(DSVTBlock(channels, heads, ffn_channels, dropout, **block_options)
                                    for _ in range(blocks))

    def partition(self, x: SparseTensor, configurations: Sequence[int] = (0, 1)
                  ) -> list[tuple[torch.Tensor, tuple[Slots, Slots]] | None]:
        """Per window configuration (0 unshifted, 1 shifted): (offsets from the window centre [N, 3], (y-major
        sets, x-major sets)); None for a configuration not in `configurations`."""
        out = []
        for i, (shape, shift) in enumerate(self.windows):
            if i not in configurations:
                out.append(None)
                continue
            sets = tuple(dynamic_sets(x.coords, x.spatial_shape, shape, shift, self.set_size, axes)
                         for axes in (Y_MAJOR, X_MAJOR))
            out.append((relative_to_window_centre(x.coords, shape, shift), sets))
        return out

    def forward(self, x: SparseTensor, plan=None, use_checkpoint: bool = False, first_block: int = 0
                ) -> SparseTensor:
        """first_block: the network-wide number of this stage's first block (its parity picks the window; a
        one-block stage partitions its voxels for that window alone)."""
        used = sorted({b % 2 for b in range(first_block, first_block + len(self.blocks))})
        plan = self.partition(x, used) if plan is None else plan
        feats = x.feats
        for b, block in enumerate(self.blocks, first_block):
            offsets, sets = plan[b % 2]
            feats = block(feats, offsets, sets, use_checkpoint)
        return x.replace_feature(feats)


class ZAttentionPool(nn.Module):
    """Pools `factor` z cells into one (voxel DSVT's stage reduction): the query is the max over the
    parent's occupied sub-voxels, keys / values are the sub-voxels (+ a learned embedding of their z
    slot); empty slots are masked. Output: norm(query + attention), on sites (b, z // factor, y, x)."""

    def __init__(self, channels: int, heads: int, factor: int):
        super().__init__()
        self.factor, self.heads = factor, heads
        self.slot_embed = nn.Parameter(torch.zeros(factor, channels))
        nn.init.normal_(self.slot_embed, std=0.02)
        self.attn = nn.MultiheadAttention(channels, heads, batch_first=True)
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: SparseTensor) -> SparseTensor:
        x.check_unique()  # two rows of one site would share a slot: one would be dropped silently
        z, y, w = x.spatial_shape
        zz = (z + self.factor - 1) // self.factor
        c = x.coords.long()
        parent = ((c[:, 0] * zz + c[:, 1] // self.factor) * y + c[:, 2]) * w + c[:, 3]
        sites, inverse = torch.unique(parent, return_inverse=True)
        m, channels = len(sites), x.feats.shape[1]
        slot = inverse * self.factor + c[:, 1] % self.factor
        occupied = torch.zeros(m * self.factor, dtype=torch.bool, device=x.device)
        occupied[slot] = True
        occupied = occupied.view(m, self.factor)
        dense = x.feats.new_zeros(m * self.factor, channels).index_copy(0, slot, x.feats).view(m, self.factor, channels)
        query = dense.masked_fill(~occupied[..., None], float("-inf")).amax(1, keepdim=True)
        key = dense + self.slot_embed
        if m:
            attn = self.attn(query, key, dense, key_padding_mask=~occupied, need_weights=False)[0]
        else:
            attn = query
        feats = self.norm((query + attn)[:, 0])
        coords = torch.stack([sites // (zz * y * w), sites // (y * w) % zz, sites // w % y, sites % w], 1).int()
        stride = (x.stride[0] * self.factor, *x.stride[1:])
        return x.with_sites(feats, coords, (zz, y, w), stride)


class DSVT(nn.Module):
    """DSVT backbone (module docstring): SparseTensor [N, in_channels] on a (Z, Y, X) grid -> SparseTensor
    [N', channels[-1]]. Per-stage lists: channels, blocks, set_size, window_shape, shifted_window_shape,
    shift; pool_z (one factor between consecutive stages). use_checkpoint: recompute attention layers in
    the backward pass (less memory, ~30 % more time). residual_norms, layer_pos_embeds, planar_pos, xavier_init:
    the released code's network (module docstring)."""

    def __init__(self, in_channels: int, channels: Sequence[int] = (192,), blocks: Sequence[int] = (4,),
                 set_size: Sequence[int] = (36,), window_shape: Sequence[Sequence[int]] = ((1, 12, 12),),
                 shifted_window_shape: Sequence[Sequence[int]] = ((1, 24, 24),),
                 shift: Sequence[Sequence[int]] = ((0, 6, 6),), pool_z: Sequence[int] = (), heads: int = 8,
                 ffn_channels: Sequence[int] = (384,), dropout: float = 0.0, use_checkpoint: bool = False,
                 residual_norms: bool = False, layer_pos_embeds: bool = False, planar_pos: bool = False,
                 xavier_init: bool = False):
        super().__init__()
        if len(pool_z) != len(channels) - 1:
            raise ValueError(f"pool_z needs one factor between consecutive stages: {len(channels) - 1}, got {pool_z}")
        if any(a != b for a, b in zip(channels[:-1], channels[1:], strict=False)):
            raise ValueError(f"every DSVT stage has the same width (z pooling keeps channels), got {channels}")
        self.input_proj = nn.Identity() if in_channels == channels[0] else nn.Linear(in_channels, channels[0])
        self.stages = nn.ModuleList(
            DSVTStage(c, n, s, w, sw, sh, heads, f, dropout, residual_norms=residual_norms,
                      layer_pos_embeds=layer_pos_embeds, pos_dims=2 if planar_pos and w[0] == sw[0] == 1 else 3)
            for c, n, s, w, sw, sh, f in zip(channels, blocks, set_size, window_shape, shifted_window_shape, shift,
                                             ffn_channels, strict=True))
        self.pools = nn.ModuleList(ZAttentionPool(c, heads, p) for c, p in zip(channels[1:], pool_z, strict=True))
        if xavier_init:
            xavier_uniform_weights(self)
        self.pool_z = tuple(pool_z)
        self.use_checkpoint = use_checkpoint
        self.out_channels = channels[-1]

    def forward(self, x: SparseTensor) -> SparseTensor:
        return self.forward_features(x)[0]

    def forward_features(self, x: SparseTensor) -> tuple[SparseTensor, dict[str, SparseTensor]]:
        x = x.replace_feature(self.input_proj(x.feats))
        outs, first = {}, 0
        for i, stage in enumerate(self.stages):
            if i:
                x = self.pools[i - 1](x)
            x = stage(x, use_checkpoint=self.use_checkpoint, first_block=first)
            first += len(stage.blocks)
            outs[f"stage{i + 1}"] = x
        return x, outs

    def output_shape(self, spatial_shape: Sequence[int]) -> tuple[int, ...]:
        z, *rest = spatial_shape
        for f in self.pool_z:
            z = (z + f - 1) // f
        return (z, *rest)

