"""Dynamic voxelization (MVF / OpenPCDet and mmdet3d DynamicVFE): every in-range point keeps its
voxel, with no cap on points or voxels; features are pooled with scatter_mean / scatter_max."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from pc3d_ops import voxelize as _k

from pc3d.errors import DataFormatError
from pc3d.voxel.checks import Frame, check_cloud, check_nan_policy, report_nonfinite
from pc3d.voxel.grid import VoxelGrid, n_chunks, scheduling
from pc3d.voxel.scatter import scatter_mean


@dataclass(eq=False)
class DynamicVoxels:
    """Occupied voxels of one cloud or a batch and the point <-> voxel maps.

    coords: int32 [M, 1 + D] (batch, z, y, x) (or the grid's axes, slowest first), sorted
    lexicographically, so per-sample blocks follow each other and a kernel map needs no sort.
    point_to_voxel: int64 [N'] voxel of each kept point (the rows of ``points[keep]``, input order).
    voxel_counts: int32 [M] kept points per voxel. keep: bool [N] input points inside the range and
    finite. spatial_shape: D ints, slowest first. grid: the VoxelGrid (for voxel centres).
    sample_starts: int64 [B + 1] first input point of each sample. Counters: n_cropped (finite
    points outside the range), n_nonfinite (NaN / inf points dropped).
    """

    coords: np.ndarray
    point_to_voxel: np.ndarray
    voxel_counts: np.ndarray
    keep: np.ndarray
    spatial_shape: tuple[int, ...]
    grid: VoxelGrid
    batch_size: int = 1
    sample_starts: np.ndarray = field(default_factory=lambda: np.zeros(2, np.int64))
    n_cropped: int = 0
    n_nonfinite: int = 0

    def __len__(self) -> int:
        return len(self.coords)

    @property
    def point_batch(self) -> np.ndarray:
        """int64 [N'] sample of each kept point (the rows of point_to_voxel)."""
        return self.coords[self.point_to_voxel, 0].astype(np.int64)

    @classmethod
    def concat(cls, parts: Sequence[DynamicVoxels]) -> DynamicVoxels:
        """One batch from per-sample results made with batch_index 0, 1, ... (coords keep theirs)."""
        if not parts:
            raise DataFormatError(None, "DynamicVoxels.concat needs at least one part")
        offsets = np.cumsum([0] + [len(p) for p in parts])
        return cls(
            coords=np.concatenate([p.coords for p in parts]),
            point_to_voxel=np.concatenate([p.point_to_voxel + o for p, o in zip(parts, offsets, strict=False)]),
            voxel_counts=np.concatenate([p.voxel_counts for p in parts]),
            keep=np.concatenate([p.keep for p in parts]),
            spatial_shape=parts[0].spatial_shape,
            grid=parts[0].grid,
            batch_size=max(p.batch_size for p in parts),
            sample_starts=np.cumsum([0] + [len(p.keep) for p in parts]).astype(np.int64),
            n_cropped=sum(p.n_cropped for p in parts),
            n_nonfinite=sum(p.n_nonfinite for p in parts),
        )


class DynamicVoxelizer:
    """Points -> occupied voxels, sorted (b, z, y, x), with the inverse map of every kept point.

    voxel_size: one or 3 numbers (x, y, z); point_range: (x_min, y_min, z_min, x_max, y_max, z_max).
    Cells are spconv's (see pc3d.voxel.grid). nan_policy: "warn" (drop NaN / inf points with a
    warning naming the frame) or "raise" (DataFormatError).
    Other grids (pillars, cylindrical, spatio-temporal): ``DynamicVoxelizer.from_grid(grid)``.
    """

    def __init__(self, voxel_size: float | Sequence[float], point_range: Sequence[float], *,
                 nan_policy: str = "warn"):
        self._setup(VoxelGrid(voxel_size, point_range), nan_policy)

    @classmethod
    def from_grid(cls, grid: VoxelGrid, *, nan_policy: str = "warn") -> DynamicVoxelizer:
        self = cls.__new__(cls)
        DynamicVoxelizer._setup(self, grid, nan_policy)
        return self

    def _setup(self, grid: VoxelGrid, nan_policy: str) -> None:
        self.grid = grid
        self.nan_policy = check_nan_policy(nan_policy)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return self.grid.spatial_shape

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.grid!r})"

    def __call__(self, points: np.ndarray, frame: Frame = None, batch_index: int = 0) -> DynamicVoxels:
        """Voxels of one cloud float32 [N, 3 + C]; coords carry `batch_index`."""
        pts = check_cloud(points, self.grid.min_columns, frame)
        keys, n_outside, n_nonfinite = self.grid.cell_keys(pts)
        report_nonfinite(n_nonfinite, len(pts), frame, self.nan_policy)
        packed, ibits, _ = self.grid.sort_cells(keys)
        with scheduling():
            coords, counts, inverse = _k.dynamic_voxels(packed, ibits, self.grid.grid_size, int(batch_index),
                                                        n_chunks())
        return DynamicVoxels(
            coords=coords,
            point_to_voxel=inverse,
            voxel_counts=counts,
            keep=keys >= 0,
            spatial_shape=self.grid.spatial_shape,
            grid=self.grid,
            batch_size=int(batch_index) + 1,
            sample_starts=np.array([0, len(pts)], np.int64),
            n_cropped=n_outside,
            n_nonfinite=n_nonfinite,
        )

    def voxelize_batch(self, clouds: Sequence[np.ndarray], frames: Sequence[Frame] | None = None) -> DynamicVoxels:
        """Voxels of a batch of clouds: sample b gets batch index b in coords."""
        if len(clouds) == 0:
            raise DataFormatError(None, "voxelize_batch needs at least one cloud")
        frames = [None] * len(clouds) if frames is None else list(frames)
        return DynamicVoxels.concat([self(c, frame=f, batch_index=b)
                                     for b, (c, f) in enumerate(zip(clouds, frames, strict=True))])


def point_offsets(points: np.ndarray | torch.Tensor, dv: DynamicVoxels) -> tuple[torch.Tensor, torch.Tensor]:
    """Offsets of each kept point from its voxel's centre and from the mean of its voxel's points.

    The per-point inputs of a dynamic VFE (OpenPCDet / mmdet3d DynamicVFE: f_center, f_cluster).
    points: [N, 3 + C] (all input points; rows are selected by dv.keep) or [N', 3 + C] (already
    kept), numpy or torch. Returns (to_voxel_centre, to_voxel_mean), float32 torch [N', 3], in the
    grid's first three coordinates (x, y, z; rho, phi, z for a cylindrical grid).
    """
    pts = torch.as_tensor(points)
    if len(pts) == len(dv.keep) and len(pts) != len(dv.point_to_voxel):
        pts = pts[torch.as_tensor(dv.keep, device=pts.device)]
    if len(pts) != len(dv.point_to_voxel):
        raise DataFormatError(None, f"point_offsets: expected {len(dv.keep)} or {len(dv.point_to_voxel)} "
                                    f"points, got {len(pts)}")
    pos = dv.grid.torch_positions(pts.to(torch.float32))[:, :3]
    inverse = torch.as_tensor(dv.point_to_voxel, device=pts.device)
    coords = torch.as_tensor(dv.coords, device=pts.device)
    centres = dv.grid.voxel_centres(coords)[:, :3]
    means = scatter_mean(pos, inverse, len(dv))
    return pos - centres[inverse], pos - means[inverse]
