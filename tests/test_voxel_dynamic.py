"""DynamicVoxelizer, grid_sample, scatter_mean / scatter_max and point_offsets against numpy."""
from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from voxel_refs import cells, dynamic_reference, on_boundaries

from pc3d.voxel import (
    DynamicPillarVoxelizer,
    DynamicVoxelizer,
    DynamicVoxels,
    grid_sample,
    point_offsets,
    scatter_max,
    scatter_mean,
)

RANGE = (-2.0, -3.0, -1.0, 2.0, 3.0, 1.0)
SIZE = (0.25, 0.5, 0.2)


def cloud(rng, n=600):
    lo, hi = np.array(RANGE[:3]), np.array(RANGE[3:])
    xyz = rng.uniform(lo - 0.3, hi + 0.3, (n, 3)).astype(np.float32)
    xyz[: n // 4] = on_boundaries(rng, n // 4, lo, SIZE, 8)
    xyz[n // 4: n // 4 + 40] = xyz[:40]
    return np.concatenate([xyz, rng.standard_normal((n, 2)).astype(np.float32)], 1)


def assert_same(dv, ref):
    coords, counts, inverse, keep = ref
    np.testing.assert_array_equal(dv.coords, coords)
    np.testing.assert_array_equal(dv.voxel_counts, counts)
    np.testing.assert_array_equal(dv.point_to_voxel, inverse)
    np.testing.assert_array_equal(dv.keep, keep)
    assert dv.coords.dtype == np.int32 and dv.point_to_voxel.dtype == np.int64 and dv.voxel_counts.dtype == np.int32


def test_matches_reference(rng):
    pts = cloud(rng)
    vox = DynamicVoxelizer(SIZE, RANGE)
    dv = vox(pts, batch_index=2)
    g = vox.grid
    idx, ok = cells(pts[:, :3], g.lower, g.voxel_size, g.grid_size)
    assert_same(dv, dynamic_reference(idx, ok, 2))
    assert dv.n_cropped == int((~ok).sum()) and dv.n_nonfinite == 0
    assert dv.batch_size == 3 and dv.spatial_shape == (10, 12, 16)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 300), st.integers(0, 2**32 - 1), st.floats(0.05, 2.0))
def test_property_any_cloud(n, seed, size):
    rng = np.random.default_rng(seed)
    pts = rng.uniform(-4, 4, (n, 3)).astype(np.float32)
    pts[: n // 3] = np.round(pts[: n // 3] / np.float32(size)) * np.float32(size)  # on boundaries
    vox = DynamicVoxelizer(size, (-3, -3, -3, 3, 3, 3))
    g = vox.grid
    idx, ok = cells(pts, g.lower, g.voxel_size, g.grid_size)
    assert_same(vox(pts), dynamic_reference(idx, ok))


def test_batch(rng):
    clouds = [cloud(rng, 200), cloud(rng, 0), cloud(rng, 300)]
    vox = DynamicVoxelizer(SIZE, RANGE)
    parts = [vox(c, batch_index=b) for b, c in enumerate(clouds)]
    dv = DynamicVoxels.concat(parts)
    np.testing.assert_array_equal(dv.coords, np.concatenate([p.coords for p in parts]))
    offsets = np.cumsum([0] + [len(p) for p in parts])
    np.testing.assert_array_equal(dv.point_to_voxel, np.concatenate(
        [p.point_to_voxel + o for p, o in zip(parts, offsets, strict=False)]))
    np.testing.assert_array_equal(dv.keep, np.concatenate([p.keep for p in parts]))
    assert dv.batch_size == 3
    np.testing.assert_array_equal(dv.point_batch, np.repeat([0, 2], [parts[0].keep.sum(), parts[2].keep.sum()]))
    assert (np.diff(dv.coords[:, 0]) >= 0).all()
    # the batch keys: every input point mapped, -1 where not kept
    keys = vox.voxelize(clouds)
    np.testing.assert_array_equal(keys["voxel_coords"].numpy(), dv.coords)
    np.testing.assert_array_equal(keys["voxel_num_points"].numpy(), dv.voxel_counts)
    p2v = keys["point_to_voxel"].numpy()
    np.testing.assert_array_equal(p2v[dv.keep], dv.point_to_voxel)
    assert (p2v[~dv.keep] == -1).all() and keys["spatial_shape"] == (10, 12, 16)


def test_grid_sample(rng):
    pts = cloud(rng)
    coords, shape, inverse, keep = grid_sample(pts, 0.3)
    assert keep.all()  # the fitted range holds every point
    lower = pts[:, :3].min(0)
    idx = np.floor((pts[:, :3] - lower) / np.float32(0.3)).astype(np.int64)
    ref_coords, ref_counts, ref_inverse, _ = dynamic_reference(idx, np.ones(len(pts), bool))
    np.testing.assert_array_equal(coords, ref_coords)
    np.testing.assert_array_equal(inverse, ref_inverse)
    assert shape == tuple(int(v) for v in idx.max(0)[::-1] + 1)
    # with a range: the Cartesian dynamic voxelizer
    c2, s2, i2, k2 = grid_sample(pts, SIZE, RANGE, batch_index=1)
    dv = DynamicVoxelizer(SIZE, RANGE)(pts, batch_index=1)
    np.testing.assert_array_equal(c2, dv.coords)
    np.testing.assert_array_equal(i2, dv.point_to_voxel)
    np.testing.assert_array_equal(k2, dv.keep)


def test_scatter_and_offsets(rng):
    pts = cloud(rng)
    vox = DynamicVoxelizer(SIZE, RANGE)
    dv = vox(pts)
    kept = torch.from_numpy(pts[dv.keep])
    feats = kept.clone().requires_grad_(True)
    mean = scatter_mean(feats, dv.point_to_voxel, len(dv))
    top = scatter_max(feats, dv.point_to_voxel, len(dv))
    inv = dv.point_to_voxel
    ref_mean = np.stack([pts[dv.keep][inv == v].mean(0) for v in range(len(dv))])
    ref_max = np.stack([pts[dv.keep][inv == v].max(0) for v in range(len(dv))])
    np.testing.assert_allclose(mean.detach().numpy(), ref_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(top.detach().numpy(), ref_max)
    (mean.sum() + top.sum()).backward()
    assert feats.grad is not None and torch.isfinite(feats.grad).all()

    to_centre, to_mean = point_offsets(pts, dv)
    assert to_centre.shape == (len(inv), 3)
    centres = (dv.coords[:, 1:][:, ::-1] + 0.5) * np.array(SIZE, np.float32) + np.array(RANGE[:3], np.float32)
    np.testing.assert_allclose(to_centre.numpy(), pts[dv.keep][:, :3] - centres[inv], atol=1e-5)
    np.testing.assert_allclose(to_mean.numpy(), pts[dv.keep][:, :3] - ref_mean[inv, :3], atol=1e-5)
    assert (to_centre.abs() <= torch.tensor(SIZE) / 2 + 1e-5).all()
    same, _ = point_offsets(torch.from_numpy(pts[dv.keep]), dv)  # already-kept rows work too
    torch.testing.assert_close(same, to_centre)


def test_dynamic_pillars(rng):
    pts = cloud(rng)
    dv = DynamicPillarVoxelizer((0.25, 0.5), RANGE)(pts)
    assert dv.spatial_shape == (1, 12, 16) and (dv.coords[:, 1] == 0).all()
    inside = ((pts[:, :3] >= np.array(RANGE[:3], np.float32)) & (pts[:, :3] < np.array(RANGE[3:], np.float32))).all(1)
    np.testing.assert_array_equal(dv.keep, inside)
