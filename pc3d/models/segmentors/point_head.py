"""Voxel predictions back to every original point, through the voxelizer's inverse map.

The batch's ``point_to_voxel`` [sum N] gives each point its voxel, or -1 for points the voxelizer
dropped (outside the range). Those points get, by choice:

- ``unmapped="nearest"``: the voxel whose point centroid is nearest (same sample), so every original
  point has a prediction (needed by the SemanticKITTI submission: one label per point of the scan);
- ``unmapped="ignore"``: no voxel (index -1); the segmentor then predicts its ``ignore_index``.
A sample with no voxel at all keeps -1 either way.
"""
from __future__ import annotations

import torch
from torch import nn

from pc3d.geometry.neighbors import knn
from pc3d.sparse import BatchNorm1d
from pc3d.voxel import scatter_mean

UNMAPPED = ("nearest", "ignore")


def fill_point_to_voxel(point_to_voxel: torch.Tensor, points: torch.Tensor, point_batch: torch.Tensor,
                        voxel_batch: torch.Tensor, unmapped: str = "nearest") -> torch.Tensor:
    """int64 [sum N]: point_to_voxel with each -1 replaced by the voxel of the nearest voxel centroid of the
    same sample (unmapped="nearest") or kept (unmapped="ignore").

    points float [sum N, 3 + C]; point_batch int64 [sum N]; voxel_batch: batch index of each voxel [V].
    """
    if unmapped not in UNMAPPED:
        raise ValueError(f"unmapped must be one of {UNMAPPED}, not {unmapped!r}")
    missing = point_to_voxel < 0
    if unmapped == "ignore" or not bool(missing.any()):
        return point_to_voxel
    keep = ~missing
    centroids = scatter_mean(points[keep, :3].float(), point_to_voxel[keep], len(voxel_batch))
    filled = point_to_voxel.clone()
    for b in torch.unique(point_batch[missing]).tolist():
        voxels = torch.nonzero(voxel_batch == b).squeeze(1)
        queries = torch.nonzero(missing & (point_batch == b)).squeeze(1)
        if len(voxels) == 0:
            continue
        _, idx = knn(points[queries, :3].detach().cpu(), centroids[voxels].detach().cpu(), 1)
        filled[queries] = voxels[idx[:, 0].to(voxels.device)]
    return filled


def voxel_labels(point_to_voxel: torch.Tensor, point_labels: torch.Tensor, num_voxels: int, num_classes: int,
                 ignore_index: int) -> torch.Tensor:
    """int64 [V]: the majority train id of each voxel's labelled points (ties: the lower id), ignore_index
    for voxels without one. Points with point_to_voxel -1 or label ignore_index do not vote."""
    vote = (point_to_voxel >= 0) & (point_labels != ignore_index) & (point_labels >= 0) & (point_labels < num_classes)
    counts = torch.bincount(point_to_voxel[vote] * num_classes + point_labels[vote],
                            minlength=num_voxels * num_classes).view(num_voxels, num_classes)
    best, label = counts.max(1)
    return torch.where(best > 0, label, torch.full_like(label, ignore_index))


class PointHead(nn.Module):
    """Linear classifier on voxel features [V, C] and its logits gathered to points.

    forward(voxel_feats) -> voxel logits [V, num_classes]; to_points(voxel_logits, point_voxel) -> logits
    [P, num_classes] of the P points with point_voxel >= 0 (point_voxel: from fill_point_to_voxel).
    """

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_channels, num_classes))

    def forward(self, voxel_feats: torch.Tensor) -> torch.Tensor:
        return self.classifier(voxel_feats)

    @staticmethod
    def to_points(voxel_logits: torch.Tensor, point_voxel: torch.Tensor) -> torch.Tensor:
        return voxel_logits[point_voxel[point_voxel >= 0]]


class PointFusionHead(nn.Module):
    """Per-point classifier on the point's voxel feature and its own columns (SPVCNN-style point branch, one
    MLP): points that share a voxel, such as a picture 2 cm in front of its wall, can differ.

    forward(voxel_feats [V, C], point_voxel [P] (all >= 0), point_cols [P, D], voxel_cols [V, D]) -> logits
    [P, num_classes]; voxel_cols are the voxel means of the same D columns (the backbone's input), so the
    branch sees each point's offset and colour difference from its voxel as well as the point itself.
    """

    def __init__(self, in_channels: int, point_channels: int, num_classes: int, hidden: int = 32,
                 dropout: float = 0.0):
        super().__init__()
        self.point_mlp = nn.Sequential(nn.Linear(2 * point_channels, hidden, bias=False), BatchNorm1d(hidden),
                                       nn.ReLU())
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_channels + hidden, num_classes))

    def forward(self, voxel_feats: torch.Tensor, point_voxel: torch.Tensor, point_cols: torch.Tensor,
                voxel_cols: torch.Tensor) -> torch.Tensor:
        local = torch.cat([point_cols - voxel_cols[point_voxel], point_cols], 1)
        return self.classifier(torch.cat([voxel_feats[point_voxel], self.point_mlp(local)], 1))
