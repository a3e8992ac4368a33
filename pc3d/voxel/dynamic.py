"""Dynamic voxelization (MVF / OpenPCDet and mmdet3d DynamicVFE): every in-range point keeps its
voxel, with no cap on points or voxels; features are pooled with scatter_mean / scatter_max.
Unique-coordinates grid sampling (`grid_sample`) is dynamic voxelization of one cloud."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from pc3d_ops import voxelize as _k

from pc3d.errors import DataFormatError
from pc3d.voxel.checks import (
    INT32_MAX,
    Frame,
    check_batch,
    check_batch_index,
    check_cloud,
    check_nan_policy,
    check_sizes,
    report_nonfinite,
)
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

    def batch_keys(self) -> dict:
        """The voxel keys of the batch contract (pc3d.data.batch) as torch tensors; point_to_voxel
        covers every input point (-1 where not kept)."""
        point_to_voxel = np.full(len(self.keep), -1, np.int64)
        point_to_voxel[self.keep] = self.point_to_voxel
        return {"voxel_coords": torch.from_numpy(self.coords), "voxel_num_points": torch.from_numpy(self.voxel_counts),
                "point_to_voxel": torch.from_numpy(point_to_voxel), "spatial_shape": tuple(self.spatial_shape)}


class DynamicGridVoxelizer:
    """Points -> occupied voxels of any VoxelGrid, sorted (b, z, y, x), with the inverse map of every
    kept point. nan_policy: "warn" (drop NaN / inf points with a warning naming the frame) or "raise"
    (DataFormatError). The Cartesian, pillar, cylindrical and spatio-temporal dynamic voxelizers are
    this class on their grid.
    """

    def __init__(self, grid: VoxelGrid, *, nan_policy: str = "warn"):
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
        batch_index = check_batch_index(batch_index)
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

    def voxelize(self, clouds: Sequence[np.ndarray], seeds: Sequence[int | None] | None = None,
                 frames: Sequence[Frame] | None = None) -> dict:
        """The voxel keys of a batch (pc3d.data.batch): voxel_coords (sample b has batch index b),
        voxel_num_points, point_to_voxel (rows of the concatenated clouds, -1 where dropped),
        spatial_shape. seeds: accepted for the common signature, unused (nothing is random here)."""
        return DynamicVoxels.concat([self(c, frame=f, batch_index=b)
                                     for b, (c, _, f) in enumerate(check_batch(clouds, seeds, frames))]).batch_keys()


class DynamicVoxelizer(DynamicGridVoxelizer):
    """Dynamic voxels on a Cartesian grid: voxel_size one or 3 numbers (x, y, z), point_range
    (x_min, y_min, z_min, x_max, y_max, z_max); cells are spconv's (see pc3d.voxel.grid)."""

    def __init__(self, voxel_size: float | Sequence[float], point_range: Sequence[float], *,
                 nan_policy: str = "warn"):
        super().__init__(VoxelGrid(voxel_size, point_range), nan_policy=nan_policy)


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


def grid_sample(points: np.ndarray, voxel_size: float | Sequence[float],
                point_range: Sequence[float] | None = None, batch_index: int = 0, frame: Frame = None,
                nan_policy: str = "warn") -> tuple[np.ndarray, tuple[int, ...], np.ndarray, np.ndarray]:
    """Unique voxel coordinates of a cloud and the map that carries per-voxel values to its points.

    points: float32 [N, 3 + C] (LiDAR frame). point_range: (x_min, y_min, z_min, x_max, y_max,
    z_max); by default the bounding box of the finite points (nothing is cropped then).
    Returns (coords int32 [M, 4] (batch, z, y, x) sorted, spatial_shape (z, y, x), inverse int64
    [N'] voxel of each kept point, keep bool [N] points inside the range and finite); per-voxel
    predictions go back to every input point as ``pred[inverse]`` on ``points[keep]``.
    NaN / inf points warn and are dropped (nan_policy="warn") or raise DataFormatError ("raise").
    """
    pts = check_cloud(points, 3, frame)
    if point_range is None:
        grid = fitted_grid(pts, voxel_size, frame)
    else:
        grid = VoxelGrid(voxel_size, point_range)
    dv = DynamicGridVoxelizer(grid, nan_policy=nan_policy)(pts, batch_index=batch_index, frame=frame)
    return dv.coords, dv.spatial_shape, dv.point_to_voxel, dv.keep


def fitted_grid(points: np.ndarray, voxel_size: float | Sequence[float], frame: Frame = None) -> VoxelGrid:
    """The Cartesian grid from the lowest finite point that holds every finite point of the cloud.

    DataFormatError naming the frame if the cloud spans more cells than int32 coords hold."""
    size = check_sizes(voxel_size, 3, "voxel_size")
    xyz = points[:, :3]
    finite = np.isfinite(points).all(1)
    if not finite.all():
        xyz = xyz[finite]
    if len(xyz) == 0:
        return VoxelGrid(size, np.concatenate([np.zeros(3), size]), grid_size=(1, 1, 1))
    lower = xyz.min(0)
    # the same float32 expression as the kernel, so the highest point lands in the last cell
    with np.errstate(over="ignore", invalid="ignore"):
        cells = np.floor((xyz.max(0) - lower) / size) + 1
        upper = lower + cells * size
    if not (np.isfinite(upper).all() and (cells <= INT32_MAX).all()):
        raise DataFormatError(frame, f"the points span {(xyz.max(0).astype(np.float64) - lower).tolist()} (x, y, z): "
                                     f"{cells.tolist()} voxels of {size.tolist()}, more than the {INT32_MAX} per "
                                     "axis of int32 coords; pass point_range or a larger voxel_size")
    if not (upper > lower).all():
        raise DataFormatError(frame, f"the points lie as far as {np.abs(xyz).max(0).tolist()} (x, y, z) from the "
                                     f"origin, where voxels of {size.tolist()} are below float32 resolution; pass "
                                     "point_range or a larger voxel_size")
    return VoxelGrid(size, np.concatenate([lower, upper]), grid_size=cells.astype(np.int64))
