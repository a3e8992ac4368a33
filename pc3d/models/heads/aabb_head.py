"""The head of a TR3D-style indoor detector: per site of one sparse level (or of several, TR3D's two), class
scores and an axis-aligned box; one pair of linear layers serves every level.

Prediction, per site with centre p on a level of cell size c = stride x voxel size (per axis):
    logits   [S, K]          sigmoid class scores
    centre = p + c * offset,   size = c * exp(log_size)        (offset, log_size: 6 linear outputs)
Targets: each ground-truth box takes the `top_k` sites of its sample nearest its centre, on the level its class
is assigned to when there are several (`label2level`, TR3D's). A site taken by several boxes keeps, by `rule`,
the smallest one ("smallest": FCAF3D's) or the one whose centre is nearest, and only when that box is also the
nearest of all the sample's boxes to the site ("nearest": TR3D's assigner, top_k 6); such sites are positives
of their box's class, every other site is a negative of every class.
Losses: sigmoid focal loss over every site and class / number of positives; DIoU of the positives' boxes
(mean). Inference: every (site, class) score above `score_threshold`, the `pre_max_size` best per class,
per-class axis-aligned NMS at `nms_iou`, at most `post_max_size` boxes per scene, heading 0.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from pc3d.geometry import nms_axis_aligned
from pc3d.sparse import SparseTensor

from .losses import axis_aligned_diou_loss, sigmoid_focal_loss

MAX_LOG_SIZE = 5.0  # exp(5) cells: the largest box a site may predict (0.2 m cells: 30 m)


def site_centres(x: SparseTensor, voxel_size: Sequence[float], range_min: Sequence[float]) -> torch.Tensor:
    """float32 [S, 3] (x, y, z metres): centres of the cells of x's sites, whose coords (batch, z, y, x) index a
    grid of stride x.stride over voxels of voxel_size from range_min (nested kernel-2 stride-2 grids)."""
    cell = torch.tensor(voxel_size, dtype=torch.float32) * torch.tensor(x.stride[::-1], dtype=torch.float32)
    xyz = x.coords[:, 1:].flip(1).float().cpu()
    return (torch.tensor(range_min, dtype=torch.float32) + (xyz + 0.5) * cell).to(x.device)


def assign_nearest(centres: torch.Tensor, site_batch: torch.Tensor, gt_boxes: torch.Tensor, num_gt: torch.Tensor,
                   top_k: int, site_level: torch.Tensor | None = None, label2level: Sequence[int] | None = None,
                   rule: str = "smallest") -> tuple[torch.Tensor, torch.Tensor]:
    """(target int64 [S]: for each site the row of its box in `boxes`, -1 for a negative; boxes [M, 8]: the real
    boxes of every sample in batch order, class id last) for sites at centres [S, 3] of samples site_batch [S]
    and the batch's padded gt_boxes [B, Mmax, 7 + 1] with num_gt [B] real rows. With site_level [S] and
    label2level (the level of each class 1..K, in class order), a box takes sites of its class's level only.
    rule: which of a site's boxes it keeps (module docstring)."""
    if rule not in ("smallest", "nearest"):
        raise ValueError(f"rule must be 'smallest' or 'nearest', got {rule!r}")
    target = torch.full((len(centres),), -1, dtype=torch.long, device=centres.device)
    boxes = torch.cat([gt_boxes[b, :int(n)] for b, n in enumerate(num_gt.tolist())])
    levels = None if label2level is None else torch.as_tensor(label2level, dtype=torch.long, device=centres.device)
    first = 0
    for b, n in enumerate(num_gt.tolist()):
        sites = torch.nonzero(site_batch == b).squeeze(1)
        if n and len(sites):
            gt = gt_boxes[b, :n]
            distance = torch.cdist(centres[sites], gt[:, :3].float())
            reach = distance
            if levels is not None:  # a box reaches the sites of its class's level only
                box_level = levels[gt[:, -1].long() - 1]
                reach = distance.masked_fill(site_level[sites][:, None] != box_level[None, :], math.inf)
            k = min(top_k, len(sites))
            near = reach.topk(k, dim=0, largest=False)
            chosen = torch.full((len(sites), n), math.inf, device=centres.device)
            key = gt[:, 3:6].prod(1).float().expand(k, n) if rule == "smallest" else near.values
            columns = torch.arange(n, device=centres.device).expand(k, n)
            chosen[near.indices, columns] = torch.where(torch.isfinite(near.values), key, math.inf)
            best, which = chosen.min(1)
            taken = torch.isfinite(best)
            if rule == "nearest":  # TR3D: only the site's nearest box of all
                taken &= which == distance.argmin(1)
            target[sites[taken]] = first + which[taken]
        first += n
    return target, boxes


