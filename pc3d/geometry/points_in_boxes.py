"""Which points lie in which rotated 3D boxes, without an N x M table.

Boxes are bucketed on a bird's-eye-view grid by the cells their footprints touch, and every point
(in parallel) tests only the boxes of its own cell. A point on a face counts as inside.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from pc3d_ops import geometry as _k

from ._arrays import check_boxes, check_points, like, sync_threads


def _bucket_side(boxes: np.ndarray) -> float:
    """BEV cell side: about one footprint, so a box touches at most 4 cells; coarser when a few
    boxes are huge (no box covers more than ~33 x 33 cells) or far apart (<= ~1024^2 cells)."""
    c, s = np.abs(np.cos(boxes[:, 6])), np.abs(np.sin(boxes[:, 6]))
    extent = np.maximum(c * boxes[:, 3] + s * boxes[:, 4], s * boxes[:, 3] + c * boxes[:, 4])
    spread = max(np.ptp(boxes[:, 0]), np.ptp(boxes[:, 1]), float(extent.max()))
    return max(float(np.median(extent)), float(extent.max()) / 32, spread / 1023, 1e-3)


def _inputs(points: Any, boxes: Any) -> tuple[np.ndarray, np.ndarray, float]:
    pts = check_points(points)
    if pts.dtype not in (np.float32, np.float64):
        pts = pts.astype(np.float32)
    bx = np.ascontiguousarray(check_boxes(boxes)[:, :7], np.float64)
    side = _bucket_side(bx) if len(bx) else 1.0
    sync_threads()
    return pts, bx, side


def points_in_boxes(points: Any, boxes: Any) -> Any:
    """int32 [N]: index of the first (lowest-index) box containing each point, -1 for none.

    points: [N, 3 + C] (x, y, z first); boxes: [M, 7+] LiDAR boxes. Numpy or torch, same kind out.
    """
    pts, bx, side = _inputs(points, boxes)
    return like(_k.points_in_boxes_first(pts, bx, side), points)


def points_in_boxes_count(points: Any, boxes: Any) -> Any:
    """int32 [M]: the number of points [N, 3 + C] inside each box [M, 7+].

    A point inside overlapping boxes counts in each of them. Numpy or torch, same kind out.
    """
    pts, bx, side = _inputs(points, boxes)
    return like(_k.points_in_boxes_count(pts, bx, side), boxes)
