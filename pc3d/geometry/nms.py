"""Non-maximum suppression of LiDAR boxes: rotated BEV IoU, CenterPoint's circle NMS, per class; and of
axis-aligned 3D boxes (indoor detection).

All return int64 indices into the input, in descending score order (equal scores: lower index
first), as numpy or torch like the boxes. Boxes only meet their neighbours on a BEV grid, so
thousands of boxes take milliseconds and no K x K table is formed.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from pc3d_ops import box_iou as _k

from pc3d.errors import ConfigError, DataFormatError

from ._arrays import check_boxes, check_positive, like, to_numpy


def _order(scores: Any, n: int, pre_max_size: int | None) -> np.ndarray:
    s = to_numpy(scores)
    if s.shape != (n,):
        raise DataFormatError(None, f"scores must be [{n}] (one per box), got shape {tuple(s.shape)}")
    if np.isnan(s).any():
        raise DataFormatError(None, "scores contain NaN")
    order = np.argsort(-s.astype(np.float64), kind="stable")
    if pre_max_size is not None:
        order = order[: _count(pre_max_size, "pre_max_size")]
    return order


def _count(value: int | None, name: str) -> int:
    if value is None:
        return np.iinfo(np.int64).max
    if int(value) != value or value < 0:
        raise ConfigError(f"{name} must be a non-negative integer or None, got {value!r}")
    return int(value)


def _grid_side(xy: np.ndarray, reach: float) -> float:
    # neighbours within `reach` sit in adjacent cells; a floor keeps far-spread grids' keys small
    spread = float(np.ptp(xy, axis=0).max()) if len(xy) else 0.0
    return max(reach, spread / 1e6, 1e-6)


def nms_rotated(boxes: Any, scores: Any, iou_threshold: float, pre_max_size: int | None = None,
                post_max_size: int | None = None) -> Any:
    """Greedy NMS by rotated BEV IoU: int64 [K] kept indices, descending score.

    boxes: [M, 7+]; scores: [M]. A box is dropped when its BEV IoU with a kept, higher-scored box
    exceeds iou_threshold. pre_max_size keeps only the best-scored boxes before NMS,
    post_max_size caps the result.
    """
    bx = check_boxes(boxes)
    order = _order(scores, len(bx), pre_max_size)
    sorted_boxes = np.ascontiguousarray(bx[order, :7], np.float64)
    radius = 0.5 * np.hypot(sorted_boxes[:, 3], sorted_boxes[:, 4])
    side = _grid_side(sorted_boxes[:, :2], 2 * float(radius.max()) if len(radius) else 1.0)
    ranks = _k.nms_rotated(sorted_boxes, float(iou_threshold), _count(post_max_size, "post_max_size"), side)
    return like(order[ranks].astype(np.int64), boxes)


def nms_circle(boxes_or_centres: Any, scores: Any, min_radius: float, post_max_size: int | None = None) -> Any:
    """CenterPoint's circle NMS: drop centres within min_radius (BEV, metres) of a kept, better one.

    boxes_or_centres: [M, 2+] (x, y first). Returns int64 [K] kept indices, descending score.
    CenterPoint's own implementation compares the *squared* distance with its configured value,
    so pass sqrt of a CenterPoint config's min_radius to reproduce it.
    """
    arr = to_numpy(boxes_or_centres)
    if arr.ndim != 2 or arr.shape[1] < 2:
        raise DataFormatError(None, f"boxes_or_centres must be [M, 2+], got shape {tuple(arr.shape)}")
    if not np.isfinite(arr[:, :2]).all():
        raise DataFormatError(None, "boxes_or_centres have NaN or infinite centres")
    radius = check_positive(min_radius, "min_radius", allow_zero=True)
    order = _order(scores, len(arr), None)
    xy = np.ascontiguousarray(arr[order, :2], np.float64)
    ranks = _k.nms_circle(xy, radius, _count(post_max_size, "post_max_size"), _grid_side(xy, radius))
    return like(order[ranks].astype(np.int64), boxes_or_centres)


def nms_multiclass(boxes: Any, scores: Any, labels: Any, iou_threshold: float, pre_max_size: int | None = None,
                   post_max_size: int | None = None) -> Any:
    """Rotated NMS within each class: int64 [K] kept indices, descending score over all classes.

    labels: [M] integer class ids; boxes of different classes never suppress each other.
    pre_max_size and post_max_size apply per class (as OpenPCDet's multi-class NMS).
    """
    bx = check_boxes(boxes)
    s = to_numpy(scores)
    lab = to_numpy(labels)
    if lab.shape != (len(bx),):
        raise DataFormatError(None, f"labels must be [{len(bx)}] (one per box), got shape {tuple(lab.shape)}")
    _order(s, len(bx), None)
    kept = []
    for label in np.unique(lab):  # a handful of classes
        idx = np.flatnonzero(lab == label)
        kept.append(idx[nms_rotated(bx[idx], s[idx], iou_threshold, pre_max_size, post_max_size)])
    keep = np.concatenate(kept) if kept else np.zeros(0, np.int64)
    # descending score, lower index first on ties
    keep = keep[np.lexsort((keep, -s[keep].astype(np.float64)))]
    return like(keep.astype(np.int64), boxes)


def nms_axis_aligned(boxes: Any, scores: Any, labels: Any, iou_threshold: float, pre_max_size: int | None = None,
                     post_max_size: int | None = None) -> np.ndarray:
    """Greedy per-class NMS by axis-aligned 3D IoU (heading ignored): int64 [K] kept indices into boxes [M, 6+],
    descending score over all classes (ties: lower index first). pre_max_size: the best-scored boxes of each
    class considered; post_max_size: the cap on the result. Indoor detectors keep a few hundred candidates
    per class; the IoU is computed only between each kept box and the boxes after it (pc3d_ops.box_iou)."""
    bx, s, lab = to_numpy(boxes), to_numpy(scores), to_numpy(labels)
    if bx.ndim != 2 or bx.shape[1] < 6 or s.shape != (len(bx),) or lab.shape != (len(bx),):
        raise DataFormatError(None, f"boxes must be [M, 6+] with M scores and labels, got {bx.shape}, {s.shape}, "
                                    f"{lab.shape}")
    kept = []
    for label in np.unique(lab):
        idx = np.flatnonzero(lab == label)
        idx = idx[_order(s[idx], len(idx), pre_max_size)]
        kept.append(idx[_k.nms_axis_aligned(np.ascontiguousarray(bx[idx, :6], np.float64), float(iou_threshold))])
    keep = np.concatenate(kept) if kept else np.zeros(0, np.int64)
    keep = keep[np.lexsort((keep, -s[keep].astype(np.float64)))]
    return keep[:_count(post_max_size, "post_max_size")].astype(np.int64)
