"""Point-set operations that keep every point-wise key aligned: range crop, shuffle, random drop and dropout,
sphere crop, fixed-size sampling (scene flow's 8,192 points). Each runs on every cloud of the sample, each cloud
with its own point-wise keys (pc3d.data.batch.select_points), in the order of CLOUDS; except a second view
(pc3d.data.transforms.views.SecondView: points2 is the points' view row by row), whose points2 and its keys take
the rows chosen for points, as point-wise keys of points do (`select_rows`)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pc3d.errors import ConfigError, DataFormatError

from ..batch import clouds_of, select_boxes, select_points
from .views import is_second_view


def _check_range(point_range: Sequence[float]) -> np.ndarray:
    r = np.asarray(point_range, np.float32).reshape(-1)
    if r.shape != (6,) or not (r[3:] > r[:3]).all():
        raise ConfigError(f"point_range must be (x_min, y_min, z_min, x_max, y_max, z_max), got {point_range!r}")
    return r


def in_range(xyz: np.ndarray, point_range: np.ndarray) -> np.ndarray:
    """bool [N]: x, y, z inside [min, max) on every axis (the voxel grid's cells); NaN is outside. Axis by
    axis: six times faster than comparing [N, 3] blocks and reducing over rows."""
    keep = (xyz[:, 0] >= point_range[0]) & (xyz[:, 0] < point_range[3])
    for axis in (1, 2):
        keep &= (xyz[:, axis] >= point_range[axis]) & (xyz[:, axis] < point_range[3 + axis])
    return keep


def selected_clouds(sample: dict) -> list[str]:
    """The clouds whose rows a point op chooses: every cloud, but a second view's points2 follows points."""
    return ["points"] if is_second_view(sample) else clouds_of(sample)


def select_rows(sample: dict, index: np.ndarray, cloud: str = "points") -> dict:
    """select_points(sample, index, cloud); for points of a second view, points2 and its keys take the same rows
    (in the same order: a multi-scan sample's current scan first, as select_points puts them)."""
    if cloud != "points" or not is_second_view(sample):
        return select_points(sample, index, cloud)
    rows = {"points": np.arange(len(sample["points"]))}
    if "num_current_points" in sample:
        rows["num_current_points"] = sample["num_current_points"]
    order = select_points(rows, index)["points"]  # the rows points gets, in its order
    select_points(sample, order, "points")
    return select_points(sample, order, "points2")


class RangeCrop:
    """Keep the points of every cloud inside point_range and the boxes whose centres are inside it in x and y
    (z not checked; OpenPCDet's mask_boxes_outside_range keeps a box with any corner inside in older versions and
    one whose centre is inside in x, y and z, bounds included, in newer ones); a second view's points2 keeps the
    rows of the points kept. Deterministic."""

    def __init__(self, point_range: Sequence[float], crop_boxes: bool = True):
        self.point_range = _check_range(point_range)
        self.crop_boxes = crop_boxes

    def __call__(self, sample: dict, rng: np.random.Generator | None = None) -> dict:
        for cloud in selected_clouds(sample):
            keep = in_range(sample[cloud], self.point_range)
            if not keep.all():
                select_rows(sample, keep, cloud)
        if self.crop_boxes and "gt_boxes" in sample and len(sample["gt_boxes"]):
            b, r = sample["gt_boxes"], self.point_range
            inside = (b[:, 0] >= r[0]) & (b[:, 0] < r[3]) & (b[:, 1] >= r[1]) & (b[:, 1] < r[4])
            select_boxes(sample, inside)
        return sample


class ClipToRange:
    """Move every point of every cloud outside the voxel grid of point_range and voxel_size onto its nearest face:
    x, y, z clamped to [lower, the last float32 the voxelizer still puts in the last cell] (pc3d.voxel.VoxelGrid
    .last_inside: the range's upper bounds are exclusive, and float32 rounding can carry a value just below one
    into the cell past the grid). Pointcept's PointClip, which gives far points the label of the grid's border
    cells instead of leaving them out. Keeps every row; deterministic."""

    def __init__(self, point_range: Sequence[float], voxel_size: float | Sequence[float]):
        from pc3d.voxel.grid import VoxelGrid

        grid = VoxelGrid(voxel_size, _check_range(point_range))
        self.low, self.high = grid.lower.astype(np.float32), grid.last_inside()

    def __call__(self, sample: dict, rng: np.random.Generator | None = None) -> dict:
        for cloud in clouds_of(sample):
            pts = sample[cloud]
            if ((pts[:, :3] < self.low) | (pts[:, :3] > self.high)).any():
                pts = pts.copy()
                pts[:, :3] = np.clip(pts[:, :3], self.low, self.high)
                sample[cloud] = pts
        return sample


class PointShuffle:
    """Permute the points of every cloud (and its point-wise keys with them); a multi-scan sample
    keeps its current scan first (select_points)."""

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        for cloud in selected_clouds(sample):
            select_rows(sample, rng.permutation(len(sample[cloud])), cloud)
        return sample


class RandomDrop:
    """Drop each point of every cloud with probability uniform in [0, max_ratio] drawn once per sample."""

    def __init__(self, max_ratio: float = 0.1):
        if not 0 <= max_ratio < 1:
            raise ConfigError(f"max_ratio must be in [0, 1), got {max_ratio!r}")
        self.max_ratio = float(max_ratio)

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        ratio = rng.uniform(0.0, self.max_ratio)
        for cloud in selected_clouds(sample):
            select_rows(sample, rng.random(len(sample[cloud])) >= ratio, cloud)
        return sample


class RandomDropout:
    """With probability `prob`, keep a random int(n x (1 - ratio)) of the n points of every cloud, in their order
    (Pointcept's RandomDropout: ScanNet's recipe drops 20 % of the points of 20 % of the scenes). RandomDrop draws
    the ratio instead."""

    def __init__(self, ratio: float = 0.2, prob: float = 0.2):
        if not 0 <= ratio < 1 or not 0 <= prob <= 1:
            raise ConfigError(f"RandomDropout: ratio must be in [0, 1) and prob in [0, 1], got {ratio!r}, {prob!r}")
        self.ratio, self.prob = float(ratio), float(prob)

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        if rng.random() >= self.prob:
            return sample
        for cloud in selected_clouds(sample):
            n = len(sample[cloud])
            keep = np.zeros(n, bool)
            keep[rng.choice(n, int(n * (1.0 - self.ratio)), replace=False)] = True
            select_rows(sample, keep, cloud)
        return sample


class SphereCrop:
    """Keep the `max_points` points of every cloud nearest a random point of the sample's points (Pointcept's
    SphereCrop, mode random: ScanNet's recipe crops its training scenes to 100,000); a cloud with fewer points is
    kept whole. Points keep their order. For samples without boxes (a crop would cut objects): a sample with
    gt_boxes or other_boxes is a DataFormatError."""

    def __init__(self, max_points: int = 100_000):
        if int(max_points) < 1:
            raise ConfigError(f"SphereCrop: max_points must be >= 1, got {max_points!r}")
        self.max_points = int(max_points)

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        if "gt_boxes" in sample or "other_boxes" in sample:
            raise DataFormatError(sample.get("frame_id"), "SphereCrop would cut boxes: use it on samples without "
                                                          "boxes (segmentation)")
        if all(len(sample[c]) <= self.max_points for c in selected_clouds(sample)):
            return sample
        centre = sample["points"][rng.integers(len(sample["points"])), :3].astype(np.float64)
        for cloud in selected_clouds(sample):
            if len(sample[cloud]) > self.max_points:
                d2 = np.square(sample[cloud][:, :3] - centre).sum(1)
                keep = np.zeros(len(d2), bool)
                keep[np.argsort(d2, kind="stable")[:self.max_points]] = True
                select_rows(sample, keep, cloud)
        return sample


class SamplePoints:
    """Exactly `num_points` points per cloud (HPLFlowNet's 8,192): a random subset, or all points plus
    random repeats when a cloud is smaller. Each cloud is sampled independently, as the scene-flow loaders do."""

    def __init__(self, num_points: int = 8192):
        if int(num_points) < 1:
            raise ConfigError(f"num_points must be >= 1, got {num_points!r}")
        self.num_points = int(num_points)

    def indices(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """int64 [num_points] rows of a cloud of n points: a subset, or all rows plus random repeats."""
        if n >= self.num_points:
            return rng.choice(n, self.num_points, replace=False)
        if n == 0:
            raise ConfigError("SamplePoints: the cloud is empty")
        return np.concatenate([np.arange(n), rng.choice(n, self.num_points - n, replace=True)])

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        for cloud in selected_clouds(sample):
            select_rows(sample, self.indices(len(sample[cloud]), rng), cloud)
        return sample
