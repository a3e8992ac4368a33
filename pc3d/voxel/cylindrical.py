"""Cylindrical voxels (Cylinder3D): a (rho, phi, z) grid, denser near the sensor in Cartesian terms.

Axis order follows the Cartesian convention with x -> rho, y -> phi: grid sizes are given as
(n_rho, n_phi, n_z) and coords are (b, z, phi, rho) with spatial_shape (n_z, n_phi, n_rho).
rho = sqrt(x^2 + y^2), phi = atan2(y, x) in [-pi, pi) (float32). A cell is
floor((v - v_min) / ((v_max - v_min) / n)) in float32; points outside [rho_min, rho_max) or
[z_min, z_max) are cropped and counted (Cylinder3D clips them into the border cells instead). Every
azimuth is inside the grid: a phi just below +pi whose float32 cell rounds to n_phi is moved to the
largest phi of the last cell.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from pc3d_ops import voxelize as _k

from pc3d.errors import ConfigError
from pc3d.voxel.checks import check_range
from pc3d.voxel.dynamic import DynamicGridVoxelizer
from pc3d.voxel.grid import VoxelGrid, cell_counts
from pc3d.voxel.hard import HardGridVoxelizer


class CylindricalGrid(VoxelGrid):
    """(rho, phi, z) grid of `grid_size` = (n_rho, n_phi, n_z) cells over rho_range x [-pi, pi) x z_range."""

    def __init__(self, grid_size: Sequence[int] = (480, 360, 32), rho_range: Sequence[float] = (0.0, 50.0),
                 z_range: Sequence[float] = (-4.0, 2.0)):
        cells = cell_counts(grid_size, 3)
        if (cells < 1).any():
            raise ConfigError(f"grid_size must be 3 positive ints (n_rho, n_phi, n_z), got {grid_size!r}")
        (rho_min,), (rho_max,) = check_range(rho_range, 1, "rho_range")
        (z_min,), (z_max,) = check_range(z_range, 1, "z_range")
        if rho_min < 0:
            raise ConfigError(f"rho_range must start at >= 0, got {rho_range!r}")
        pi = np.float32(np.pi)
        lower = np.array([rho_min, -pi, z_min], np.float32)
        upper = np.array([rho_max, pi, z_max], np.float32)
        super().__init__((upper - lower) / cells.astype(np.float32), (*lower, *upper), grid_size=cells)
        self.phi_top = _last_phi_in_grid(-pi, self.voxel_size[1], int(cells[1]))

    def positions(self, points: np.ndarray) -> np.ndarray:
        """float32 [N, 3] (rho, phi, z), phi in [-pi, phi_top]."""
        return _k.cylindrical_positions(points, self.phi_top)

    def torch_positions(self, points: torch.Tensor) -> torch.Tensor:
        rho = torch.sqrt(points[:, 0] * points[:, 0] + points[:, 1] * points[:, 1])
        phi = torch.atan2(points[:, 1], points[:, 0])
        phi = torch.where(phi >= np.float32(np.pi), torch.full_like(phi, -np.float32(np.pi)), phi)
        return torch.stack([rho, phi.clamp(max=float(self.phi_top)), points[:, 2]], 1)


def _last_phi_in_grid(phi_min: np.float32, size: np.float32, n_phi: int) -> np.float32:
    """The largest float32 phi below pi whose cell floor((phi - phi_min) / size) is < n_phi."""
    phi = np.nextafter(np.float32(np.pi), np.float32(0))
    while np.floor((phi - phi_min) / size) >= n_phi:
        phi = np.nextafter(phi, np.float32(0))
    return phi


class CylindricalVoxelizer(DynamicGridVoxelizer):
    """Dynamic cylindrical voxels (Cylinder3D): coords (b, z, phi, rho) sorted, inverse map per point.
    voxel_size, point_range: accepted and unused, so that a dataset config's Cartesian voxelizer entry (which
    passes them) can be retargeted to this class by an experiment; the grid is grid_size over rho_range, the
    full azimuth and z_range."""

    def __init__(self, grid_size: Sequence[int] = (480, 360, 32), rho_range: Sequence[float] = (0.0, 50.0),
                 z_range: Sequence[float] = (-4.0, 2.0), *, nan_policy: str = "warn", voxel_size=None,
                 point_range=None):
        super().__init__(CylindricalGrid(grid_size, rho_range, z_range), nan_policy=nan_policy)


class HardCylindricalVoxelizer(HardGridVoxelizer):
    """Hard cylindrical voxels: the HardGridVoxelizer rules on a (rho, phi, z) grid."""

    def __init__(self, grid_size: Sequence[int], rho_range: Sequence[float], z_range: Sequence[float],
                 max_points_per_voxel: int, max_voxels: int, shuffle: bool = False, *, nan_policy: str = "warn"):
        super().__init__(CylindricalGrid(grid_size, rho_range, z_range), max_points_per_voxel, max_voxels, shuffle,
                         nan_policy=nan_policy)
