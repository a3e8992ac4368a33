"""Voxel R-CNN's second stage (OpenPCDet's VoxelRCNNHead; E-3DSNN's VoxelRCNNHead_spike with a neuron):

    proposals    the first stage's boxes of each frame: top pre_max_size by score -> rotated NMS (iou_threshold)
                 -> at most post_max_size RoIs (their class is the first stage's); boxes that are not finite
                 (a diverging first stage) are left out
    targets      (training) rois_per_frame RoIs drawn per frame, their targets (roi_targets.RoISampler)
    grid pool    grid_size^3 points per RoI pool each source stage (grid_pool.NeighborVoxelPool), concatenated
    shared FC    [grid^3 x pooled channels] -> shared_fc widths, then a cls branch (cls_fc -> 1 logit) and a
                 reg branch (reg_fc -> 7 residuals of the ResidualCoder in the RoI's frame)

A RoI's score is sigmoid(logit); its box is the residual decoded against the RoI moved to the origin (heading
kept), rotated by the RoI's heading and moved back: OpenPCDet's generate_predicted_boxes. Losses (OpenPCDet's, all
weights configurable): binary cross-entropy against the soft IoU target over every drawn RoI; smooth-L1 (beta 1/9)
of the residuals over the RoIs with reg_valid, divided by their count; the corner loss (smooth-L1, beta 1, of
each corner's distance to the matched box's or its pi-turned twin's, mean over corners and RoIs).

Layers: ANN (neuron None): Linear -> BN -> ReLU per width, dropout between widths; spiking: neuron -> Linear ->
BN, as E-3DSNN's. Class agnostic (one score and one box per RoI), as both released configs.

Stated difference: a frame keeps the RoIs its NMS keeps. The release pads every frame to post_max_size with
all-zero boxes; there they are drawn as easy background in training and refined at test time (a zero-size box
that no NMS removes, kept when it scores 0.3). Either way this only matters when NMS keeps fewer boxes than
post_max_size.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from pc3d.errors import ConfigError
from pc3d.geometry import ResidualCoder, nms_rotated, rotate_points_z
from pc3d.models.heads.losses import corner_loss, weighted_smooth_l1
from pc3d.models.roi_heads.grid_pool import NeighborVoxelPool, roi_grid_points
from pc3d.models.roi_heads.roi_targets import RoISampler, canonical_targets
from pc3d.sparse import SparseTensor

Candidates = list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]  # per frame: boxes [N, 7+], scores, labels


def fc_stack(cin: int, widths: Sequence[int], dropout: float, neuron: Callable[[], nn.Module] | None
             ) -> tuple[nn.Sequential, int]:
    layers: list[nn.Module] = []
    for k, width in enumerate(widths):
        linear = [nn.Linear(cin, width, bias=False), nn.BatchNorm1d(width)]
        layers += [neuron(), *linear] if neuron is not None else [*linear, nn.ReLU()]
        if k != len(widths) - 1 and dropout > 0:
            layers.append(nn.Dropout(dropout))
        cin = width
    return nn.Sequential(*layers), cin


class VoxelRCNNHead(nn.Module):
    """stage_channels: the backbone's widths by stage name; sources: per stage name read, its NeighborVoxelPool
    arguments (mlps, query_ranges, radii, nsamples, pool). proposals_train / proposals_test: pre_max_size,
    post_max_size, iou_threshold. sampler: RoISampler fields. Forward: see the module docstring."""

    def __init__(self, stage_channels: Mapping[str, int], voxel_size: Sequence[float],
                 point_cloud_range: Sequence[float], sources: Mapping[str, Mapping], grid_size: int = 6,
                 shared_fc: Sequence[int] = (256, 256), cls_fc: Sequence[int] = (256, 256),
                 reg_fc: Sequence[int] = (256, 256), dropout: float = 0.3,
                 proposals_train: Mapping | None = None, proposals_test: Mapping | None = None,
                 sampler: Mapping | None = None, cls_weight: float = 1.0, reg_weight: float = 1.0,
                 corner_weight: float = 1.0, code_weights: Sequence[float] = (1.0,) * 7,
                 neuron: Callable[[], nn.Module] | None = None):
        super().__init__()
        missing = sorted(set(sources) - set(stage_channels))
        if missing:
            raise ConfigError(f"VoxelRCNNHead reads stages {missing}; the backbone has {sorted(stage_channels)}")
        self.voxel_size, self.point_cloud_range = list(voxel_size), list(point_cloud_range)
        self.sources, self.grid_size = list(sources), int(grid_size)
        self.pools = nn.ModuleDict({name: NeighborVoxelPool(stage_channels[name], **cfg, neuron=neuron)
                                    for name, cfg in sources.items()})
        pooled = self.grid_size ** 3 * sum(pool.out_channels for pool in self.pools.values())
        self.shared_fc, width = fc_stack(pooled, shared_fc, dropout, neuron)
        self.cls_fc, cls_width = fc_stack(width, cls_fc, dropout, neuron)
        self.reg_fc, reg_width = fc_stack(width, reg_fc, dropout, neuron)
        self.cls_pred = nn.Linear(cls_width, 1)
        self.reg_pred = nn.Linear(reg_width, 7)
        for m in [*self.shared_fc, *self.cls_fc, *self.reg_fc]:
            if isinstance(m, nn.Linear):
                nn.init.xavier_normal_(m.weight)
        nn.init.normal_(self.cls_pred.weight, 0, 0.01)
        nn.init.normal_(self.reg_pred.weight, 0, 0.001)
        nn.init.zeros_(self.cls_pred.bias)
        nn.init.zeros_(self.reg_pred.bias)
        self.proposals_cfg = {True: {"pre_max_size": 9000, "post_max_size": 512, "iou_threshold": 0.8,
                                     **(proposals_train or {})},
                              False: {"pre_max_size": 2048, "post_max_size": 100, "iou_threshold": 0.7,
                                      **(proposals_test or {})}}
        self.sampler = RoISampler(**(sampler or {}))
        self.weights = (cls_weight, reg_weight, corner_weight)
        self.register_buffer("code_weights", torch.tensor(code_weights, dtype=torch.float32), persistent=False)
        self.coder = ResidualCoder()

    def proposals(self, candidates: Candidates) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per frame (rois [P, 7], labels [P] 1..K) from the first stage's candidates (train or test setting)."""
        cfg = self.proposals_cfg[self.training]
        out = []
        for boxes, scores, labels in candidates:
            finite = torch.nonzero(torch.isfinite(boxes[:, :7]).all(1) & torch.isfinite(scores))[:, 0]
            boxes, scores, labels = boxes[finite, :7].detach().float(), scores[finite].detach(), labels[finite]
            keep = nms_rotated(boxes, scores, cfg["iou_threshold"], cfg["pre_max_size"], cfg["post_max_size"])
            out.append((boxes[keep], labels[keep]))
        return out

    def forward(self, stages: Mapping[str, SparseTensor], rois: torch.Tensor, roi_batch: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits [R], residuals [R, 7]) of rois [R, 7] of samples roi_batch [R] over the backbone's stages."""
        points = roi_grid_points(rois, self.grid_size)  # [R, G, 3]
        query = points.reshape(-1, 3)
        query_batch = roi_batch.repeat_interleave(points.shape[1])
        pooled = torch.cat([self.pools[name](stages[name], query, query_batch, self.voxel_size,
                                             self.point_cloud_range).reshape(len(rois), points.shape[1], -1)
                            for name in self.sources], 2)
        shared = self.shared_fc(pooled.reshape(len(rois), -1))
        return self.cls_pred(self.cls_fc(shared))[:, 0], self.reg_pred(self.reg_fc(shared))

    def decode(self, residuals: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        """Boxes [R, 7] in the LiDAR frame from residuals [R, 7] against rois [R, 7]."""
        local = rois.detach().clone()
        local[:, 0:3] = 0
        boxes = self.coder.decode(residuals, local)
        boxes = rotate_points_z(boxes[:, None], rois[:, 6])[:, 0]
        return torch.cat([boxes[:, 0:3] + rois[:, 0:3], boxes[:, 3:]], 1)

    @staticmethod
    def _stack(per_frame: Mapping[int, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(the RoIs of every frame [R, 7], each one's frame index [R]) from {frame index: RoIs}."""
        rois = list(per_frame.values())
        batch = torch.cat([torch.full((len(r),), i, dtype=torch.long, device=r.device) for i, r in per_frame.items()])
        return torch.cat(rois), batch

    def loss(self, stages: Mapping[str, SparseTensor], candidates: Candidates, batch: dict) -> dict:
        drawn_rois, drawn_gt, drawn_iou = {}, [], []
        for i, (rois, labels) in enumerate(self.proposals(candidates)):
            if len(rois) == 0:  # no proposal at all: nothing to draw from this frame
                continue
            n = int(batch["num_gt"][i])
            gt = batch["gt_boxes"][i, :n].to(rois)
            iou, which = self.sampler.match(rois, labels, gt[:, :7], gt[:, -1].long())
            pick = self.sampler.draw(iou)
            drawn_rois[i] = rois[pick]
            drawn_gt.append(gt[which[pick], :7] if n else rois.new_zeros(len(pick), 7))
            drawn_iou.append(iou[pick])
        if not drawn_rois:
            zero = sum(p.sum() for p in self.parameters()) * 0.0
            return {"loss": zero, "loss_rcnn_cls": zero.detach(), "loss_rcnn_reg": zero.detach(),
                    "loss_rcnn_corner": zero.detach(), "rcnn_fg": zero.detach()}
        rois, roi_batch = self._stack(drawn_rois)
        gt, iou = torch.cat(drawn_gt), torch.cat(drawn_iou)
        logits, residuals = self(stages, rois, roi_batch)
        cls_target = self.sampler.cls_targets(iou)
        loss_cls = F.binary_cross_entropy_with_logits(logits.float(), cls_target, reduction="mean")
        fg = (iou > self.sampler.reg_fg_thresh).float()
        n_fg = fg.sum().clamp(min=1.0)
        anchors = rois.clone()
        anchors[:, 0:3] = 0
        anchors[:, 6] = 0
        targets = self.coder.encode(canonical_targets(rois, gt), anchors)
        loss_reg = weighted_smooth_l1(residuals.float(), targets, fg, self.code_weights) / n_fg
        fg_rows = fg > 0
        loss_corner = (corner_loss(self.decode(residuals[fg_rows].float(), rois[fg_rows]), gt[fg_rows]).mean()
                       if fg_rows.any() else residuals.sum() * 0.0)
        wc, wr, wk = self.weights
        loss = wc * loss_cls + wr * loss_reg + wk * loss_corner
        return {"loss": loss, "loss_rcnn_cls": loss_cls.detach(), "loss_rcnn_reg": loss_reg.detach(),
                "loss_rcnn_corner": loss_corner.detach(), "rcnn_fg": fg.sum().detach() / len(drawn_rois)}

    @torch.no_grad()
    def predict(self, stages: Mapping[str, SparseTensor], candidates: Candidates) -> Candidates:
        """Per frame (boxes [P, 7], scores [P], labels [P]) of the refined RoIs (the post-processor's input)."""
        proposals = self.proposals(candidates)
        if sum(len(r) for r, _ in proposals) == 0:
            return [(r.new_zeros(0, 7), r.new_zeros(0), labels) for r, labels in proposals]
        rois, roi_batch = self._stack({i: r for i, (r, _) in enumerate(proposals)})
        logits, residuals = self(stages, rois, roi_batch)
        boxes, scores = self.decode(residuals.float(), rois), torch.sigmoid(logits.float())
        return [(boxes[roi_batch == i], scores[roi_batch == i], labels) for i, (_, labels) in enumerate(proposals)]
