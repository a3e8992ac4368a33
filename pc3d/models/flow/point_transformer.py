"""SCTN's point transformer: a position encoding added to the point features, then one global
single-head self-attention per cloud; output = input features + attention features.

    h = f + pos_mlp(xyz)           pos_mlp: Linear 3 -> 32, ReLU, Linear 32 -> C
    out = f + attention(q(h), k(h), v(h))   over all points of the same sample (v starts at zero)

Queries run in blocks of `chunk_size` rows (softmax is per query, so blocks are exact); under autograd each
block is recomputed in backward (torch.utils.checkpoint), so memory stays O(chunk_size x N) whichever
scaled_dot_product_attention kernel runs (the CPU one measured ~800 MB for forward + backward at N = 8,192).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


class PointTransformer(nn.Module):
    """channels: feature width C; pos_hidden: hidden width of the position MLP (32); chunk_size: query rows
    per attention block (None: all at once)."""

    def __init__(self, channels: int, pos_hidden: int = 32, chunk_size: int | None = 1024):
        super().__init__()
        self.chunk_size = chunk_size
        self.pos_mlp = nn.Sequential(nn.Linear(3, pos_hidden), nn.ReLU(), nn.Linear(pos_hidden, channels))
        self.q = nn.Linear(channels, channels, bias=False)
        self.k = nn.Linear(channels, channels, bias=False)
        self.v = nn.Linear(channels, channels, bias=False)
        # zero-initialised values: the block starts as the identity on the (unit-norm) conv features. With a
        # random v, the attention term (about the mean of v over the cloud, with norm ~ |pos_mlp(xyz)| >> 1 at
        # metre-scale coordinates) is nearly the same vector for every point and drowns the conv features:
        # every pair's cosine starts near 0.99 and the transport starts uniform.
        nn.init.zeros_(self.v.weight)

    def forward(self, feats: torch.Tensor, xyz: torch.Tensor, offsets: list[int]) -> torch.Tensor:
        """feats [N, C], xyz [N, 3], offsets: B + 1 row offsets of the samples -> [N, C]."""
        h = feats + self.pos_mlp(xyz)
        q, k, v = self.q(h), self.k(h), self.v(h)
        recompute = torch.is_grad_enabled() and h.requires_grad
        out = []
        for b in range(len(offsets) - 1):
            start, stop = offsets[b], offsets[b + 1]
            step = self.chunk_size or max(stop - start, 1)
            for i in range(start, stop, step):
                args = (q[None, i:min(i + step, stop)], k[None, start:stop], v[None, start:stop])
                out.append((checkpoint(F.scaled_dot_product_attention, *args, use_reentrant=False) if recompute
                            else F.scaled_dot_product_attention(*args))[0])
        return feats + torch.cat(out)
