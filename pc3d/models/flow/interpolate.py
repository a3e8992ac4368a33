"""Voxel features to points: inverse-distance interpolation over the k nearest voxels of the same sample.

A voxel sits at the mean of its points (the first three columns of ``sparse_input``'s features). Weights
are 1 / (d + eps) over a point's k nearest voxels (fewer when its sample has fewer), normalised to sum 1;
neither the neighbour search nor the weights carry gradient (positions are inputs, not learned): gradient
flows to the voxel features only.
"""
from __future__ import annotations

import torch

from pc3d.geometry.neighbors import knn


def knn_per_sample(query: torch.Tensor, query_offsets: list[int], ref: torch.Tensor, ref_offsets: list[int],
                   k: int) -> torch.Tensor:
    """int64 [Q, k]: rows of `ref` (global, -1 padded) nearest to each query row within its own sample.
    query: [Q, 3+], ref: [R, 3+]; *_offsets: B + 1 row offsets of each sample."""
    out = torch.full((len(query), k), -1, dtype=torch.int64)
    with torch.no_grad():
        q, r = query[:, :3].detach().float().cpu(), ref[:, :3].detach().float().cpu()
        for b in range(len(query_offsets) - 1):
            q0, q1, r0, r1 = query_offsets[b], query_offsets[b + 1], ref_offsets[b], ref_offsets[b + 1]
            _, idx = knn(q[q0:q1], r[r0:r1], k)
            out[q0:q1] = torch.where(idx >= 0, idx + r0, idx)
    return out.to(query.device)


def offsets_of(batch_index: torch.Tensor, batch_size: int) -> list[int]:
    """B + 1 row offsets of rows sorted by sample (batch_index int [N])."""
    counts = torch.bincount(batch_index.long(), minlength=batch_size).cpu()
    return [0] + torch.cumsum(counts, 0).tolist()


def interpolate_weights(points: torch.Tensor, ref: torch.Tensor, index: torch.Tensor,
                        eps: float = 1e-8) -> torch.Tensor:
    """float [N, k]: 1 / (|p - ref[index]| + eps) normalised over each row; 0 where index is -1."""
    valid = index >= 0
    d = (points[:, None, :3] - ref[index.clamp(min=0), :3]).norm(dim=-1)
    w = torch.where(valid, 1.0 / (d + eps), torch.zeros_like(d))
    return w / w.sum(1, keepdim=True).clamp(min=1e-30)


def voxels_to_points(voxel_feats: torch.Tensor, voxel_xyz: torch.Tensor, voxel_offsets: list[int],
                     points: torch.Tensor, point_offsets: list[int], k: int = 32, eps: float = 1e-8) -> torch.Tensor:
    """[N, C] point features: inverse-distance interpolation of voxel_feats [V, C] (voxels at voxel_xyz
    [V, 3], rows sorted by sample with voxel_offsets) over each point's k nearest voxels of its sample.
    points [N, 3+] with point_offsets (B + 1 each)."""
    index = knn_per_sample(points, point_offsets, voxel_xyz, voxel_offsets, k)
    w = interpolate_weights(points, voxel_xyz, index, eps).detach()
    # one sparse [N, V] x [V, C] product: no [N, k, C] gather is made or kept for backward
    rows = torch.arange(len(points), device=points.device).repeat_interleave(index.shape[1])
    weights = torch.sparse_coo_tensor(torch.stack([rows, index.clamp(min=0).flatten()]), w.flatten(),
                                      (len(points), len(voxel_feats)), is_coalesced=False, check_invariants=False)
    return torch.sparse.mm(weights, voxel_feats)
