"""HardVoxelizer against a literal numpy port of spconv's loop, and against spconv itself."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from conftest import sample_path
from voxel_refs import cells, hard_reference, on_boundaries

from pc3d.voxel import HardVoxelizer, HardVoxels, PillarVoxelizer, VoxelLimitWarning

RANGE = (-2.0, -3.0, -1.0, 2.0, 3.0, 1.0)
SIZE = (0.25, 0.5, 0.2)


def cloud(rng, n=600, features=1):
    """Random points over a bit more than RANGE, with boundary points and exact duplicates."""
    lo, hi = np.array(RANGE[:3]), np.array(RANGE[3:])
    xyz = rng.uniform(lo - 0.3, hi + 0.3, (n, 3)).astype(np.float32)
    xyz[: n // 4] = on_boundaries(rng, n // 4, lo, SIZE, 8)
    xyz[n // 4: n // 4 + 40] = xyz[:40]
    return np.concatenate([xyz, rng.standard_normal((n, features)).astype(np.float32)], 1)


def reference(points, vox: HardVoxelizer, batch_index=0):
    g = vox.grid
    idx, ok = cells(points[:, :3], g.lower, g.voxel_size, g.grid_size)
    return hard_reference(points, idx, ok, vox.max_points_per_voxel, vox.max_voxels, batch_index)


def assert_same(result, ref):
    voxels, nums, coords, p2v = ref
    np.testing.assert_array_equal(result.coords, coords)
    np.testing.assert_array_equal(result.num_points, nums)
    np.testing.assert_array_equal(result.voxels, voxels)
    np.testing.assert_array_equal(result.point_to_voxel, p2v)


@pytest.mark.parametrize("max_points, max_voxels", [(5, 10_000), (2, 10_000), (3, 17), (1, 1)])
def test_matches_reference(rng, max_points, max_voxels):
    pts = cloud(rng)
    vox = HardVoxelizer(SIZE, RANGE, max_points, max_voxels)
    out = vox(pts)
    assert_same(out, reference(pts, vox))
    assert out.voxels.dtype == np.float32 and out.coords.dtype == np.int32 and out.num_points.dtype == np.int32
    assert out.spatial_shape == (10, 12, 16)
    assert len(out) <= max_voxels
    idx, ok = cells(pts[:, :3], vox.grid.lower, vox.grid.voxel_size, vox.grid.grid_size)
    assert out.n_cropped == int((~ok).sum())
    assert out.n_dropped_points == int(ok.sum() - out.num_points.sum())


def test_shuffle_is_seeded_and_maps_back(rng):
    pts = cloud(rng)
    vox = HardVoxelizer(SIZE, RANGE, 2, 10_000, shuffle=True)
    a, b = vox(pts, seed=3), vox(pts, seed=3)
    np.testing.assert_array_equal(a.voxels, b.voxels)
    perm = np.random.default_rng(3).permutation(len(pts))
    voxels, nums, coords, p2v = reference(pts[perm], vox)
    np.testing.assert_array_equal(a.voxels, voxels)
    np.testing.assert_array_equal(a.coords, coords)
    expected = np.empty_like(p2v)
    expected[perm] = p2v
    np.testing.assert_array_equal(a.point_to_voxel, expected)
    assert not np.array_equal(vox(pts, seed=4).voxels, a.voxels)


def test_batch(rng):
    clouds = [cloud(rng, 300), cloud(rng, 0), cloud(rng, 200)]
    vox = HardVoxelizer(SIZE, RANGE, 3, 50)
    out = HardVoxels.concat([vox(c, batch_index=b) for b, c in enumerate(clouds)])
    refs = [reference(c, vox, b) for b, c in enumerate(clouds)]
    np.testing.assert_array_equal(out.coords, np.concatenate([r[2] for r in refs]))
    np.testing.assert_array_equal(out.voxels, np.concatenate([r[0] for r in refs]))
    offsets = np.cumsum([0] + [len(r[1]) for r in refs])
    p2v = np.concatenate([np.where(r[3] >= 0, r[3] + o, -1) for r, o in zip(refs, offsets, strict=False)])
    np.testing.assert_array_equal(out.point_to_voxel, p2v)
    assert out.batch_size == 3
    np.testing.assert_array_equal(out.point_batch, np.repeat([0, 1, 2], [300, 0, 200]))
    with pytest.warns(VoxelLimitWarning):  # 50 voxels of 300 points: the cap drops some
        keys = vox.voxelize(clouds)
    np.testing.assert_array_equal(keys["voxels"].numpy(), out.voxels)
    np.testing.assert_array_equal(keys["voxel_num_points"].numpy(), out.num_points)
    np.testing.assert_array_equal(keys["voxel_coords"].numpy(), out.coords)
    np.testing.assert_array_equal(keys["point_to_voxel"].numpy(), p2v)
    assert keys["spatial_shape"] == out.spatial_shape


def test_pillars(rng):
    pts = cloud(rng)
    vox = PillarVoxelizer((0.25, 0.5), RANGE, max_points_per_pillar=4, max_pillars=1000)
    out = vox(pts)
    assert out.spatial_shape == (1, 12, 16)
    assert (out.coords[:, 1] == 0).all()
    idx, ok = cells(pts[:, :3], vox.grid.lower, vox.grid.voxel_size, vox.grid.grid_size)
    assert_same(out, hard_reference(pts, idx, ok, 4, 1000))


def _spconv_point_to_voxel(size, point_range, channels, max_voxels, max_points):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        utils = pytest.importorskip("spconv.pytorch.utils", reason="spconv is not installed")
    return utils.PointToVoxel(vsize_xyz=list(size), coors_range_xyz=list(point_range), num_point_features=channels,
                              max_num_voxels=max_voxels, max_num_points_per_voxel=max_points)


def _assert_same_as_spconv(vox: HardVoxelizer, pts: np.ndarray):
    import torch

    ref = _spconv_point_to_voxel(vox.grid.voxel_size.tolist(), (*vox.grid.lower, *vox.grid.upper), pts.shape[1],
                                 vox.max_voxels, vox.max_points_per_voxel)
    voxels, indices, num, p2v = ref.generate_voxel_with_id(torch.from_numpy(pts))
    out = vox(pts)
    np.testing.assert_array_equal(out.coords[:, 1:], indices.numpy())
    np.testing.assert_array_equal(out.num_points, num.numpy())
    np.testing.assert_array_equal(out.voxels, voxels.numpy())
    np.testing.assert_array_equal(out.point_to_voxel, p2v.numpy())


def test_same_as_spconv_on_boundaries(rng):
    pts = cloud(rng, 2000)
    _assert_same_as_spconv(HardVoxelizer(SIZE, RANGE, 3, 300), pts)


def test_same_as_spconv_on_real_sweep():
    pc = np.load(sample_path("scan360/benchmark-pc.npz"))["pc"].astype(np.float32)
    pts = np.concatenate([pc, np.zeros((len(pc), 1), np.float32)], 1)
    # 0.1 m: 124,612 occupied cells, so 100,000 also checks the truncation (spconv's CPU path
    # allocates a dense int32 table of the grid: 0.05 m would take 4 GB)
    vox = HardVoxelizer(0.1, (-75.2, -75.2, -2, 75.2, 75.2, 4), 5, 100_000)
    _assert_same_as_spconv(vox, pts)


def test_a_batch_over_max_voxels_warns_once_naming_the_frame(rng):
    """The batch path (Collate's) used to drop the voxels beyond max_voxels without a word."""
    vox = HardVoxelizer(0.5, (-4, -4, -2, 4, 4, 2), 2, 20)
    clouds = [rng.uniform(-4, 4, (400, 4)).astype(np.float32) for _ in range(2)]
    with pytest.warns(VoxelLimitWarning, match=r"f0: \d+ occupied voxels, max_voxels=20 kept the first 20"):
        out = vox.voxelize(clouds, seeds=[0, 1], frames=["f0", "f1"])
    assert len(out["voxel_num_points"]) == 40
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vox.voxelize(clouds, seeds=[0, 1], frames=["f0", "f1"])  # once per voxelizer
        HardVoxelizer(0.5, (-4, -4, -2, 4, 4, 2), 2, 10**5).voxelize(clouds)  # under the cap: silent
