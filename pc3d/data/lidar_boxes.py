"""Boxes fitted to the points of labelled LiDAR instances (SemanticKITTI's cars, persons and bicyclists):
what a MOS sequence without the simulator's exact boxes gives as ``gt_boxes``.

``fit_box``: heading along the principal axis of the points' BEV covariance, extent and centre from the
min / max of the points in that rotated frame and in z. ``instance_boxes``: one box per (instance, box
class) group of at least MIN_BOX_POINTS points.
"""
from __future__ import annotations

import numpy as np

__all__ = ["BOX_CLASS_NAMES", "BOX_CLASS_OF_RAW", "MIN_BOX_POINTS", "MIN_BOX_SIZE", "fit_box", "instance_boxes"]

BOX_CLASS_NAMES = ("car", "pedestrian", "cyclist")
# raw SemanticKITTI id (static and moving) -> box class id 1..3 of BOX_CLASS_NAMES
BOX_CLASS_OF_RAW = {10: 1, 252: 1, 30: 2, 254: 2, 31: 3, 253: 3}
MIN_BOX_POINTS = 5
MIN_BOX_SIZE = 0.1  # metres: the least extent of a fitted box (a few points on one scan line span no width)


def fit_box(xyz: np.ndarray) -> np.ndarray:
    """float32 [7] box (x, y, z centre, dx, dy, dz, heading) fitted to an instance's points [K >= 1, 3].

    heading: the principal axis of the points' BEV (x, y) covariance, in [-pi / 2, pi / 2) (a fitted
    box cannot tell front from back); dx along it, dy across; extent and centre from the min / max of
    the points in that rotated frame (x, y) and in z; every extent at least MIN_BOX_SIZE (about the
    centre).
    """
    xyz = np.asarray(xyz, np.float64)
    xy = xyz[:, :2] - xyz[:, :2].mean(0)
    cov = xy.T @ xy
    _, vectors = np.linalg.eigh(cov)
    axis = vectors[:, -1]  # largest eigenvalue
    heading = float(np.arctan2(axis[1], axis[0]))
    if heading >= np.pi / 2:
        heading -= np.pi
    elif heading < -np.pi / 2:
        heading += np.pi
    c, s = np.cos(heading), np.sin(heading)
    local = xyz[:, :2] @ np.array([[c, -s], [s, c]])  # (x, y) in the box axes
    lo, hi = local.min(0), local.max(0)
    mid = (lo + hi) / 2
    z_lo, z_hi = xyz[:, 2].min(), xyz[:, 2].max()
    centre = np.array([c * mid[0] - s * mid[1], s * mid[0] + c * mid[1]])
    size = np.maximum([*(hi - lo), z_hi - z_lo], MIN_BOX_SIZE)
    return np.array([*centre, (z_lo + z_hi) / 2, *size, heading], np.float32)


def instance_boxes(xyz: np.ndarray, raw_semantic: np.ndarray, instance: np.ndarray,
                   min_points: int = MIN_BOX_POINTS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(boxes float32 [M, 7], labels int64 [M] 1..3 (BOX_CLASS_NAMES), instance ids int64 [M]) fitted to the
    points of every (instance id > 0, box class) group with at least min_points points, by ``fit_box``;
    sorted by instance id."""
    cls = np.zeros(len(raw_semantic), np.int64)
    for raw, c in BOX_CLASS_OF_RAW.items():
        cls[raw_semantic == raw] = c
    keep = (cls > 0) & (instance > 0)
    if not keep.any():
        return np.zeros((0, 7), np.float32), np.zeros(0, np.int64), np.zeros(0, np.int64)
    pairs, inverse, counts = np.unique(np.stack([instance[keep], cls[keep]], 1), axis=0, return_inverse=True,
                                       return_counts=True)
    inverse = inverse.reshape(-1)
    boxes, labels, ids = [], [], []
    kept_xyz = xyz[keep]
    for k, (inst, c) in enumerate(pairs):
        if counts[k] >= min_points:
            boxes.append(fit_box(kept_xyz[inverse == k]))
            labels.append(int(c))
            ids.append(int(inst))
    return (np.asarray(boxes, np.float32).reshape(-1, 7), np.asarray(labels, np.int64),
            np.asarray(ids, np.int64))
