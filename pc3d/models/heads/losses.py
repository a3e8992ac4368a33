"""Detection losses: sigmoid focal loss (anchor heads), Gaussian focal loss (CenterPoint heat maps),
weighted smooth-L1 / L1 box regression, the sin-difference trick for headings, the corner loss of refined
boxes (two-stage heads) and the DIoU loss of axis-aligned boxes (indoor heads)."""
from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from pc3d.geometry import boxes_to_corners


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor,
                       alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Sum of the focal loss over [..., K] logits with one-hot targets, each anchor weighted by weights [...]."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = targets * p + (1 - targets) * (1 - p)
    a_t = targets * alpha + (1 - targets) * (1 - alpha)
    return (a_t * (1 - p_t) ** gamma * ce * weights[..., None]).sum()


def gaussian_focal_loss(logits: torch.Tensor, heatmap: torch.Tensor, alpha: float = 2.0, beta: float = 4.0
                        ) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss of heat-map logits against Gaussian targets in [0, 1],
    normalised by the number of peaks (cells equal to 1). Computed in float32: in bf16, 1 - 1e-4 rounds to 1
    and the clamp would let log(1 - pred) reach log(0)."""
    pred = torch.sigmoid(logits.float()).clamp(1e-4, 1 - 1e-4)
    pos = heatmap.eq(1).float()
    neg_weight = (1 - heatmap) ** beta
    pos_loss = (torch.log(pred) * (1 - pred) ** alpha * pos).sum()
    neg_loss = (torch.log(1 - pred) * pred ** alpha * neg_weight * (1 - pos)).sum()
    return -(pos_loss + neg_loss) / pos.sum().clamp(min=1)


def weighted_smooth_l1(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor, code_weights: torch.Tensor,
                       beta: float = 1.0 / 9.0) -> torch.Tensor:
    """Sum of smooth-L1 over [..., D] (NaN targets count as 0), per-row weights [...], per-column code_weights [D]
    scaling the difference before the smooth-L1 (OpenPCDet's WeightedSmoothL1Loss: a weight of 2 on a 0.5 m error
    costs what a 1 m error does)."""
    target = torch.where(torch.isnan(target), pred.detach(), target)
    diff = ((pred - target) * code_weights).abs()
    loss = torch.where(diff < beta, 0.5 * diff ** 2 / beta, diff - 0.5 * beta)
    return (loss * weights[..., None]).sum()


def add_sin_difference(pred: torch.Tensor, target: torch.Tensor, dim: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace the heading residual column by sin(a) cos(b) and cos(a) sin(b): their difference is sin(a - b),
    so a box and its pi-flipped twin cost the same (the direction classifier settles the flip)."""
    a, b = pred[..., dim:dim + 1], target[..., dim:dim + 1]
    pred = torch.cat([pred[..., :dim], torch.sin(a) * torch.cos(b), pred[..., dim + 1:]], -1)
    target = torch.cat([target[..., :dim], torch.cos(a) * torch.sin(b), target[..., dim + 1:]], -1)
    return pred, target


def corner_loss(pred: torch.Tensor, target: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """[P]: smooth-L1 (beta) of the distance between each of the 8 corners of pred [P, 7] and the same corner of
    target [P, 7] or of target turned by pi (whichever is nearer, per corner), mean over the corners: OpenPCDet's
    get_corner_loss_lidar, which ties a refined box's centre, size and heading together."""
    flipped = torch.cat([target[:, :6], target[:, 6:7] + math.pi], 1)
    corners = boxes_to_corners(pred[:, :7])
    distance = torch.minimum((corners - boxes_to_corners(target[:, :7])).norm(dim=2),
                             (corners - boxes_to_corners(flipped)).norm(dim=2))
    loss = torch.where(distance < beta, 0.5 * distance ** 2 / beta, distance - 0.5 * beta)
    return loss.mean(1)


def axis_aligned_diou_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """[P]: 1 - IoU + |centre difference|^2 / (enclosing box diagonal)^2 of axis-aligned boxes pred and target
    [P, 6] (centre, size); Distance-IoU (Zheng et al. 2020), the box loss of FCAF3D / TR3D. The centre term
    still pulls a box that does not overlap its target."""
    lo_p, hi_p = pred[:, :3] - pred[:, 3:6] / 2, pred[:, :3] + pred[:, 3:6] / 2
    lo_t, hi_t = target[:, :3] - target[:, 3:6] / 2, target[:, :3] + target[:, 3:6] / 2
    inter = (torch.minimum(hi_p, hi_t) - torch.maximum(lo_p, lo_t)).clamp(min=0).prod(1)
    union = pred[:, 3:6].prod(1) + target[:, 3:6].prod(1) - inter
    iou = inter / union.clamp(min=eps)
    diagonal = ((torch.maximum(hi_p, hi_t) - torch.minimum(lo_p, lo_t)) ** 2).sum(1)
    centre = ((pred[:, :3] - target[:, :3]) ** 2).sum(1)
    return 1 - iou + centre / diagonal.clamp(min=eps)
