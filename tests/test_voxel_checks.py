"""Voxelizer input checks: NaN / inf, empty clouds, bad arrays and bad configuration."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pc3d.errors import ConfigError, DataFormatError
from pc3d.voxel import (
    CylindricalVoxelizer,
    DynamicVoxelizer,
    HardVoxelizer,
    NonFinitePointsWarning,
    PillarVoxelizer,
    grid_sample,
    to_sparse_tensor,
)

RANGE = (-2.0, -2.0, -2.0, 2.0, 2.0, 2.0)


def voxelizers(nan_policy="warn"):
    return [HardVoxelizer(0.5, RANGE, 4, 100, nan_policy=nan_policy),
            DynamicVoxelizer(0.5, RANGE, nan_policy=nan_policy),
            PillarVoxelizer(0.5, RANGE, nan_policy=nan_policy),
            CylindricalVoxelizer(nan_policy=nan_policy)]


@pytest.mark.parametrize("index", range(4))
def test_nonfinite_points_warn_and_drop(rng, index):
    vox = voxelizers()[index]
    pts = rng.uniform(-1, 1, (50, 4)).astype(np.float32)
    clean = vox(pts[5:])
    pts[0, 0] = np.nan
    pts[1, 2] = np.inf
    pts[2, 3] = -np.inf  # a feature column counts too
    pts[3, 1] = np.nan
    pts[4, :] = np.nan
    with pytest.warns(NonFinitePointsWarning, match=r"frame_007\.bin: 5 of 50 points have NaN or inf"):
        out = vox(pts, frame="frame_007.bin")
    assert out.n_nonfinite == 5 and out.n_cropped == 0
    np.testing.assert_array_equal(out.coords, clean.coords)
    p2v = getattr(out, "keep", None)
    if p2v is not None:
        assert not p2v[:5].any() and p2v[5:].all()
    else:
        assert (out.point_to_voxel[:5] == -1).all()


@pytest.mark.parametrize("index", range(4))
def test_nonfinite_points_raise(index):
    vox = voxelizers("raise")[index]
    pts = np.zeros((3, 4), np.float32)
    pts[1, 1] = np.nan
    with pytest.raises(DataFormatError, match=r"scan\.npz: 1 of 3 points have NaN"):
        vox(pts, frame="scan.npz")


@pytest.mark.parametrize("index", range(4))
def test_empty_cloud(index):
    vox = voxelizers()[index]
    out = vox(np.zeros((0, 4), np.float32))
    assert len(out) == 0 and out.coords.shape == (0, 4)
    batch = vox.voxelize([np.zeros((0, 4), np.float32), np.zeros((0, 4), np.float32)])
    assert batch["voxel_coords"].shape == (0, 4) and batch["point_to_voxel"].shape == (0,)
    coords, shape, inverse, keep = grid_sample(np.zeros((0, 3), np.float32), 0.1)
    assert coords.shape == (0, 4) and inverse.shape == (0,) and keep.shape == (0,)


def test_all_points_outside(rng):
    out = HardVoxelizer(0.5, RANGE, 4, 100)(rng.uniform(5, 6, (20, 3)).astype(np.float32))
    assert len(out) == 0 and out.n_cropped == 20 and (out.point_to_voxel == -1).all()


def test_bad_arrays():
    vox = DynamicVoxelizer(0.5, RANGE)
    with pytest.raises(DataFormatError, match="a.bin.*dtype int64"):
        vox(np.zeros((4, 3), np.int64), frame="a.bin")
    with pytest.raises(DataFormatError, match="2-D"):
        vox(np.zeros(12, np.float32))
    with pytest.raises(DataFormatError, match="at least 3 columns"):
        vox(np.zeros((4, 2), np.float32))
    with pytest.raises(DataFormatError, match="numpy array"):
        vox([[0.0, 0.0, 0.0]])
    out = vox(torch.zeros(4, 3, dtype=torch.float64))  # float64 and CPU torch tensors are cast
    assert len(out) == 1


@pytest.mark.parametrize("kwargs", [dict(voxel_size=0.0), dict(voxel_size=(0.1, -0.1, 0.1)),
                                    dict(voxel_size=float("nan")), dict(point_range=(0, 0, 0, 1, 1, 0)),
                                    dict(point_range=(0, 0, 0, 1, 1)), dict(max_voxels=0),
                                    dict(max_points_per_voxel=2.5), dict(nan_policy="ignore"),
                                    dict(voxel_size=1e-46), dict(voxel_size=1e39),
                                    dict(point_range=(0, 0, 0, 1, 1, 1e39)),
                                    dict(point_range=(-3e38, 0, 0, 3e38, 1, 1)), dict(voxel_size=(4 / 2**31, 1, 1)),
                                    dict(max_points_per_voxel=2**40), dict(max_voxels=2**40)])
def test_bad_config(kwargs):
    args = dict(voxel_size=0.5, point_range=RANGE, max_points_per_voxel=4, max_voxels=10) | kwargs
    with pytest.raises(ConfigError):
        HardVoxelizer(**args)


def test_too_fine_grid():
    with pytest.raises(ConfigError):
        DynamicVoxelizer(1e-9, RANGE)


def test_to_sparse_tensor(rng):
    pts = rng.uniform(-1, 1, (100, 4)).astype(np.float32)
    hv = HardVoxelizer(0.5, RANGE, 4, 100).voxelize([pts, pts[:50]])
    feats = hv["voxels"].sum(1) / hv["voxel_num_points"].clamp(min=1)[:, None]
    x = to_sparse_tensor(feats, hv["voxel_coords"], hv["spatial_shape"], 2)
    assert x.spatial_shape == (8, 8, 8) and x.batch_size == 2 and x.feats.shape == (len(hv["voxels"]), 4)
    assert x.coords.dtype == torch.int32


def test_batch_index_out_of_range_raises(rng):
    """A batch index beyond int32 used to wrap in the int32 coords; a negative one was written as is."""
    pts = rng.uniform(-1, 1, (10, 3)).astype(np.float32)
    for vox in (HardVoxelizer(0.5, RANGE, 4, 10), DynamicVoxelizer(0.5, RANGE)):
        for bad in (-1, 2**31, 1.0):
            with pytest.raises(ConfigError, match="batch_index"):
                vox(pts, batch_index=bad)


def test_grid_sample_of_a_far_flung_cloud_names_the_frame():
    """A cloud spanning more voxels than int32 holds, or so far out that a voxel is below float32
    resolution, is a DataFormatError naming the frame (it was a garbage range before)."""
    for far in ([[0, 0, 0], [1e30, 1e30, 1e30]], [[1e30, 0, 0]]):
        with pytest.raises(DataFormatError, match="scan.bin"):
            grid_sample(np.array(far, np.float32), 0.1, frame="scan.bin")
