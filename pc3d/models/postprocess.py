"""Post-processing of detection candidates: score threshold, per-class rotated or circle NMS, top-K.

Produces the per-frame prediction every detector returns in eval mode (LiDAR frame, numpy):
``{"frame_id": str, "boxes": float32 [K, 7 (+2)], "scores": float32 [K], "labels": int64 [K] (1..num classes)}``;
boxes are x, y, z, dx, dy, dz, heading (, vx, vy when the head regresses velocity), as the batch's gt_boxes.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pc3d.errors import ConfigError
from pc3d.geometry import nms_circle, nms_multiclass, nms_rotated, wrap_angle


class PostProcessor(nn.Module):
    """Candidates (boxes [N, 7 (+2)], scores [N], labels [N]) of each frame -> the prediction dicts above (NMS
    reads the first 7 columns).

    score_threshold: candidates scoring below it are dropped first; None keeps every candidate, for heads that
    threshold their own (a center head thresholds the heat before an IoU branch rectifies the score; OpenPCDet's
    NMS after it takes no threshold, so a box of heat 0.3 whose rectified score fell to 0.05 stays).
    nms: 'rotated' (per-class BEV IoU above iou_threshold is suppressed), 'circle' (per-class centre
    distance below min_radius metres, CenterPoint) or 'none'. pre_max_size caps the candidates per
    class before NMS, post_max_size the detections per frame after it. class_agnostic: rotated NMS over all
    classes at once (boxes of different classes suppress each other, OpenPCDet's class_agnostic_nms: Voxel R-CNN).
    """

    def __init__(self, score_threshold: float | None = 0.1, nms: str = "rotated", iou_threshold: float = 0.1,
                 min_radius: float | dict | None = None, pre_max_size: int = 1000, post_max_size: int = 100,
                 class_agnostic: bool = False):
        super().__init__()
        if nms not in ("rotated", "circle", "none"):
            raise ConfigError(f"nms must be 'rotated', 'circle' or 'none', not {nms!r}")
        self.score_threshold, self.nms, self.iou_threshold = score_threshold, nms, iou_threshold
        self.min_radius, self.class_agnostic = min_radius, class_agnostic
        self.pre_max_size, self.post_max_size = pre_max_size, post_max_size

    def forward(self, candidates: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], frame_ids: list[str]
                ) -> list[dict]:
        return [self.frame(*c, frame_id=f) for c, f in zip(candidates, frame_ids, strict=True)]

    def frame(self, boxes, scores, labels, frame_id: str = "") -> dict:
        boxes = _np(boxes).astype(np.float32).reshape(-1, boxes.shape[-1] if len(boxes) else 7)[:, :9]
        scores, labels = _np(scores).astype(np.float32).reshape(-1), _np(labels).astype(np.int64).reshape(-1)
        if self.score_threshold is not None:
            keep = scores >= self.score_threshold
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        if len(boxes) and self.nms == "rotated" and self.class_agnostic:
            keep = nms_rotated(boxes, scores, self.iou_threshold, self.pre_max_size)
        elif len(boxes) and self.nms == "rotated":
            keep = nms_multiclass(boxes, scores, labels, self.iou_threshold, self.pre_max_size)
        elif len(boxes) and self.nms == "circle":
            keep = self._circle(boxes, scores, labels)
        else:
            keep = np.argsort(-scores, kind="stable")
        keep = keep[: self.post_max_size]
        boxes = boxes[keep].copy()
        boxes[:, 6] = wrap_angle(boxes[:, 6])
        return {"frame_id": frame_id, "boxes": boxes, "scores": scores[keep], "labels": labels[keep]}

    def _circle(self, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
        kept = []
        for label in np.unique(labels):
            idx = np.flatnonzero(labels == label)
            idx = idx[np.argsort(-scores[idx], kind="stable")[: self.pre_max_size]]
            radius = self.min_radius
            if isinstance(radius, dict):
                radius = radius.get(int(label), radius.get(str(int(label)), 1.0))
            kept.append(idx[nms_circle(boxes[idx], scores[idx], float(radius or 1.0))])
        keep = np.concatenate(kept)
        return keep[np.lexsort((keep, -scores[keep].astype(np.float64)))]


def _np(x) -> np.ndarray:
    return x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
