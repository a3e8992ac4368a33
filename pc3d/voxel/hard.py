"""Hard voxelization (SECOND / PointPillars / spconv's PointToVoxel): at most P points in each of at
most M voxels, as a dense [M, P, C] array for a voxel feature encoder."""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from pc3d_ops import voxelize as _k

from pc3d.errors import DataFormatError
from pc3d.voxel.checks import (
    Frame,
    VoxelLimitWarning,
    check_batch,
    check_batch_index,
    check_cloud,
    check_count,
    check_nan_policy,
    report_nonfinite,
)
from pc3d.voxel.grid import VoxelGrid, n_chunks, scheduling

# the voxels array is [M, P, C] float32, padded to P: a larger P only exhausts memory
MAX_POINTS_PER_VOXEL = 2**16


@dataclass(eq=False)
class HardVoxels:
    """Hard voxels of one cloud or of a batch (see HardVoxelizer for the selection rules).

    voxels: float32 [M, P, C], a voxel's points in its first num_points rows, zeros after.
    num_points: int32 [M]. coords: int32 [M, 1 + D] (batch, z, y, x) (or the grid's axes, slowest
    first), voxels in order of first appearance within a sample. point_to_voxel: int64 [N] voxel of
    every input point (also of points beyond the first P of their voxel), -1 for points outside the
    range, non-finite or in a dropped voxel. spatial_shape: D ints, slowest first. sample_starts:
    int64 [B + 1] first input point of each sample in the concatenated clouds. Counters: n_cropped
    (finite points outside the range), n_nonfinite (NaN / inf points dropped), n_dropped_voxels
    (occupied cells beyond max_voxels), n_dropped_points (in-range points not in `voxels`).
    """

    voxels: np.ndarray
    num_points: np.ndarray
    coords: np.ndarray
    point_to_voxel: np.ndarray
    spatial_shape: tuple[int, ...]
    batch_size: int = 1
    sample_starts: np.ndarray = field(default_factory=lambda: np.zeros(2, np.int64))
    n_cropped: int = 0
    n_nonfinite: int = 0
    n_dropped_voxels: int = 0
    n_dropped_points: int = 0

    def __len__(self) -> int:
        return len(self.coords)

    @property
    def point_batch(self) -> np.ndarray:
        """int64 [N] sample of each input point (the rows of point_to_voxel)."""
        return np.repeat(np.arange(len(self.sample_starts) - 1), np.diff(self.sample_starts))

    @classmethod
    def concat(cls, parts: Sequence[HardVoxels]) -> HardVoxels:
        """One batch from per-sample results made with batch_index 0, 1, ... (coords keep theirs)."""
        if not parts:
            raise DataFormatError(None, "HardVoxels.concat needs at least one part")
        offsets = np.cumsum([0] + [len(p) for p in parts])
        point_to_voxel = np.concatenate([np.where(p.point_to_voxel >= 0, p.point_to_voxel + o, -1)
                                         for p, o in zip(parts, offsets, strict=False)])
        n_points = [len(p.point_to_voxel) for p in parts]
        return cls(
            voxels=np.concatenate([p.voxels for p in parts]),
            num_points=np.concatenate([p.num_points for p in parts]),
            coords=np.concatenate([p.coords for p in parts]),
            point_to_voxel=point_to_voxel,
            spatial_shape=parts[0].spatial_shape,
            batch_size=max(p.batch_size for p in parts),
            sample_starts=np.cumsum([0] + n_points).astype(np.int64),
            n_cropped=sum(p.n_cropped for p in parts),
            n_nonfinite=sum(p.n_nonfinite for p in parts),
            n_dropped_voxels=sum(p.n_dropped_voxels for p in parts),
            n_dropped_points=sum(p.n_dropped_points for p in parts),
        )

    def batch_keys(self) -> dict:
        """The voxel keys of the batch contract (pc3d.data.batch), as torch tensors sharing this memory."""
        return {"voxels": torch.from_numpy(self.voxels), "voxel_num_points": torch.from_numpy(self.num_points),
                "voxel_coords": torch.from_numpy(self.coords), "point_to_voxel": torch.from_numpy(self.point_to_voxel),
                "spatial_shape": tuple(self.spatial_shape)}


