"""SECOND's anchor head: per-class anchors, focal classification, residual box regression with the
sin-difference trick and a direction classifier."""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from pc3d.errors import ConfigError
from pc3d.geometry import ResidualCoder
from pc3d.models.heads.anchors import AnchorGenerator, assign_targets
from pc3d.models.heads.losses import add_sin_difference, sigmoid_focal_loss, weighted_smooth_l1


class AnchorHead(nn.Module):
    """1x1 convs over the BEV map [B, C, H, W]: class logits [B, H*W*A, K], box deltas [B, H*W*A, 7],
    direction logits [B, H*W*A, num_dir_bins]; A = K classes x R rotations anchors per cell.

    loss(out, batch) -> {"loss", "loss_cls", "loss_box", "loss_dir"};
    predict(out) -> per frame (boxes [N, 7], scores [N], labels [N] 1..K), scores above score_threshold;
    candidates(out, n): the same for the n best-scored anchors, whatever their score (a two-stage detector's
    proposals).

    normalize: what each loss term is divided by. "batch" (mmdetection3d's): the sums over the batch's anchors by
    the batch's positive anchors; "frame" (OpenPCDet's AnchorHeadTemplate): each frame's sums by its own positive
    anchors (at least 1), averaged over the batch's frames, so a frame crowded with objects weighs as much as one
    with a single car.
    """

    def __init__(self, in_channels: int, num_classes: int, point_cloud_range: Sequence[float],
                 anchor_sizes: Sequence[Sequence[float]], anchor_bottom_heights: Sequence[float],
                 matched_thresholds: Sequence[float], unmatched_thresholds: Sequence[float],
                 anchor_rotations: Sequence[float] = (0.0, 1.5707963), dir_offset: float = 0.78539,
                 num_dir_bins: int = 2, cls_weight: float = 1.0, box_weight: float = 2.0, dir_weight: float = 0.2,
                 code_weights: Sequence[float] = (1.0,) * 7, score_threshold: float = 0.1, pre_max_size: int = 4096,
                 normalize: str = "batch"):
        super().__init__()
        if normalize not in ("batch", "frame"):
            raise ConfigError(f"AnchorHead normalize must be 'batch' or 'frame', got {normalize!r}")
        self.normalize = normalize
        self.num_classes = num_classes
        self.anchor_generator = AnchorGenerator(point_cloud_range, anchor_sizes, anchor_bottom_heights,
                                                anchor_rotations)
        a = self.anchor_generator.num_per_cell
        self.conv_cls = nn.Conv2d(in_channels, a * num_classes, 1)
        self.conv_box = nn.Conv2d(in_channels, a * 7, 1)
        self.conv_dir = nn.Conv2d(in_channels, a * num_dir_bins, 1)
        nn.init.constant_(self.conv_cls.bias, -math.log((1 - 0.01) / 0.01))
        nn.init.normal_(self.conv_box.weight, std=0.001)
        nn.init.zeros_(self.conv_box.bias)
        self.coder = ResidualCoder()
        self.matched, self.unmatched = list(matched_thresholds), list(unmatched_thresholds)
        self.dir_offset, self.num_dir_bins = dir_offset, num_dir_bins
        self.weights = (cls_weight, box_weight, dir_weight)
        self.register_buffer("code_weights", torch.tensor(code_weights, dtype=torch.float32), persistent=False)
        self.score_threshold, self.pre_max_size = score_threshold, pre_max_size
        self._anchors: dict = {}

    def anchors(self, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """(anchors [H*W*A, 7], class ids [H*W*A]) for an H x W map, cached."""
        if (height, width) not in self._anchors:
            anchors = self.anchor_generator(height, width).reshape(-1, 7)
            classes = np.tile(self.anchor_generator.classes(), height * width)
            self._anchors[height, width] = (anchors, classes)
        return self._anchors[height, width]

    def forward(self, x: torch.Tensor) -> dict:
        b, _, h, w = x.shape

        def flat(t: torch.Tensor) -> torch.Tensor:  # float32 under bf16 autocast too: anchors + deltas decode exactly
            return t.permute(0, 2, 3, 1).reshape(b, h * w * self.anchor_generator.num_per_cell, -1).float()

        return {"cls": flat(self.conv_cls(x)), "box": flat(self.conv_box(x)), "dir": flat(self.conv_dir(x)),
                "map_size": (h, w)}

    def loss(self, out: dict, batch: dict) -> dict:
        anchors, classes = self.anchors(*out["map_size"])
        targets = [assign_targets(anchors, classes, batch["gt_boxes"][i, :n, :7].cpu().numpy(),
                                  batch["gt_boxes"][i, :n, -1].long().cpu().numpy(), self.matched, self.unmatched,
                                  self.coder) for i, n in enumerate(batch["num_gt"].tolist())]
        dev = out["cls"].device
        labels = torch.stack([t[0] for t in targets]).to(dev)
        box_targets = torch.stack([t[1] for t in targets]).to(dev)
        headings = torch.stack([t[2] for t in targets]).to(dev)
        pos = (labels > 0).float()
        if self.normalize == "batch":
            norm = pos.sum().clamp(min=1.0)
        else:  # a frame's positives, and the batch's mean over frames
            norm = pos.sum(1, keepdim=True).clamp(min=1.0) * len(targets)
        cls_weights = (labels >= 0).float() / norm
        one_hot = F.one_hot(labels.clamp(min=0), self.num_classes + 1)[..., 1:].float()
        loss_cls = sigmoid_focal_loss(out["cls"], one_hot, cls_weights)
        pred, target = add_sin_difference(out["box"], box_targets)
        loss_box = weighted_smooth_l1(pred, target, pos / norm, self.code_weights)
        rot = torch.remainder(headings - self.dir_offset, 2 * math.pi)
        dir_target = (rot / (2 * math.pi / self.num_dir_bins)).floor().long().clamp(max=self.num_dir_bins - 1)
        loss_dir = F.cross_entropy(out["dir"].transpose(1, 2), dir_target, reduction="none") * pos
        loss_dir = loss_dir.sum() / norm if self.normalize == "batch" else (loss_dir / norm).sum()
        wc, wb, wd = self.weights
        loss = wc * loss_cls + wb * loss_box + wd * loss_dir
        return {"loss": loss, "loss_cls": loss_cls.detach(), "loss_box": loss_box.detach(),
                "loss_dir": loss_dir.detach(), "num_pos": pos.sum().detach() / len(targets)}

    def predict(self, out: dict) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        return self._decode(out, self.score_threshold, self.pre_max_size)

    def candidates(self, out: dict, pre_max_size: int) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        return self._decode(out, None, pre_max_size)

    @torch.no_grad()
    def _decode(self, out: dict, threshold: float | None, pre_max_size: int
                ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        anchors_np, _ = self.anchors(*out["map_size"])
        anchors = torch.from_numpy(anchors_np).to(out["box"].device)
        period = 2 * math.pi / self.num_dir_bins
        frames = []
        for cls, box, dirs in zip(out["cls"], out["box"], out["dir"], strict=True):
            scores, labels = torch.sigmoid(cls).max(1)
            keep = (torch.arange(len(scores), device=scores.device) if threshold is None
                    else torch.nonzero(scores >= threshold)[:, 0])
            keep = keep[scores[keep].argsort(descending=True)[:pre_max_size]]
            boxes = self.coder.decode(box[keep], anchors[keep])
            rot = torch.remainder(boxes[:, 6] - self.dir_offset, period)
            boxes[:, 6] = rot + self.dir_offset + period * dirs[keep].argmax(1).to(boxes.dtype)
            frames.append((boxes, scores[keep], labels[keep] + 1))
        return frames
