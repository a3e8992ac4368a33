"""Scene-flow losses (SCTN): L1 on non-occluded points and the feature-similarity consistency (FSC) loss.

    l1   = mean over valid points of sum_xyz |pred - gt|   (the per-point L1 norm, FLOT / SCTN's L1 term)
    fsc  = mean over (i, k), k among i's neighbours in the first cloud, of w_ik |flow_i - flow_k|_2,
           w_ik = max(0, 1 - exp(-cos(f_i, f_k) / temperature))   (temperature 0.45)

The weight is clamped at 0: for cos < 0 the raw 1 - exp(-cos / 0.45) is negative (down to -8.2) and would
push dissimilar neighbours' flows apart without bound; SCTN's purpose is only to pull similar ones together.
"""
from __future__ import annotations

import torch

from pc3d.models.flow.optimal_transport import normalize


def flow_l1(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over the valid points (mask bool [N], None: all) of sum_xyz |pred - gt|; pred, gt [N, 3].
    0 (still connected to pred) when no point is valid."""
    err = (pred - gt).abs().sum(1)
    if mask is not None:
        err = err[mask]
    return err.mean() if len(err) else pred.sum() * 0


def end_point_error(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """EPE3D: mean |pred - gt|_2 over the valid points (detached; 0 when none)."""
    err = (pred.detach() - gt).norm(dim=1)
    if mask is not None:
        err = err[mask]
    return err.mean() if len(err) else err.new_zeros(())


def fsc_loss(flow: torch.Tensor, feats: torch.Tensor, neighbours: torch.Tensor,
             temperature: float = 0.45) -> torch.Tensor:
    """FSC loss of flow [N, 3] with point features feats [N, C] over neighbours int64 [N, k] (rows of the
    same cloud, -1 none; a point's own row adds 0). 0 when there is no pair."""
    valid = neighbours >= 0
    index = neighbours.clamp(min=0)
    f = normalize(feats)
    cos = (f[:, None] * f[index]).sum(-1)
    weight = (1 - torch.exp(-cos / temperature)).clamp(min=0)
    dist = torch.linalg.vector_norm(flow[:, None] - flow[index], dim=-1)
    terms = (weight * dist)[valid]
    return terms.mean() if len(terms) else flow.sum() * 0
