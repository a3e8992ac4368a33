"""Pointcept's indoor augmentations: elastic distortion (against brute-force smoothing and the noise it
draws), auto-contrast, per-channel colour translation, dropout, sphere crop and the uniform x / y tilt."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from pc3d.data.transforms import (
    ChromaticAutoContrast,
    ColorJitter,
    ElasticDistortion,
    GlobalTilt,
    RandomDropout,
    SphereCrop,
)
from pc3d.data.transforms.elastic import smooth, trilinear
from pc3d.errors import ConfigError, DataFormatError


def _scene(n: int = 500, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    pts = np.concatenate([rng.uniform(0, 4, (n, 3)), rng.uniform(0.2, 0.8, (n, 3))], 1).astype(np.float32)
    return {"frame_id": "s", "points": pts, "point_labels": np.arange(n)}


def test_smoothing_is_a_three_wide_box_filter_per_axis_with_zeros_outside():
    noise = np.random.default_rng(0).standard_normal((4, 5, 3, 3)).astype(np.float32)
    want = noise.astype(np.float64)
    for _ in range(2):
        for axis in range(3):
            out = np.zeros_like(want)
            for idx in itertools.product(*(range(s) for s in want.shape[:3])):
                for d in (-1, 0, 1):
                    j = list(idx)
                    j[axis] += d
                    if 0 <= j[axis] < want.shape[axis]:
                        out[idx] += want[tuple(j)] / 3
            want = out
    np.testing.assert_allclose(smooth(noise), want, rtol=1e-5, atol=1e-6)


def test_trilinear_interpolation_is_exact_on_nodes_and_on_linear_fields():
    rng = np.random.default_rng(1)
    origin, spacing = np.array([-1.0, 0.5, 2.0]), 0.25
    nodes = np.stack(np.meshgrid(*(np.arange(s) for s in (5, 4, 6)), indexing="ij"), -1) * spacing + origin
    linear = (nodes @ np.array([1.5, -2.0, 0.5]) + 3.0)[..., None]
    xyz = origin + rng.uniform(0, [4, 3, 5], (50, 3)) * spacing
    np.testing.assert_allclose(trilinear(linear, origin, spacing, xyz)[:, 0], xyz @ [1.5, -2.0, 0.5] + 3.0)
    grid = rng.standard_normal((5, 4, 6, 2))
    np.testing.assert_allclose(trilinear(grid, origin, spacing, nodes[2:4, 1, 3]), grid[2:4, 1, 3])
    assert not trilinear(grid, origin, spacing, origin[None] - 1.0).any()  # outside: 0


def test_elastic_distortion_moves_points_by_the_smoothed_noise_it_draws():
    sample = _scene()
    sample["points"][0, :3] = sample["points"][:, :3].min(0)  # a point on the noise grid's node (1, 1, 1)
    pts = sample["points"].copy()
    out = ElasticDistortion([(0.5, 2.0)], prob=1.0)(dict(sample), np.random.default_rng(4))
    rng = np.random.default_rng(4)
    rng.random()
    cells = ((pts[:, :3].max(0) - pts[:, :3].min(0)) // 0.5).astype(np.int64) + 3
    field = smooth(rng.standard_normal((*cells, 3), dtype=np.float32))
    np.testing.assert_allclose(out["points"][0, :3] - pts[0, :3], 2.0 * field[1, 1, 1], rtol=1e-5, atol=1e-6)
    moved = np.linalg.norm(out["points"][:, :3] - pts[:, :3], axis=1)
    assert moved.min() > 0 and moved.max() < 2.0 * np.abs(field).max() * np.sqrt(3) + 1e-6
    np.testing.assert_array_equal(out["points"][:, 3:], pts[:, 3:])  # colours and labels stay
    np.testing.assert_array_equal(out["point_labels"], sample["point_labels"])
    near = np.linalg.norm(pts[:, None, :3] - pts[None, :, :3], axis=2) < 0.15
    i, j = np.nonzero(near & ~np.eye(len(pts), dtype=bool))
    assert len(i) and (np.linalg.norm((out["points"] - pts)[i, :3] - (out["points"] - pts)[j, :3], axis=1)
                       < 0.5 * moved.mean()).all()  # a smooth field: neighbours move alike


def test_elastic_distortion_moves_all_clouds_by_one_field_and_refuses_boxes_and_flow():
    sample = _scene()
    sample["points2"] = sample["points"].copy()
    out = ElasticDistortion(prob=1.0)(sample, np.random.default_rng(0))
    np.testing.assert_array_equal(out["points"], out["points2"])
    still = _scene()
    assert ElasticDistortion(prob=0.0)(dict(still), np.random.default_rng(0))["points"] is still["points"]
    for extra in ({"gt_boxes": np.zeros((1, 7), np.float32)}, {"flow": np.zeros((500, 3), np.float32)}):
        with pytest.raises(DataFormatError, match="s: ElasticDistortion would leave"):
            ElasticDistortion()({**_scene(), **extra}, np.random.default_rng(0))
    with pytest.raises(ConfigError):
        ElasticDistortion([(0.0, 1.0)])


def test_auto_contrast_stretches_each_colour_column_and_blends():
    pts = np.array([[0, 0, 0, 0.2, 0.5, 0.3], [1, 1, 1, 0.6, 0.5, 0.4], [2, 2, 2, 0.4, 0.5, 0.35]], np.float32)
    full = ChromaticAutoContrast(prob=1.0, blend=1.0)({"points": pts.copy()}, np.random.default_rng(0))["points"]
    np.testing.assert_allclose(full[:, 3], [0.0, 1.0, 0.5], atol=1e-6)
    np.testing.assert_allclose(full[:, 5], [0.0, 1.0, 0.5], atol=1e-6)
    np.testing.assert_array_equal(full[:, 4], pts[:, 4])  # no spread: left as it is
    half = ChromaticAutoContrast(prob=1.0, blend=0.5)({"points": pts.copy()}, np.random.default_rng(0))["points"]
    np.testing.assert_allclose(half[:, 3], (pts[:, 3] + full[:, 3]) / 2, atol=1e-6)
    never = ChromaticAutoContrast(prob=0.0)({"points": pts.copy()}, np.random.default_rng(0))["points"]
    np.testing.assert_array_equal(never, pts)


def test_per_channel_colour_translation_shifts_each_column_by_its_own_draw():
    pts = np.full((4, 6), 0.5, np.float32)
    out = ColorJitter(brightness=0.05, std=0.0, prob=1.0, per_channel=True)({"points": pts.copy()},
                                                                          np.random.default_rng(2))["points"]
    rng = np.random.default_rng(2)
    rng.random()
    np.testing.assert_allclose(out[0, 3:], 0.5 + rng.uniform(-0.05, 0.05, 3), atol=1e-7)
    assert len(np.unique(out[0, 3:])) == 3 and (out == out[0]).all()


def test_random_dropout_keeps_a_fixed_share_in_order_on_a_share_of_the_scenes():
    out = RandomDropout(ratio=0.2, prob=1.0)(_scene(), np.random.default_rng(0))
    assert len(out["points"]) == 400 and (np.diff(out["point_labels"]) > 0).all()
    np.testing.assert_array_equal(out["points"], _scene()["points"][out["point_labels"]])
    dropped = [len(RandomDropout(0.2, 0.3)(_scene(50), np.random.default_rng(s))["points"]) < 50 for s in range(300)]
    assert 0.22 < np.mean(dropped) < 0.38


def test_sphere_crop_keeps_the_points_nearest_a_random_point():
    sample = _scene(500)
    pts = sample["points"].copy()
    out = SphereCrop(120)(dict(sample), np.random.default_rng(5))
    centre = pts[np.random.default_rng(5).integers(500), :3]
    d = np.linalg.norm(pts[:, :3] - centre, axis=1)
    assert sorted(out["point_labels"].tolist()) == sorted(np.argsort(d)[:120].tolist())
    assert (np.diff(out["point_labels"]) > 0).all()  # in their order
    small = _scene(100)
    assert SphereCrop(120)(dict(small), np.random.default_rng(0))["points"] is small["points"]
    with pytest.raises(DataFormatError, match="s: SphereCrop would cut boxes"):
        SphereCrop(120)({**_scene(), "gt_boxes": np.zeros((1, 7), np.float32)}, np.random.default_rng(0))


def test_uniform_tilt_turns_each_axis_on_a_share_of_the_scenes_within_its_clip():
    up = {"frame_id": "f", "points": np.array([[0.0, 0.0, 1.0, 0.0]], np.float32)}
    clip = np.pi / 64
    tilts = [GlobalTilt(clip=clip, uniform=True, prob=0.5)(dict(up), np.random.default_rng(s))["points"][0, :3]
             for s in range(400)]
    about_x = np.array([abs(t[1]) > 0 for t in tilts])  # a turn about x moves the up axis in y
    about_y = np.array([abs(t[0]) > 0 for t in tilts])
    assert 0.4 < about_x.mean() < 0.6 and 0.4 < about_y.mean() < 0.6
    assert 0.17 < (about_x & about_y).mean() < 0.33  # two coins, as Pointcept's two RandomRotates
    assert np.arcsin(np.abs([t[1] for t in tilts])).max() <= clip + 1e-6
    with pytest.raises(ConfigError, match="prob applies to the uniform draw"):
        GlobalTilt(prob=0.5)


@pytest.mark.parametrize("r", [[-35.2, -35.2, -4.0, 35.2, 35.2, 2.0], [-75.2, -75.2, -4.0, 75.2, 75.2, 2.0]])
def test_clip_to_range_moves_far_points_into_the_last_cells(r):
    from pc3d.data.transforms import ClipToRange
    from pc3d.voxel import DynamicVoxelizer

    # points beyond every face: float32 (2 - 1 ulp) - (-4) rounds to 6.0, which a bound just below the range's top
    # would carry into the cell past the grid
    pts = np.array([[100, -100, 10, 0.1], [1, 2, 0, 0.2], [r[3], r[4], r[5], 0.3], [-90, 0, -5, 0.4],
                    [0, 0, 2.5, 0.5], [0, 0, -4.5, 0.6]], np.float32)
    out = ClipToRange(r, 0.05)({"points": pts.copy(), "points2": pts.copy()})
    voxels = DynamicVoxelizer(0.05, r).voxelize([out["points"], out["points2"]])
    assert (voxels["point_to_voxel"] >= 0).all()  # every clamped point lies in a cell of the grid
    for cloud in ("points", "points2"):
        got = out[cloud]
        np.testing.assert_allclose(got[:, :3], np.clip(pts[:, :3], r[:3], r[3:]), atol=1e-5)
        np.testing.assert_array_equal(got[1], pts[1])
        np.testing.assert_array_equal(got[:, 3], pts[:, 3])
    inside = {"points": pts[1:2].copy()}
    assert ClipToRange(r, 0.05)(inside)["points"] is inside["points"]  # nothing to move: the same array
