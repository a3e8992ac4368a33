"""Exact IoU of rotated boxes: BEV and 3D, all pairs or row-wise, OpenPCDet's nearest-axis BEV IoU, and the
IoU of axis-aligned boxes (indoor detection, where the heading is not used).

Boxes are [M, 7+] (x, y, z, dx, dy, dz, heading, ...). The BEV overlap is the exact area of the
intersection polygon (convex clipping in float64), the 3D overlap multiplies it by the z overlap.
Inputs are numpy arrays or torch tensors; the result is the same kind, float64 for float64
input and float32 otherwise (no gradient flows through these: they are for matching and NMS).
"""
from __future__ import annotations

from typing import Any

import numpy as np
from pc3d_ops import box_iou as _k

from pc3d.errors import DataFormatError

from ._arrays import check_boxes, like, sync_threads


def _pairs(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray, np.dtype]:
    an = check_boxes(a, "boxes a")
    bn = check_boxes(b, "boxes b")
    dtype = np.dtype(np.float64) if np.float64 in (an.dtype, bn.dtype) else np.dtype(np.float32)
    return (np.ascontiguousarray(an[:, :7], np.float64), np.ascontiguousarray(bn[:, :7], np.float64), dtype)


def _matrix(a: Any, b: Any, mode: int) -> Any:
    an, bn, dtype = _pairs(a, b)
    sync_threads()
    return like(_k.iou_matrix(an, bn, mode).astype(dtype, copy=False), a)


def _aligned(a: Any, b: Any, mode: int) -> Any:
    an, bn, dtype = _pairs(a, b)
    if an.shape[0] != bn.shape[0]:
        raise DataFormatError(None, f"aligned IoU needs as many boxes in a as in b, got {an.shape[0]} and "
                                    f"{bn.shape[0]}")
    sync_threads()
    return like(_k.iou_aligned(an, bn, mode).astype(dtype, copy=False), a)


def iou_bev(a: Any, b: Any) -> Any:
    """Rotated bird's-eye-view IoU [Na, Nb] of boxes a [Na, 7+] and b [Nb, 7+]."""
    return _matrix(a, b, _k.MODE_BEV)


def iou_3d(a: Any, b: Any) -> Any:
    """Rotated 3D IoU [Na, Nb]: BEV intersection area x z overlap / union volume."""
    return _matrix(a, b, _k.MODE_3D)


def iou_bev_aligned(a: Any, b: Any) -> Any:
    """Rotated BEV IoU [N] of the row pairs (a[i], b[i]), a and b [N, 7+]."""
    return _aligned(a, b, _k.MODE_BEV)


def iou_3d_aligned(a: Any, b: Any) -> Any:
    """Rotated 3D IoU [N] of the row pairs (a[i], b[i]), a and b [N, 7+]."""
    return _aligned(a, b, _k.MODE_3D)


def iou_bev_nearest(a: Any, b: Any) -> Any:
    """Axis-aligned BEV IoU [Na, Nb] after turning each box to its nearest axis.

    A box whose heading (modulo pi) is more than pi/4 from the x axis swaps dx and dy; this is
    OpenPCDet's ``boxes3d_nearest_bev_iou``, the cheap overlap used to assign anchors.
    """
    an, bn, dtype = _pairs(a, b)
    sync_threads()
    return like(_k.nearest_bev_iou(an, bn).astype(dtype, copy=False), a)



def iou_axis_aligned(a: Any, b: Any) -> np.ndarray:
    """float64 [Na, Nb]: 3D IoU of axis-aligned boxes a [Na, >= 6] and b [Nb, >= 6] (centre, size; a heading
    column is ignored), each spanning [centre - size / 2, centre + size / 2]. A pair of zero union is 0."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    lo_a, hi_a = a[:, None, :3] - a[:, None, 3:6] / 2, a[:, None, :3] + a[:, None, 3:6] / 2
    lo_b, hi_b = b[None, :, :3] - b[None, :, 3:6] / 2, b[None, :, :3] + b[None, :, 3:6] / 2
    inter = np.clip(np.minimum(hi_a, hi_b) - np.maximum(lo_a, lo_b), 0, None).prod(-1)
    union = a[:, None, 3:6].prod(-1) + b[None, :, 3:6].prod(-1) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
