"""Flow refinement (FLOT / SCTN): point-set convolutions over each point's k nearest neighbours in the
first cloud, then a Linear to a residual 3-vector added to the transported flow.

    set conv:  h_i = act(W2 act(max_k W1 [x_k, p_k - p_i] + c1) + c2)   act: LeakyReLU(0.1)

W1 [x_k, p_k - p_i] is computed as (Wx x)[k] + Wp (p_k - p_i): the feature product runs once per point, not
per edge. The activation commutes with the max (LeakyReLU is increasing), so it runs after it; autograd then
keeps no [N, k, out] tensor (the max keeps its indices), which at N = 8,192, k = 32 saves ~0.4 GB. The edges
are made for `chunk_size` points at a time, so the transient [N, k, out] tensors never exist whole either.
    refine:    flow = ot_flow + Linear(set_conv_3(set_conv_2(set_conv_1(ot_flow))))
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class SetConv(nn.Module):
    """[N, in] features, [N, 3] positions, [N, k] neighbour rows (-1: none) -> [N, out]; edges made for
    chunk_size points at a time (None: all)."""

    def __init__(self, in_channels: int, out_channels: int, chunk_size: int | None = 2048):
        super().__init__()
        self.chunk_size = chunk_size
        self.feat = nn.Linear(in_channels, out_channels)
        self.pos = nn.Linear(3, out_channels, bias=False)
        self.point = nn.Sequential(nn.LeakyReLU(0.1), nn.Linear(out_channels, out_channels), nn.LeakyReLU(0.1))

    def forward(self, feats: torch.Tensor, xyz: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
        index = torch.where(neighbours >= 0, neighbours, torch.arange(len(xyz), device=xyz.device)[:, None])
        projected = self.feat(feats)
        step = self.chunk_size or max(len(xyz), 1)
        maxima = []
        for i in range(0, len(xyz), step):
            rows = index[i:i + step]
            maxima.append((projected[rows] + self.pos(xyz[rows] - xyz[i:i + step, None])).max(1).values)
        return self.point(torch.cat(maxima) if maxima else projected[:0])


class FlowRefine(nn.Module):
    """widths: output width of each set conv (SCTN: three, e.g. 32, 64, 128); in_channels: 3 (the flow)."""

    def __init__(self, widths: Sequence[int] = (32, 64, 128), in_channels: int = 3):
        super().__init__()
        chans = [in_channels, *widths]
        self.convs = nn.ModuleList(SetConv(a, b) for a, b in zip(chans[:-1], chans[1:], strict=True))
        self.out = nn.Linear(chans[-1], 3)

    def forward(self, ot_flow: torch.Tensor, xyz: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
        """ot_flow [N, 3], xyz [N, 3] first cloud, neighbours int64 [N, k] (same sample) -> flow [N, 3]."""
        h = ot_flow
        for conv in self.convs:
            h = conv(h, xyz, neighbours)
        return ot_flow + self.out(h)