class HardGridVoxelizer:
    """Points -> hard voxels on any VoxelGrid, the same output as spconv's ``PointToVoxel`` on CPU.

    Deterministic: voxels are numbered in order of first appearance of a point, each keeps its
    first `max_points_per_voxel` points in input order, and only the first `max_voxels` voxels are
    kept. With `shuffle` (training) the points are first permuted by a generator seeded with the
    call's `seed`, so a random subset of a crowded voxel is kept. nan_policy: "warn" (drop NaN /
    inf points with a warning naming the frame) or "raise" (DataFormatError).
    The Cartesian, pillar, cylindrical and spatio-temporal voxelizers are this class on their grid.
    """

    def __init__(self, grid: VoxelGrid, max_points_per_voxel: int, max_voxels: int, shuffle: bool = False, *,
                 nan_policy: str = "warn"):
        self.grid = grid
        self.max_points_per_voxel = check_count(max_points_per_voxel, "max_points_per_voxel", MAX_POINTS_PER_VOXEL)
        self.max_voxels = check_count(max_voxels, "max_voxels")
        self.shuffle = bool(shuffle)
        self.nan_policy = check_nan_policy(nan_policy)
        self._warned = False

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return self.grid.spatial_shape

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.grid!r}, max_points_per_voxel={self.max_points_per_voxel}, "
                f"max_voxels={self.max_voxels}, shuffle={self.shuffle})")

    def __call__(self, points: np.ndarray, seed: int | np.random.SeedSequence | None = None,
                 frame: Frame = None, batch_index: int = 0) -> HardVoxels:
        """Hard voxels of one cloud float32 [N, 3 + C]; coords carry `batch_index`."""
        pts = check_cloud(points, self.grid.min_columns, frame)
        batch_index = check_batch_index(batch_index)
        n = len(pts)
        perm = None
        if self.shuffle:
            perm = np.random.default_rng(seed).permutation(n)
            pts = pts[perm]
        keys, n_outside, n_nonfinite = self.grid.cell_keys(pts)
        report_nonfinite(n_nonfinite, n, frame, self.nan_policy)
        packed, ibits, valid_idx = self.grid.sort_cells(keys)
        with scheduling():
            voxels, num_points, coords, point_to_voxel, n_cells = _k.hard_voxels(
            pts, keys, packed, ibits, valid_idx, self.grid.grid_size, int(batch_index), self.max_voxels,
            self.max_points_per_voxel, n_chunks())
        if perm is not None:
            unshuffled = np.empty_like(point_to_voxel)
            unshuffled[perm] = point_to_voxel
            point_to_voxel = unshuffled
        return HardVoxels(
            voxels=voxels,
            num_points=num_points,
            coords=coords,
            point_to_voxel=point_to_voxel,
            spatial_shape=self.grid.spatial_shape,
            batch_size=int(batch_index) + 1,
            sample_starts=np.array([0, n], np.int64),
            n_cropped=n_outside,
            n_nonfinite=n_nonfinite,
            n_dropped_voxels=int(n_cells) - len(num_points),
            n_dropped_points=len(valid_idx) - int(num_points.sum()),
        )

    def voxelize(self, clouds: Sequence[np.ndarray], seeds: Sequence[int | None] | None = None,
                 frames: Sequence[Frame] | None = None) -> dict:
        """The voxel keys of a batch (pc3d.data.batch): voxels, voxel_num_points, voxel_coords (sample
        b has batch index b), point_to_voxel (rows of the concatenated clouds), spatial_shape.

        seeds: one per cloud, the shuffle's seed (None: fresh entropy); frames: names for errors.
        """
        parts = [self(c, seed=s, frame=f, batch_index=b)
                 for b, (c, s, f) in enumerate(check_batch(clouds, seeds, frames))]
        for part, frame in zip(parts, frames or [None] * len(parts), strict=True):
            if part.n_dropped_voxels and not self._warned:
                self._warned = True  # once per voxelizer (and per DataLoader worker): a recipe's cap is a choice
                warnings.warn(f"{frame or 'a cloud'}: {len(part.num_points) + part.n_dropped_voxels} occupied voxels, "
                              f"max_voxels={self.max_voxels} kept the first {len(part.num_points)} (their points "
                              "are left out); later clouds over the cap are not warned", VoxelLimitWarning,
                              stacklevel=2)
        return HardVoxels.concat(parts).batch_keys()


class HardVoxelizer(HardGridVoxelizer):
    """Hard voxels on a Cartesian grid (SECOND): voxel_size one or 3 numbers (x, y, z), point_range
    (x_min, y_min, z_min, x_max, y_max, z_max); the rules of HardGridVoxelizer."""

    def __init__(self, voxel_size: float | Sequence[float], point_range: Sequence[float],
                 max_points_per_voxel: int, max_voxels: int, shuffle: bool = False, *, nan_policy: str = "warn"):
        super().__init__(VoxelGrid(voxel_size, point_range), max_points_per_voxel, max_voxels, shuffle,
                         nan_policy=nan_policy)
