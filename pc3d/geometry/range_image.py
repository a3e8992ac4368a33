"""Range images: Waymo's official conventions (range_image_utils) and the SemanticKITTI spherical projection.

Waymo: row 0 is the highest beam (the calibration's inclinations, reversed); column j looks at
azimuth ((W - j - 0.5) / W * 2 - 1) * pi - atan2(E[1, 0], E[0, 0]) in the sensor frame, so the
vehicle-frame azimuth runs from about +pi at column 0 to -pi at column W - 1; a pixel with range r
is the sensor point r (cos az cos incl, sin az cos incl, sin incl), taken to the vehicle frame by
the 4x4 extrinsic E. Pixels with range <= 0 are empty.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from pc3d_ops import geometry as _k

from pc3d.errors import ConfigError, DataFormatError

from ._arrays import check_points, sync_threads, to_numpy


def beam_inclinations(h: int, values: Any = None, min: float | None = None, max: float | None = None) -> np.ndarray:
    """Inclination of each range-image row, float64 [H] (radians), row 0 the highest beam.

    values: the calibration's per-beam inclinations (TOP laser, ascending as Waymo stores them);
    otherwise min / max give Waymo's uniform beams min + (i + 0.5) / H * (max - min). Either way
    the array is reversed, as the official utils do.
    """
    if values is not None and len(to_numpy(values)) > 0:
        incl = to_numpy(values, np.float64).reshape(-1)
        if incl.shape != (h,):
            raise DataFormatError(None, f"beam inclination values: expected {h}, got {incl.shape[0]}")
    elif min is not None and max is not None:
        incl = min + (np.arange(h, dtype=np.float64) + 0.5) / h * (max - min)
    else:
        raise ConfigError("beam_inclinations needs either values or both min and max")
    return incl[::-1].copy()


def _extrinsic(extrinsic: Any) -> np.ndarray:
    e = to_numpy(extrinsic, np.float64)
    if e.shape != (4, 4) or not np.isfinite(e).all():
        raise DataFormatError(None, f"extrinsic must be a finite 4x4 matrix, got shape {e.shape}")
    return e


def _azimuth_correction(e: np.ndarray) -> float:
    return float(np.arctan2(e[1, 0], e[0, 0]))


def range_image_to_points(range_image: Any, inclinations: Any, extrinsic: Any) -> tuple[np.ndarray, np.ndarray]:
    """Points of a range image, Waymo conventions.

    range_image: [H, W] ranges (metres; <= 0 empty) or [H, W, C] with the range in channel 0;
    inclinations: [H] (beam_inclinations); extrinsic: [4, 4] sensor -> vehicle.
    Returns (points float32 [K, 3] in the vehicle frame, pixels int64 [K, 2] (row, col)), in
    row-major pixel order.
    """
    img = to_numpy(range_image)
    if img.ndim == 3:
        img = img[..., 0]
    incl = to_numpy(inclinations, np.float64).reshape(-1)
    if img.ndim != 2 or img.shape[0] != incl.shape[0]:
        raise DataFormatError(None, f"range image must be [H, W] with H = {incl.shape[0]} inclinations, "
                                    f"got shape {img.shape}")
    e = _extrinsic(extrinsic)
    h, w = img.shape
    az = ((w - np.arange(w) - 0.5) / w * 2 - 1) * np.pi - _azimuth_correction(e)
    rows, cols = np.nonzero(img > 0)
    r = img[rows, cols].astype(np.float64)
    # sines and cosines once per beam and column, then gathered: the same values, a third of the time
    cos_i = np.cos(incl)[rows]
    sensor = np.stack([r * np.cos(az)[cols] * cos_i, r * np.sin(az)[cols] * cos_i, r * np.sin(incl)[rows]], 1)
    points = sensor @ e[:3, :3].T + e[:3, 3]
    return points.astype(np.float32), np.stack([rows, cols], 1).astype(np.int64)


def points_to_range_image(points: Any, inclinations: Any, width: int,
                          extrinsic: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Project vehicle-frame points into a Waymo range image, the exact inverse of range_image_to_points.

    points: [N, 3+]; inclinations: [H] descending (row 0 highest); width: W; extrinsic: [4, 4]
    sensor -> vehicle. Each point goes to the nearest beam and the column whose centre azimuth is
    nearest; a point beyond half a beam spacing outside the outer beams, or at range 0, is
    invalid. Returns (range_image float32 [H, W] (nearest point wins a pixel, 0 = empty),
    row int64 [N], col int64 [N] (-1 where invalid), valid bool [N]).
    """
    pts = check_points(points)
    incl = to_numpy(inclinations, np.float64).reshape(-1)
    if incl.shape[0] == 0 or (incl.shape[0] > 1 and not (np.diff(incl) < 0).all()):
        raise DataFormatError(None, "inclinations must be strictly descending (row 0 = highest beam); "
                                    "use beam_inclinations()")
    if int(width) != width or width < 1:
        raise ConfigError(f"width must be a positive integer, got {width!r}")
    e = _extrinsic(extrinsic)
    sync_threads()
    xyz = np.ascontiguousarray(pts[:, :3], np.float64)
    return _k.project_to_range_image(xyz, np.ascontiguousarray(e[:3, :3].T), np.ascontiguousarray(e[:3, 3]),
                                     incl, int(width), _azimuth_correction(e))


def spherical_projection(points: Any, fov_up_deg: float, fov_down_deg: float, h: int,
                         w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SemanticKITTI / RangeNet++ spherical projection of LiDAR points [N, 3+].

    fov_up_deg, fov_down_deg: vertical field of view (e.g. 3 and -25 for the HDL-64E); h, w: image
    size. Column = floor(0.5 (1 - atan2(y, x) / pi) w), row = floor((1 - (pitch - fov_down) / fov) h),
    both clipped into the image, as RangeNet does (points outside the field of view land on the
    border rows). Returns (row int64 [N], col int64 [N], range float32 [N]).
    """
    pts = check_points(points)
    fov_up = np.deg2rad(fov_up_deg)
    fov_down = np.deg2rad(fov_down_deg)
    if not fov_up > fov_down:
        raise ConfigError(f"the field of view's top must lie above its bottom, got up {fov_up_deg}, down "
                          f"{fov_down_deg} (degrees)")
    fov = fov_up - fov_down  # RangeNet's |down| + |up| where down <= 0 <= up
    xyz = pts[:, :3].astype(np.float64)
    depth = np.linalg.norm(xyz, axis=1)
    yaw = -np.arctan2(xyz[:, 1], xyz[:, 0])
    with np.errstate(invalid="ignore", divide="ignore"):
        pitch = np.where(depth > 0, np.arcsin(np.clip(xyz[:, 2] / depth, -1, 1)), 0.0)
    col = np.floor(0.5 * (yaw / np.pi + 1.0) * w)
    row = np.floor((1.0 - (pitch - fov_down) / fov) * h)
    col = np.clip(col, 0, w - 1).astype(np.int64)
    row = np.clip(row, 0, h - 1).astype(np.int64)
    return row, col, depth.astype(np.float32)
