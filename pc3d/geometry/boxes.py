"""3D boxes in the LiDAR frame: heading wrapping, corners, rotation, KITTI camera boxes, 2D image boxes.

Boxes are [M, 7 (+2)]: x, y, z (centre), dx (length, along the heading), dy (width), dz (height),
heading (counter-clockwise from +x, wrapped to [-pi, pi)), optional vx, vy. KITTI camera boxes are
[M, 7]: x, y, z of the bottom centre in the rectified camera frame, h, w, l, rotation_y.

Functions that only do arithmetic work on numpy arrays and torch tensors alike (and keep torch's
autograd); the ones that need a calibration take numpy or torch and return the same kind.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from pc3d.errors import DataFormatError

from ._arrays import check_boxes, is_torch, like, to_numpy
from .calib import KittiCalib

# corner signs of (dx/2, dy/2): counter-clockwise seen from above, starting front-left
_CORNER_SIGNS = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], dtype=np.float64)


def _xp(x: Any):
    if is_torch(x):
        import torch

        return torch
    return np


def wrap_angle(angle: Any, offset: float = 0.5, period: float = 2 * np.pi) -> Any:
    """angle - floor(angle / period + offset) * period: in [-offset * period, (1 - offset) * period).

    With the defaults the result is in [-pi, pi). Numpy arrays, scalars and torch tensors; the
    bounds are checked once more in the input's dtype, where float rounding can land on the edge.
    """
    xp = _xp(angle)
    if xp is np:
        a = np.asarray(angle)
        if not np.issubdtype(a.dtype, np.floating):
            a = a.astype(np.float64)
        lo, hi = a.dtype.type(-offset * period), a.dtype.type((1 - offset) * period)
        out = a - np.floor(a / period + offset) * period
        out = np.where(out >= hi, out - a.dtype.type(period), out)
        out = np.where(out < lo, out + a.dtype.type(period), out)
        return out if np.ndim(angle) else out[()]
    out = angle - xp.floor(angle / period + offset) * period
    lo, hi = -offset * period, (1 - offset) * period
    out = xp.where(out >= hi, out - period, out)
    return xp.where(out < lo, out + period, out)


def rotate_points_z(points: Any, angle: Any) -> Any:
    """Rotate points [..., N, 3 + C] counter-clockwise about +z by angle (scalar or [...] batch).

    The x, y columns rotate, the other columns are kept. Numpy or torch (differentiable).
    """
    xp = _xp(points)
    if xp is np:
        angle = np.asarray(angle, dtype=np.float64 if points.dtype == np.float64 else np.float32)
    elif not is_torch(angle):
        angle = xp.as_tensor(angle, dtype=points.dtype, device=points.device)
    c = xp.cos(angle)[..., None]
    s = xp.sin(angle)[..., None]
    x, y = points[..., 0], points[..., 1]
    rotated = [x * c - y * s, x * s + y * c]
    rest = points[..., 2:]
    if xp is np:
        return np.concatenate([np.stack(rotated, -1).astype(points.dtype, copy=False), rest], -1)
    return xp.cat([xp.stack(rotated, -1), rest], -1)


def boxes_to_corners(boxes: Any) -> Any:
    """Corners [M, 8, 3] of boxes [M, 7+] (numpy or torch, differentiable).

    Order: the bottom face (z - dz/2) counter-clockwise seen from above, starting at the local
    corner (+dx/2, +dy/2), i.e. (+,+), (-,+), (-,-), (+,-); then the top face (z + dz/2) in the same
    order, so corner k + 4 is above corner k.
    """
    xp = _xp(boxes)
    if boxes.ndim != 2 or boxes.shape[-1] < 7:
        raise DataFormatError(None, f"boxes must be [M, 7+], got shape {tuple(boxes.shape)}")
    if xp is np:
        signs = _CORNER_SIGNS.astype(boxes.dtype if boxes.dtype == np.float64 else np.float32)
    else:
        signs = xp.as_tensor(_CORNER_SIGNS, dtype=boxes.dtype, device=boxes.device)
    half = boxes[:, None, 3:5] * 0.5  # [M, 1, 2]
    local = signs[None] * half  # [M, 4, 2]
    c = xp.cos(boxes[:, 6])[:, None]
    s = xp.sin(boxes[:, 6])[:, None]
    x = local[..., 0] * c - local[..., 1] * s + boxes[:, 0:1]
    y = local[..., 0] * s + local[..., 1] * c + boxes[:, 1:2]
    z_bottom = boxes[:, 2:3] - boxes[:, 5:6] * 0.5
    z_top = boxes[:, 2:3] + boxes[:, 5:6] * 0.5
    zeros = x * 0
    bottom = xp.stack([x, y, zeros + z_bottom], -1)
    top = xp.stack([x, y, zeros + z_top], -1)
    if xp is np:
        return np.concatenate([bottom, top], 1)
    return xp.cat([bottom, top], 1)


def enlarge_boxes(boxes: Any, extra: Any) -> Any:
    """Boxes with dx, dy, dz grown by extra (scalar or [3]); centres and headings unchanged."""
    xp = _xp(boxes)
    if xp is np:
        out = np.array(boxes, copy=True)
        out[:, 3:6] += np.asarray(extra, dtype=out.dtype)
        return out
    extra = xp.as_tensor(extra, dtype=boxes.dtype, device=boxes.device)
    return xp.cat([boxes[:, :3], boxes[:, 3:6] + extra, boxes[:, 6:]], 1)


def alpha_from_rotation_y(rotation_y: Any, x: Any, z: Any) -> Any:
    """KITTI observation angle alpha = rotation_y - atan2(x, z), wrapped to [-pi, pi).

    x, z: the object's position in the rectified camera frame (right, forward).
    """
    xp = _xp(rotation_y)
    atan2 = np.arctan2 if xp is np else xp.atan2
    return wrap_angle(rotation_y - atan2(x, z))


def boxes_lidar_to_camera(boxes: Any, calib: KittiCalib) -> Any:
    """LiDAR boxes [M, 7+] -> KITTI camera boxes [M, 7]: bottom centre (rect), h, w, l, rotation_y.

    rotation_y = -heading - pi/2, wrapped to [-pi, pi); numpy or torch in, same kind out.
    """
    arr = check_boxes(boxes).astype(np.float64)
    bottom = arr[:, :3].copy()
    bottom[:, 2] -= arr[:, 5] / 2
    xyz = calib.lidar_to_rect(bottom)
    ry = wrap_angle(-arr[:, 6] - np.pi / 2)
    out = np.concatenate([xyz, arr[:, 5:6], arr[:, 4:5], arr[:, 3:4], ry[:, None]], 1)
    return like(out.astype(_dtype(boxes)), boxes)


def boxes_camera_to_lidar(boxes_cam: Any, calib: KittiCalib) -> Any:
    """KITTI camera boxes [M, 7] (x, y, z bottom centre, h, w, l, rotation_y) -> LiDAR boxes [M, 7].

    The centre is raised by h/2 (the box's own up, LiDAR +z); heading = -rotation_y - pi/2 wrapped.
    """
    arr = check_boxes(boxes_cam, "camera boxes").astype(np.float64)
    h, w, length = arr[:, 3:4], arr[:, 4:5], arr[:, 5:6]
    xyz = calib.rect_to_lidar(arr[:, :3])
    xyz[:, 2] += h[:, 0] / 2
    heading = wrap_angle(-arr[:, 6] - np.pi / 2)
    out = np.concatenate([xyz, length, w, h, heading[:, None]], 1)
    return like(out.astype(_dtype(boxes_cam)), boxes_cam)


def boxes_to_image_2d(boxes: Any, calib: KittiCalib, image_shape: tuple[int, int] | None = None) -> Any:
    """2D boxes [M, 4] (left, top, right, bottom px) bounding the 8 projected corners in image 2.

    image_shape: (height, width); when given, the boxes are clipped to [0, width - 1] x
    [0, height - 1] as KITTI's labels are. Corners behind the camera project meaninglessly, so keep
    only boxes in front of the camera (as KITTI labels are) before calling this.
    """
    arr = check_boxes(boxes).astype(np.float64)
    corners = boxes_to_corners(arr).reshape(-1, 3)
    uv, _ = calib.lidar_to_image(corners)
    uv = uv.reshape(-1, 8, 2)
    out = np.concatenate([uv.min(1), uv.max(1)], 1)
    if image_shape is not None:
        height, width = image_shape[:2]
        out[:, 0::2] = np.clip(out[:, 0::2], 0, width - 1)
        out[:, 1::2] = np.clip(out[:, 1::2], 0, height - 1)
    return like(out.astype(_dtype(boxes)), boxes)


def _dtype(x: Any) -> np.dtype:
    return np.dtype(np.float64) if to_numpy(x).dtype == np.float64 else np.dtype(np.float32)
