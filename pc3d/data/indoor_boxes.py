"""Axis-aligned 3D boxes of the ScanNet detection benchmark, computed from the instance segmentation as the
benchmark's data preparation does (VoteNet / mmdetection3d's ScanNet export): each instance of one of the 18
detection classes gets the box spanning its points, min to max on every axis, in the axis-aligned frame.

Classes: the segmentation train ids from `first_class` on (ScanNet: the 20 classes without wall and floor,
first_class 2, in the same order: cabinet ... otherfurniture, ``pc3d.data.scannet.SCANNET18_CLASSES``); box
class id = train id - first_class + 1. An instance's class is the majority segmentation label of its points
(ScanNet's aggregation gives an instance one label; the majority only matters where per-vertex labels
disagree). Instance id 0 (no instance) never makes a box.
"""
from __future__ import annotations

import numpy as np

from pc3d.errors import DataFormatError


def instance_boxes(points: np.ndarray, point_labels: np.ndarray, instance_ids: np.ndarray, first_class: int = 2,
                   frame: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(gt_boxes float32 [M, 7]: centre, size, heading 0; gt_labels int64 [M]: 1..K) of a scene's points
    [N, >= 3] with segmentation train ids [N] (-1 ignored) and instance ids [N], in instance id order.
    DataFormatError naming the frame when the three do not have one row per point."""
    n = len(points)
    if len(point_labels) != n or len(instance_ids) != n:
        raise DataFormatError(frame, f"{n} points but {len(point_labels)} labels and {len(instance_ids)} instance ids")
    boxes, labels = [], []
    for instance in np.unique(instance_ids[instance_ids > 0]):
        mask = instance_ids == instance
        votes = point_labels[mask]
        votes = votes[votes >= 0]
        if not len(votes):
            continue
        label = int(np.bincount(votes).argmax())
        if label < first_class:  # ScanNet's wall, floor: not detection classes
            continue
        lo, hi = points[mask, :3].min(0), points[mask, :3].max(0)
        boxes.append(np.concatenate([(lo + hi) / 2, hi - lo, [0.0]]))
        labels.append(label - first_class + 1)
    return np.asarray(boxes, np.float32).reshape(-1, 7), np.asarray(labels, np.int64)
