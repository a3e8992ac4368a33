"""Attention over slot tables (pc3d.sparse.window.Slots), shared by DSVT and FlatFormer.

Features stay per voxel ([N, C]); a layer gathers them into slots [T, K, C], runs one
`scaled_dot_product_attention` call over [T, heads, K, C / heads] and takes every voxel's output
from its first slot. q = k = features + position, v = features; post-norm residuals (both papers).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from pc3d.sparse.window import Slots


class SlotAttention(nn.Module):
    """Multi-head attention inside each slot row: [N, C] features (+ [N, C] positions) -> [N, C]."""

    def __init__(self, channels: int, heads: int):
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels ({channels}) must be a multiple of heads ({heads})")
        self.heads = heads
        self.qk = nn.Linear(channels, 2 * channels)
        self.v = nn.Linear(channels, channels)
        self.out = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None, slots: Slots) -> torch.Tensor:
        t, k = slots.index.shape
        c, h = x.shape[1], self.heads
        # projections are per voxel (a voxel may fill several slots); one gather of q, k, v together;
        # index_select, whose backward is index_add, not the much slower accumulating index_put
        qkv = torch.cat([self.qk(x if pos is None else x + pos), self.v(x)], 1)
        qkv = qkv.index_select(0, slots.index.flatten()).view(t, k, 3, h, c // h).permute(2, 0, 3, 1, 4)
        dtype = qkv.dtype
        if dtype == torch.bfloat16 and qkv.device.type == "cpu":
            qkv = qkv.float()
        with torch.autocast(qkv.device.type, enabled=False):  # autocast would cast q, k, v back to bf16
            out = F.scaled_dot_product_attention(*qkv, attn_mask=slots.attn_mask).to(dtype)
        return self.out(out.transpose(1, 2).reshape(t * k, c).index_select(0, slots.first))


class AttentionLayer(nn.Module):
    """x = norm1(x + attention(x, pos)); x = norm2(x + FFN(x)), FFN = Linear, GELU, Linear."""

    def __init__(self, channels: int, heads: int, ffn_channels: int, dropout: float = 0.0):
        super().__init__()
        self.attn = SlotAttention(channels, heads)
        self.ffn = nn.Sequential(nn.Linear(channels, ffn_channels), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(ffn_channels, channels))
        self.norm1, self.norm2 = nn.LayerNorm(channels), nn.LayerNorm(channels)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None, slots: Slots) -> torch.Tensor:
        x = self.norm1(x + self.dropout(self.attn(x, pos, slots)))
        return self.norm2(x + self.dropout(self.ffn(x)))


def xavier_uniform_weights(module: nn.Module) -> None:
    """Draw every weight matrix of `module` xavier-uniform, as DSVT's and FlatFormer's released code do
    (`_reset_parameters`: every parameter of two or more dimensions). A SlotAttention's q, k and v projections
    are drawn as the one [3C, C] matrix of nn.MultiheadAttention, which those codes use, with its zero biases."""
    slot_qkv = set()
    for m in module.modules():
        if isinstance(m, SlotAttention):
            c = m.v.weight.shape[1]
            bound = math.sqrt(6.0 / (c + 3 * c))  # xavier-uniform of a [3C, C] matrix
            for linear in (m.qk, m.v):
                nn.init.uniform_(linear.weight, -bound, bound)
                nn.init.zeros_(linear.bias)
                slot_qkv.add(id(linear.weight))
            nn.init.zeros_(m.out.bias)  # nn.MultiheadAttention's out_proj bias
    for p in module.parameters():
        if p.dim() > 1 and id(p) not in slot_qkv:
            nn.init.xavier_uniform_(p)


def run_layer(layer: nn.Module, use_checkpoint: bool, *args):
    """layer(*args), recomputed in the backward pass instead of stored when `use_checkpoint` and training."""
    if use_checkpoint and layer.training and torch.is_grad_enabled():
        return checkpoint(layer, *args, use_reentrant=False)
    return layer(*args)
