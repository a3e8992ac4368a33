"""Global scene augmentation (SECOND / OpenPCDet): rotation about z, scaling, translation, flips.

Each applies one rigid (or similarity) transform to everything geometric in a sample: point x, y, z
(`points`, `points2`), box centres, sizes, headings and velocities (`gt_boxes`) and flow vectors
(`flow`, which rotates and scales with the points but does not translate).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pc3d.errors import ConfigError
from pc3d.geometry.boxes import rotate_points_z, wrap_angle

_CLOUDS = ("points", "points2")


def _pair(values: float | Sequence[float], name: str) -> tuple[float, float]:
    v = np.asarray(values, np.float64).reshape(-1)
    if v.size == 1:
        v = np.array([-abs(v[0]), abs(v[0])])
    if v.size != 2 or not np.isfinite(v).all() or v[0] > v[1]:
        raise ConfigError(f"{name} must be one number or [low, high], got {values!r}")
    return float(v[0]), float(v[1])


def rotate_sample(sample: dict, angle: float) -> dict:
    """Rotate a sample counter-clockwise about +z by `angle` radians."""
    for key in _CLOUDS:
        if key in sample:
            sample[key] = rotate_points_z(sample[key], angle)
    if "flow" in sample:
        sample["flow"] = rotate_points_z(sample["flow"], angle)
    if "gt_boxes" in sample and len(sample["gt_boxes"]):
        boxes = sample["gt_boxes"].copy()
        boxes[:, :3] = rotate_points_z(boxes[:, :3], angle)
        boxes[:, 6] = wrap_angle(boxes[:, 6] + np.float32(angle))
        if boxes.shape[1] >= 9:
            boxes[:, 7:9] = rotate_points_z(np.pad(boxes[:, 7:9], ((0, 0), (0, 1))), angle)[:, :2]
        sample["gt_boxes"] = boxes
    return sample


def scale_sample(sample: dict, factor: float) -> dict:
    """Scale a sample about the origin by `factor` (points, box centres and sizes, velocities, flow)."""
    f = np.float32(factor)
    for key in _CLOUDS:
        if key in sample:
            pts = sample[key].copy()
            pts[:, :3] *= f
            sample[key] = pts
    if "flow" in sample:
        sample["flow"] = sample["flow"] * f
    if "gt_boxes" in sample:
        boxes = sample["gt_boxes"].copy()
        boxes[:, :6] *= f
        boxes[:, 7:9] *= f
        sample["gt_boxes"] = boxes
    return sample


def translate_sample(sample: dict, offset: np.ndarray) -> dict:
    """Shift points and box centres by offset [3] (flow and velocities are unchanged)."""
    t = np.asarray(offset, np.float32)
    for key in _CLOUDS:
        if key in sample:
            pts = sample[key].copy()
            pts[:, :3] += t
            sample[key] = pts
    if "gt_boxes" in sample:
        boxes = sample["gt_boxes"].copy()
        boxes[:, :3] += t
        sample["gt_boxes"] = boxes
    return sample


def flip_sample(sample: dict, axis: str) -> dict:
    """Mirror a sample: axis "x" negates y (a flip along the x axis), axis "y" negates x."""
    col = {"x": 1, "y": 0}[axis]
    for key in (*_CLOUDS, "flow"):
        if key in sample:
            pts = sample[key].copy()
            pts[:, col] = -pts[:, col]
            sample[key] = pts
    if "gt_boxes" in sample:
        boxes = sample["gt_boxes"].copy()
        boxes[:, col] = -boxes[:, col]
        boxes[:, 6] = wrap_angle(-boxes[:, 6] if axis == "x" else np.float32(np.pi) - boxes[:, 6])
        if boxes.shape[1] >= 9:
            boxes[:, 7 + col] = -boxes[:, 7 + col]
        sample["gt_boxes"] = boxes
    return sample


class GlobalRotation:
    """Rotate the scene about z by an angle uniform in `angle` (radians; one number a = [-a, a])."""

    def __init__(self, angle: float | Sequence[float] = (-np.pi / 4, np.pi / 4)):
        self.low, self.high = _pair(angle, "angle")

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        return rotate_sample(sample, rng.uniform(self.low, self.high))


class GlobalScaling:
    """Scale the scene about the origin by a factor uniform in `scale` ([low, high], e.g. [0.95, 1.05])."""

    def __init__(self, scale: Sequence[float] = (0.95, 1.05)):
        self.low, self.high = _pair(scale, "scale")
        if self.low <= 0:
            raise ConfigError(f"scale factors must be > 0, got {scale!r}")

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        return scale_sample(sample, rng.uniform(self.low, self.high))


class GlobalTranslation:
    """Shift the scene by a Gaussian offset with per-axis standard deviation `std` (metres, [3] or one)."""

    def __init__(self, std: float | Sequence[float] = 0.2):
        self.std = np.broadcast_to(np.asarray(std, np.float64), (3,)).copy()
        if not (np.isfinite(self.std).all() and (self.std >= 0).all()):
            raise ConfigError(f"std must be >= 0, got {std!r}")

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        return translate_sample(sample, rng.normal(0.0, 1.0, 3) * self.std)


class CenterShift:
    """Move the scene so its x, y bounding-box centre is at the origin and (with `apply_z`) its lowest
    point at z = 0 (Pointcept's CenterShift for indoor scans). Deterministic; indoor scenes come in
    their own frame (ScanNet: metres from a room corner), so every scene then sits on the same grid
    whether or not it was augmented."""

    def __init__(self, apply_z: bool = True):
        self.apply_z = bool(apply_z)

    def __call__(self, sample: dict, rng: np.random.Generator | None = None) -> dict:
        xyz = sample["points"][:, :3]
        if not len(xyz):
            return sample
        lo, hi = xyz.min(0).astype(np.float64), xyz.max(0).astype(np.float64)
        shift = -np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, lo[2] if self.apply_z else 0.0])
        return translate_sample(sample, shift)


class RandomFlip:
    """Mirror the scene with probability `prob` per listed axis ("x": y -> -y, "y": x -> -x)."""

    def __init__(self, axes: Sequence[str] = ("x",), prob: float = 0.5):
        axes = [axes] if isinstance(axes, str) else list(axes)
        if not set(axes) <= {"x", "y"} or not 0 <= prob <= 1:
            raise ConfigError(f"RandomFlip: axes must be 'x' / 'y' and prob in [0, 1], got {axes!r}, {prob!r}")
        self.axes, self.prob = axes, float(prob)

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        for axis in self.axes:
            if rng.random() < self.prob:
                sample = flip_sample(sample, axis)
        return sample
