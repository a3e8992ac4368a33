"""Cylindrical and spatio-temporal (4D) voxelizers against numpy references."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from voxel_refs import cells, dynamic_reference, hard_reference

from pc3d.errors import ConfigError
from pc3d.voxel import (
    CylindricalVoxelizer,
    HardCylindricalVoxelizer,
    HardTemporalVoxelizer,
    TemporalVoxelizer,
    VoxelGrid,
    pillar_grid,
    point_offsets,
    to_sparse_tensor,
)


def polar(points):
    rho = np.sqrt(points[:, 0] * points[:, 0] + points[:, 1] * points[:, 1])
    phi = np.arctan2(points[:, 1], points[:, 0])
    phi = np.where(phi >= np.float32(np.pi), -np.float32(np.pi), phi).astype(np.float32)
    return np.stack([rho, phi, points[:, 2]], 1)


def ring_cloud(rng, n=800):
    rho = rng.uniform(0, 12, n)
    phi = rng.uniform(-np.pi, np.pi, n)
    pts = np.stack([rho * np.cos(phi), rho * np.sin(phi), rng.uniform(-3, 2, n), rng.random(n)], 1).astype(np.float32)
    pts[:10, :2] = [[-5.0, 0.0]] * 10  # phi = +pi exactly: the cell at -pi
    pts[10:20] = pts[:10]
    return pts


def test_cylindrical_dynamic_and_hard(rng):
    pts = ring_cloud(rng)
    dv_vox = CylindricalVoxelizer((20, 36, 8), rho_range=(0, 10), z_range=(-2, 1))
    g = dv_vox.grid
    assert dv_vox.spatial_shape == (8, 36, 20)
    idx, ok = cells(polar(pts), g.lower, g.voxel_size, g.grid_size)
    dv = dv_vox(pts)
    coords, counts, inverse, keep = dynamic_reference(idx, ok)
    np.testing.assert_array_equal(dv.coords, coords)
    np.testing.assert_array_equal(dv.point_to_voxel, inverse)
    np.testing.assert_array_equal(dv.voxel_counts, counts)
    np.testing.assert_array_equal(dv.keep, keep)
    assert (dv.coords[dv.point_to_voxel[:10], 2] == 0).all()  # phi = pi wraps to the first phi cell
    hard = HardCylindricalVoxelizer((20, 36, 8), (0, 10), (-2, 1), 3, 100)(pts)
    voxels, nums, hcoords, p2v = hard_reference(pts, idx, ok, 3, 100)
    np.testing.assert_array_equal(hard.coords, hcoords)
    np.testing.assert_array_equal(hard.voxels, voxels)
    np.testing.assert_array_equal(hard.point_to_voxel, p2v)
    to_centre, _ = point_offsets(pts, dv)
    assert (to_centre.abs() <= torch.from_numpy(g.voxel_size) / 2 + 1e-4).all()


def test_temporal(rng):
    n = 900
    pts = np.concatenate([rng.uniform(-3, 3, (n, 3)), rng.random((n, 1)), rng.uniform(-0.05, 0.5, (n, 1))],
                         1).astype(np.float32)
    pts[:50, 4] = np.arange(50, dtype=np.float32) % 5 * np.float32(0.1)  # on time boundaries
    vox = TemporalVoxelizer(0.5, (-2, -2, -2, 2, 2, 2), dt=0.1, time_range=(0, 0.5), time_column=4)
    g = vox.grid
    assert vox.spatial_shape == (5, 8, 8, 8)
    idx, ok = cells(pts[:, [0, 1, 2, 4]], g.lower, g.voxel_size, g.grid_size)
    dv = vox(pts)
    coords, counts, inverse, keep = dynamic_reference(idx, ok)
    assert dv.coords.shape[1] == 5
    np.testing.assert_array_equal(dv.coords, coords)
    np.testing.assert_array_equal(dv.point_to_voxel, inverse)
    np.testing.assert_array_equal(dv.keep, keep)
    hard = HardTemporalVoxelizer(0.5, (-2, -2, -2, 2, 2, 2), 0.1, (0, 0.5), 2, 40, time_column=4)(pts)
    voxels, nums, hcoords, p2v = hard_reference(pts, idx, ok, 2, 40)
    np.testing.assert_array_equal(hard.coords, hcoords)
    np.testing.assert_array_equal(hard.voxels, voxels)
    x = to_sparse_tensor(np.ones((len(dv), 2), np.float32), dv.coords, dv.spatial_shape, dv.batch_size)
    assert x.ndim == 4 and len(x) == len(dv)
    with pytest.raises(ConfigError):
        TemporalVoxelizer(0.5, (-2, -2, -2, 2, 2, 2), dt=0.1, time_range=(0, 0.5), time_column=2)


@pytest.mark.parametrize("n_phi", [36, 360, 1000])
def test_cylindrical_azimuths_just_below_pi_stay_in_the_last_cell(n_phi):
    # float32 atan2 values just below +pi can round into cell n_phi; they belong to the last cell
    y = np.geomspace(1e-9, 1e-2, 4000).astype(np.float32)
    pts = np.stack([np.full_like(y, -5.0), y, np.zeros_like(y)], 1)
    pts = np.concatenate([pts, pts * [1, -1, 1]]).astype(np.float32)
    vox = CylindricalVoxelizer((10, n_phi, 4), rho_range=(0, 10), z_range=(-2, 2))
    dv = vox(pts)
    assert dv.keep.all() and dv.n_cropped == 0
    phi_cells = dv.coords[dv.point_to_voxel, 2]
    assert np.isin(phi_cells, [0, n_phi - 1]).all()
    assert (phi_cells[:len(y)] == n_phi - 1).any()
    hard = HardCylindricalVoxelizer((10, n_phi, 4), (0, 10), (-2, 2), 4, 100)(pts)
    assert (hard.point_to_voxel >= 0).all()
    to_centre, _ = point_offsets(pts, dv)
    assert (to_centre.abs() <= torch.from_numpy(vox.grid.voxel_size) / 2 + 1e-4).all()


def test_pillar_grid_rounds_the_cell_count_as_the_voxel_grid():
    # 1.0 / 0.35 = 2.86 pillars -> 3 (spconv's std::round), as VoxelGrid counts them
    grid = pillar_grid([0.35, 0.35], [0, 0, -1, 1.0, 1.0, 1])
    assert grid.spatial_shape == (1, 3, 3)
    assert grid.grid_size[:2].tolist() == VoxelGrid([0.35, 0.35, 2.0], [0, 0, -1, 1.0, 1.0, 1]).grid_size[:2].tolist()
