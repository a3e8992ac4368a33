"""Global scene augmentation (SECOND / OpenPCDet): rotation about z, scaling, translation, flips.

Each is one map p -> A p + t applied by `affine_sample` to everything geometric in a sample: x, y, z
of every cloud (pc3d.data.batch.CLOUDS), the vector keys of each cloud (flow: turned and scaled,
never translated), the normal columns the sample names (`normal_columns`: turned, kept unit) and the boxes
(centres, sizes, headings, velocities).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pc3d_ops import geometry as _geometry

from pc3d.errors import ConfigError, DataFormatError
from pc3d.geometry.boxes import wrap_angle

from ..batch import clouds_of, vector_keys


def _pair(values: float | Sequence[float], name: str) -> tuple[float, float]:
    v = np.asarray(values, np.float64).reshape(-1)
    if v.size == 1:
        v = np.array([-abs(v[0]), abs(v[0])])
    if v.size != 2 or not np.isfinite(v).all() or v[0] > v[1]:
        raise ConfigError(f"{name} must be one number or [low, high], got {values!r}")
    return float(v[0]), float(v[1])


def affine_sample(sample: dict, matrix: np.ndarray, offset: Sequence[float] = (0.0, 0.0, 0.0)) -> dict:
    """Map a sample by p -> matrix @ p + offset.

    matrix: [3, 3] keeping boxes upright: a rotation about z, a mirror of x or y, a uniform scale, or
    a product of them (GlobalTilt's rotations about x and y only for samples without boxes). Every cloud's
    x, y, z map as points; its vector keys (flow) and the box velocities as vectors; box centres (gt_boxes,
    other_boxes) as points, sizes by the scale, headings turn with the matrix.
    """
    m, t = np.asarray(matrix, np.float64), np.asarray(offset, np.float64)
    for cloud in clouds_of(sample):
        sample[cloud] = _geometry.affine_points(np.ascontiguousarray(sample[cloud], np.float32), m, t)
        turn_normals(sample[cloud], sample.get("normal_columns", ()), m)
        for key in vector_keys(cloud):
            if key in sample:
                sample[key] = (sample[key] @ m.T).astype(np.float32)
    for key in ("gt_boxes", "other_boxes"):
        if key in sample:
            sample[key] = affine_boxes(sample[key], m, t)
    return sample


def turn_normals(points: np.ndarray, columns: Sequence[int], matrix: np.ndarray) -> None:
    """Turn the normals in `columns` of points [N, 3 + C] (three per normal) in place by a map of `affine_sample`'s
    kind, s x Q with Q orthogonal: a normal maps by the inverse transpose, s^-1 Q, and stays unit as Q n does."""
    columns = list(columns)
    if not columns or not len(points):
        return
    if len(columns) % 3:
        raise DataFormatError(None, f"normal_columns come in threes (nx, ny, nz), got {columns}")
    scale = float(np.linalg.norm(matrix[:, 2]))
    q = matrix if scale == 1.0 else matrix / scale
    for i in range(0, len(columns), 3):
        cols = columns[i:i + 3]
        points[:, cols] = (points[:, cols] @ q.T).astype(points.dtype)


def affine_boxes(boxes: np.ndarray, matrix: np.ndarray, offset: Sequence[float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """Boxes [M, 7 (+2)] mapped by p -> matrix @ p + offset (a map of `affine_sample`'s kind): centres as points,
    sizes by the scale, headings turned (and mirrored) with the matrix, velocities as vectors; a new array."""
    m, t = np.asarray(matrix, np.float64), np.asarray(offset, np.float64)
    boxes = np.array(boxes, dtype=np.float32, copy=True)
    heading = boxes[:, 6].astype(np.float64)
    direction = np.stack([np.cos(heading), np.sin(heading)], 1) @ m[:2, :2].T
    boxes[:, :3] = boxes[:, :3] @ m.T + t
    boxes[:, 3:6] *= np.float32(np.linalg.norm(m[:, 2]))  # the z axis only scales under these maps
    boxes[:, 6] = wrap_angle(np.arctan2(direction[:, 1], direction[:, 0]).astype(np.float32))
    if boxes.shape[1] >= 9:
        boxes[:, 7:9] = boxes[:, 7:9] @ m[:2, :2].T
    return boxes


def rotate_sample(sample: dict, angle: float) -> dict:
    """Rotate a sample counter-clockwise about +z by `angle` radians."""
    c, s = np.cos(angle), np.sin(angle)
    return affine_sample(sample, np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]))


def scale_sample(sample: dict, factor: float) -> dict:
    """Scale a sample about the origin by `factor` (points, box centres and sizes, velocities, flow)."""
    return affine_sample(sample, float(factor) * np.eye(3))


def translate_sample(sample: dict, offset: np.ndarray) -> dict:
    """Shift points and box centres by offset [3] (flow and velocities are unchanged)."""
    return affine_sample(sample, np.eye(3), offset)


def flip_sample(sample: dict, axis: str) -> dict:
    """Mirror a sample: axis "x" negates y (a flip along the x axis), axis "y" negates x."""
    col = {"x": 1, "y": 0}[axis]
    mirror = np.eye(3)
    mirror[col, col] = -1.0
    return affine_sample(sample, mirror)


class GlobalRotation:
    """Rotate the scene about z by an angle uniform in `angle` (radians; one number a = [-a, a]), with probability
    `prob` (Pointcept's RandomRotate p; at 1, the default, no draw decides it, so the generator's stream is as before
    the option)."""

    def __init__(self, angle: float | Sequence[float] = (-np.pi / 4, np.pi / 4), prob: float = 1.0):
        self.low, self.high = _pair(angle, "angle")
        if not 0 <= prob <= 1:
            raise ConfigError(f"GlobalRotation: prob must be in [0, 1], got {prob!r}")
        self.prob = float(prob)

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        if self.prob < 1 and rng.random() >= self.prob:
            return sample
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


class GlobalTilt:
    """Tilt the scene about the x and y axes by angles drawn from N(0, sigma) and clipped to +-clip (radians):
    4DMOS's rotation perturbation (sigma 0.06, clip 0.18); with `uniform`, drawn uniform in +-clip, each axis
    tilted with probability `prob` (Pointcept's RandomRotate about x and y: clip pi / 64, prob 0.5). For samples
    without boxes (segmentation, MOS): a tilted box is no longer upright, so a sample with gt_boxes or other_boxes
    is a DataFormatError. Every cloud's x, y, z, vector keys (flow) and the normal columns the sample names turn;
    other feature columns do not."""

    def __init__(self, sigma: float = 0.06, clip: float = 0.18, uniform: bool = False, prob: float = 1.0):
        if not (sigma >= 0 and clip >= 0 and 0 <= prob <= 1):
            raise ConfigError(f"GlobalTilt: sigma and clip must be >= 0 and prob in [0, 1], got {sigma!r}, {clip!r}, "
                              f"{prob!r}")
        if prob < 1 and not uniform:
            raise ConfigError("GlobalTilt: prob applies to the uniform draw (Pointcept's); the normal one tilts always")
        self.sigma, self.clip, self.uniform, self.prob = float(sigma), float(clip), bool(uniform), float(prob)

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        if "gt_boxes" in sample or "other_boxes" in sample:
            raise DataFormatError(sample.get("frame_id"), "GlobalTilt would tilt the boxes out of upright: use it on "
                                                          "samples without boxes (segmentation, MOS)")
        if self.uniform:  # Pointcept's order: the x turn (if drawn), then the y turn
            ax, ay = (rng.uniform(-self.clip, self.clip) if self.prob == 1 or rng.random() < self.prob else 0.0
                      for _ in range(2))
        else:
            ax, ay = np.clip(rng.normal(0.0, self.sigma, 2), -self.clip, self.clip)
        cx, sx, cy, sy = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay)
        about_x = np.array([[1.0, 0.0, 0.0], [0.0, cx, -sx], [0.0, sx, cx]])
        about_y = np.array([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]])
        return affine_sample(sample, about_y @ about_x)
