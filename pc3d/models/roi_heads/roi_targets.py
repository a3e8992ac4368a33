"""Training targets of a two-stage detector's RoIs (OpenPCDet's ProposalTargetLayer and its canonical transform).

Per frame, each RoI is matched to the ground-truth box of its own class with the highest 3D IoU; then
`rois_per_frame` RoIs are drawn:

    foreground   IoU >= min(reg_fg_thresh, cls_fg_thresh)        up to fg_ratio of the draw, without replacement
    hard bg      cls_bg_thresh_lo <= IoU < reg_fg_thresh          hard_bg_ratio of the rest, with replacement
    easy bg      IoU < cls_bg_thresh_lo                           the remainder, with replacement

(when there is no background the draw is foreground with replacement; when one kind of background is missing
the other fills the rest). Targets of the drawn RoIs:

    reg_valid    IoU > reg_fg_thresh                              which RoIs the box regression trains on
    cls_target   1 above cls_fg_thresh, 0 below cls_bg_thresh, linear in IoU between (CLS_SCORE_TYPE roi_iou)
    gt_boxes     the matched box [7], and `canonical_targets` the same in the RoI's frame

Random draws use torch's generator (seeded by the trainer): the same seed draws the same RoIs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pc3d.geometry import iou_3d, rotate_points_z


@dataclass(frozen=True)
class RoISampler:
    rois_per_frame: int = 128
    fg_ratio: float = 0.5
    reg_fg_thresh: float = 0.55
    cls_fg_thresh: float = 0.75
    cls_bg_thresh: float = 0.25
    cls_bg_thresh_lo: float = 0.1
    hard_bg_ratio: float = 0.8

    def match(self, rois: torch.Tensor, roi_labels: torch.Tensor, gt_boxes: torch.Tensor, gt_labels: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """(best IoU [R], index of the matched box [R]) of rois [R, 7] (labels 1..K) against gt_boxes [G, 7] of
        the same class; a RoI whose class has no box gets IoU 0 and box 0."""
        best = rois.new_zeros(len(rois))
        which = torch.zeros(len(rois), dtype=torch.long, device=rois.device)
        if len(gt_boxes) == 0 or len(rois) == 0:
            return best, which
        iou = torch.as_tensor(iou_3d(rois[:, :7].detach().float().cpu(), gt_boxes[:, :7].float().cpu()),
                              dtype=rois.dtype).to(rois.device)
        iou = iou.masked_fill(roi_labels[:, None] != gt_labels[None, :], 0.0)
        best, which = iou.max(1)
        return best, which

    def draw(self, iou: torch.Tensor) -> torch.Tensor:
        """Indices [rois_per_frame] into the RoIs of IoUs iou [R] (R >= 1), as the module docstring."""
        n = self.rois_per_frame
        fg = torch.nonzero(iou >= min(self.reg_fg_thresh, self.cls_fg_thresh))[:, 0]
        easy = torch.nonzero(iou < self.cls_bg_thresh_lo)[:, 0]
        hard = torch.nonzero((iou < self.reg_fg_thresh) & (iou >= self.cls_bg_thresh_lo))[:, 0]
        if len(easy) + len(hard) == 0:
            return fg[_randint(len(fg), n, iou.device)]
        n_fg = min(int(round(self.fg_ratio * n)), len(fg))
        fg = fg[torch.randperm(len(fg), device=iou.device)[:n_fg]]
        n_bg = n - n_fg
        n_hard = min(int(n_bg * self.hard_bg_ratio), len(hard)) if len(easy) else n_bg
        n_hard = n_hard if len(hard) else 0
        bg = torch.cat([hard[_randint(len(hard), n_hard, iou.device)],
                        easy[_randint(len(easy), n_bg - n_hard, iou.device)]])
        return torch.cat([fg, bg])

    def cls_targets(self, iou: torch.Tensor) -> torch.Tensor:
        """Soft classification targets in [0, 1] from the RoIs' IoUs (roi_iou score type)."""
        lo, hi = self.cls_bg_thresh, self.cls_fg_thresh
        return torch.where(iou > hi, torch.ones_like(iou),
                           torch.where(iou < lo, torch.zeros_like(iou), (iou - lo) / (hi - lo)))


def _randint(high: int, size: int, device) -> torch.Tensor:
    if size == 0:
        return torch.zeros(0, dtype=torch.long, device=device)
    return torch.randint(high, (size,), device=device)


def canonical_targets(rois: torch.Tensor, gt_boxes: torch.Tensor) -> torch.Tensor:
    """gt_boxes [R, 7] in the frames of rois [R, 7]: centre relative to the RoI's, rotated by minus its heading
    (taken modulo 2 pi), heading relative to the RoI's, turned by pi when it points backwards and kept in
    [-pi / 2, pi / 2] (a RoI learns the nearer of a box's two headings)."""
    ry = torch.remainder(rois[:, 6], 2 * math.pi)
    local = torch.cat([gt_boxes[:, 0:3] - rois[:, 0:3], gt_boxes[:, 3:6], (gt_boxes[:, 6] - ry)[:, None]], 1)
    local = rotate_points_z(local[:, None], -ry)[:, 0]
    heading = torch.remainder(local[:, 6], 2 * math.pi)
    backwards = (heading > math.pi / 2) & (heading < 1.5 * math.pi)
    heading = torch.where(backwards, torch.remainder(heading + math.pi, 2 * math.pi), heading)
    heading = torch.where(heading > math.pi, heading - 2 * math.pi, heading).clamp(-math.pi / 2, math.pi / 2)
    return torch.cat([local[:, :6], heading[:, None]], 1)