class AxisAlignedBoxHead(nn.Module):
    """in_channels: the level's width; num_classes: K (labels 1..K); voxel_size / point_cloud_range: the
    voxelizer's grid (site centres and cell sizes derive from them). top_k: sites per box (FCAF3D: 18; TR3D: 6).
    label2level: with several levels (a list of SparseTensors, finest first), the level of each class 1..K
    (TR3D's ScanNet list: 0 the finer, 1 the coarser). rule: "smallest" or "nearest" (module docstring).
    box_weight: weight of the DIoU loss; focal_alpha / focal_gamma: the focal loss's."""

    def __init__(self, in_channels: int, num_classes: int, voxel_size: Sequence[float],
                 point_cloud_range: Sequence[float], top_k: int = 18, box_weight: float = 1.0,
                 focal_alpha: float = 0.25, focal_gamma: float = 2.0, score_threshold: float = 0.01,
                 nms_iou: float = 0.5, pre_max_size: int = 1000, post_max_size: int = 200,
                 label2level: Sequence[int] | None = None, rule: str = "smallest"):
        super().__init__()
        if rule not in ("smallest", "nearest"):
            raise ValueError(f"rule must be 'smallest' or 'nearest', got {rule!r}")
        if label2level is not None and len(label2level) != num_classes:
            raise ValueError(f"label2level needs one level per class ({num_classes}), got {len(label2level)}")
        self.label2level = None if label2level is None else [int(v) for v in label2level]
        self.rule = rule
        self.num_classes, self.top_k, self.box_weight = num_classes, top_k, box_weight
        self.voxel_size, self.range_min = tuple(voxel_size), tuple(point_cloud_range[:3])
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma
        self.score_threshold, self.nms_iou = score_threshold, nms_iou
        self.pre_max_size, self.post_max_size = pre_max_size, post_max_size
        self.cls = nn.Linear(in_channels, num_classes)
        self.box = nn.Linear(in_channels, 6)
        nn.init.constant_(self.cls.bias, -math.log((1 - 0.01) / 0.01))  # every score starts near 0.01
        nn.init.normal_(self.box.weight, std=0.01)
        nn.init.zeros_(self.box.bias)  # boxes start as the site's own cell

    def forward(self, x: SparseTensor | Sequence[SparseTensor]
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logits [S, K], boxes [S, 6]: centre, size in metres, site centres [S, 3], sample [S], level [S]) of
        the sites of x (one level, or a list of levels whose sites are taken in turn)."""
        levels = [x] if isinstance(x, SparseTensor) else list(x)
        if self.label2level is not None and len(levels) <= max(self.label2level):
            raise ValueError(f"label2level names level {max(self.label2level)}, the backbone gave {len(levels)}")
        out = []
        for i, level in enumerate(levels):
            centres = site_centres(level, self.voxel_size, self.range_min)
            cell = centres.new_tensor(self.voxel_size) * centres.new_tensor(level.stride[::-1])
            raw = self.box(level.feats).float()
            boxes = torch.cat([centres + raw[:, :3] * cell, cell * raw[:, 3:].clamp(max=MAX_LOG_SIZE).exp()], 1)
            out.append((self.cls(level.feats), boxes, centres, level.coords[:, 0].long(),
                        torch.full((len(centres),), i, dtype=torch.long, device=centres.device)))
        return tuple(torch.cat(parts) for parts in zip(*out, strict=True))

    def loss(self, x: SparseTensor | Sequence[SparseTensor], gt_boxes: torch.Tensor, num_gt: torch.Tensor) -> dict:
        logits, boxes, centres, site_batch, site_level = self(x)
        target, truth = assign_nearest(centres, site_batch, gt_boxes, num_gt, self.top_k, site_level,
                                       self.label2level, self.rule)
        positive = target >= 0
        onehot = torch.zeros_like(logits, dtype=torch.float32)
        onehot[positive, truth[target[positive], -1].long() - 1] = 1.0
        num_pos = positive.sum().clamp(min=1).float()
        loss_cls = sigmoid_focal_loss(logits.float(), onehot, torch.ones(len(logits), device=logits.device),
                                      self.focal_alpha, self.focal_gamma) / num_pos
        loss_box = (axis_aligned_diou_loss(boxes[positive], truth[target[positive], :6].float()).mean()
                    if positive.any() else boxes.sum() * 0.0)
        return {"loss": loss_cls + self.box_weight * loss_box, "loss_cls": loss_cls.detach(),
                "loss_box": loss_box.detach(), "positives": num_pos.detach()}

    @torch.no_grad()
    def predict(self, x: SparseTensor | Sequence[SparseTensor], frame_ids: Sequence[str]) -> list[dict]:
        logits, boxes, _, site_batch, _ = self(x)
        scores = torch.sigmoid(logits.float()).cpu().numpy()
        boxes, site_batch = boxes.cpu().numpy(), site_batch.cpu().numpy()
        out = []
        for b, frame_id in enumerate(frame_ids):
            site, cls = (scores[site_batch == b] >= self.score_threshold).nonzero()
            rows = (site_batch == b).nonzero()[0][site]
            keep = nms_axis_aligned(boxes[rows], scores[rows, cls], cls, self.nms_iou, self.pre_max_size,
                                    self.post_max_size)
            kept = np.zeros((len(keep), 7), np.float32)  # heading 0: axis aligned
            kept[:, :6] = boxes[rows[keep]]
            out.append({"frame_id": frame_id, "boxes": kept,
                        "scores": scores[rows[keep], cls[keep]].astype(np.float32),
                        "labels": (cls[keep] + 1).astype(np.int64)})
        return out
