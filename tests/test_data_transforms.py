"""Augmentation invariants, GT sampling, collate and reproducibility of pc3d.data."""
from __future__ import annotations

import numpy as np
import pytest

from pc3d.data import Collate, KittiDataset, SceneFlowDataset, sparse_input
from pc3d.data.create import create_data
from pc3d.data.transforms import (
    CenterShift,
    ColorJitter,
    Compose,
    GlobalRotation,
    GlobalScaling,
    GlobalTilt,
    GlobalTranslation,
    GTSampling,
    ObjectNoise,
    PointJitter,
    PointShuffle,
    RandomDrop,
    RandomFlip,
    RangeCrop,
    SamplePoints,
    TanhFeatures,
    rotate_sample,
)
from pc3d.data.transforms.point_ops import in_range
from pc3d.data.transforms.views import SecondView, is_second_view
from pc3d.errors import ConfigError, DataFormatError
from pc3d.geometry import iou_bev, points_in_boxes, points_in_boxes_count
from pc3d.sim.api import simulate_dataset
from pc3d.voxel import DynamicVoxelizer, HardVoxelizer

RANGE = [0.0, -40.0, -3.0, 70.4, 40.0, 1.0]


@pytest.fixture(scope="module")
def kitti_root(tmp_path_factory):
    root = simulate_dataset("kitti", tmp_path_factory.mktemp("kitti"), frames=4, seed=0)
    create_data("kitti", root)
    return root


def _scene(rng: np.random.Generator) -> dict:
    """Boxes on a row, each with points strictly inside it, plus background points outside."""
    boxes = np.array([[10 + 6 * k, 3 * (-1) ** k, -1.0, 4.0, 1.8, 1.6, 0.3 * k, 1.0, -0.5] for k in range(5)],
                     np.float32)
    inner = [np.asarray(b[:3]) + (rng.uniform(-0.4, 0.4, (50, 3)) * b[3:6]) @ np.array(
        [[np.cos(b[6]), np.sin(b[6]), 0], [-np.sin(b[6]), np.cos(b[6]), 0], [0, 0, 1]]) for b in boxes]
    background = rng.uniform([0, -30, -3], [60, -20, 1], (300, 3))
    xyz = np.concatenate(inner + [background]).astype(np.float32)
    points = np.concatenate([xyz, rng.random((len(xyz), 1), np.float32)], 1)
    return {"frame_id": "scene", "points": points, "gt_boxes": boxes, "gt_labels": np.ones(len(boxes), np.int64)}


def test_in_range_is_the_half_open_box_point_by_point():
    """Lower bound in, upper bound out, NaN out, columns after z ignored; against a per-point check."""
    rng = np.random.default_rng(3)
    r = np.asarray(RANGE, np.float32)
    xyz = rng.uniform(r[:3] - 2, r[3:] + 2, (400, 3)).astype(np.float32)
    middle = (r[:3] + r[3:]) / 2
    xyz[:13] = middle
    for axis in range(3):
        xyz[axis, axis] = r[axis]  # on a lower face: inside
        xyz[3 + axis, axis] = r[3 + axis]  # on an upper face: outside
        xyz[6 + axis, axis] = np.nan
    points = np.concatenate([xyz, np.full((len(xyz), 2), np.nan, np.float32)], 1)  # NaN features do not matter
    expected = [all(r[a] <= p[a] < r[3 + a] for a in range(3)) for p in xyz]
    np.testing.assert_array_equal(in_range(points, r), expected)
    assert in_range(points, r)[:3].all() and not in_range(points, r)[3:9].any() and in_range(points, r)[9:13].all()


@pytest.mark.parametrize("transform", [GlobalRotation(np.pi), GlobalScaling([0.8, 1.2]), GlobalTranslation(2.0),
                                       RandomFlip(["x", "y"], prob=1.0), ObjectNoise(num_try=50)])
def test_boxes_keep_their_points(transform):
    rng = np.random.default_rng(0)
    for trial in range(5):
        sample = _scene(rng)
        before = points_in_boxes(sample["points"], sample["gt_boxes"])
        out = transform(sample, np.random.default_rng(trial))
        np.testing.assert_array_equal(points_in_boxes(out["points"], out["gt_boxes"]), before)
        assert (out["gt_boxes"][:, 6] >= -np.pi).all() and (out["gt_boxes"][:, 6] < np.pi).all()
        iou = np.asarray(iou_bev(out["gt_boxes"], out["gt_boxes"]))
        assert (iou[~np.eye(len(iou), dtype=bool)] == 0).all()


def _turn(a: float) -> np.ndarray:
    return np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])


def test_rotation_turns_velocity_and_flip_mirrors_heading():
    sample = _scene(np.random.default_rng(1))
    boxes = sample["gt_boxes"].astype(np.float64)
    out = GlobalRotation([0.5, 0.5])(dict(sample), np.random.default_rng(0))  # exactly 0.5 rad
    np.testing.assert_allclose(out["gt_boxes"][:, 7:9], boxes[:, 7:9] @ _turn(0.5).T, atol=1e-5)
    np.testing.assert_allclose(out["gt_boxes"][:, :2], boxes[:, :2] @ _turn(0.5).T, atol=1e-4)
    heading = (boxes[:, 6] + 0.5 + np.pi) % (2 * np.pi) - np.pi
    np.testing.assert_allclose(out["gt_boxes"][:, 6], heading, atol=1e-5)
    np.testing.assert_allclose(out["points"][:, :2], sample["points"][:, :2] @ _turn(0.5).T, atol=1e-4)
    flipped = RandomFlip(["x"], prob=1.0)(dict(sample), np.random.default_rng(0))
    np.testing.assert_allclose(flipped["gt_boxes"][:, 6], -sample["gt_boxes"][:, 6], atol=1e-6)
    np.testing.assert_allclose(flipped["gt_boxes"][:, 8], -sample["gt_boxes"][:, 8])


def test_global_transforms_and_object_noise_move_what_they_draw():
    """Points and boxes keeping their points (above) also holds for a transform that does nothing: here each
    one is seen to move the scene by one drawn motion."""
    sample = _scene(np.random.default_rng(4))
    xyz, boxes = sample["points"][:, :3].astype(np.float64), sample["gt_boxes"].astype(np.float64)
    scaled = GlobalScaling([0.8, 1.2])(dict(sample), np.random.default_rng(0))
    factor = float(np.median(scaled["points"][:, :3] / xyz))
    assert 0.8 <= factor <= 1.2 and abs(factor - 1) > 1e-3
    np.testing.assert_allclose(scaled["points"][:, :3], xyz * factor, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scaled["gt_boxes"][:, :6], boxes[:, :6] * factor, rtol=1e-5, atol=1e-5)
    shifted = GlobalTranslation(2.0)(dict(sample), np.random.default_rng(0))
    offset = shifted["points"][0, :3] - xyz[0]
    assert np.abs(offset).max() > 1e-3
    np.testing.assert_allclose(shifted["points"][:, :3], xyz + offset, atol=1e-4)
    np.testing.assert_allclose(shifted["gt_boxes"][:, :3], boxes[:, :3] + offset, atol=1e-4)
    np.testing.assert_allclose(shifted["gt_boxes"][:, 3:], boxes[:, 3:], atol=1e-6)
    inside = points_in_boxes(sample["points"], sample["gt_boxes"]) >= 0  # the box index of each point, or -1
    noisy = ObjectNoise(num_try=50)(dict(sample), np.random.default_rng(0))
    moved = np.abs(noisy["gt_boxes"][:, :3] - boxes[:, :3]).max(1) > 1e-3
    assert moved.sum() >= 2  # boxes moved, and their points with them (test_boxes_keep_their_points)
    assert np.abs(noisy["points"][inside, :3] - xyz[inside]).max() > 1e-3
    np.testing.assert_array_equal(noisy["points"][~inside], sample["points"][~inside])  # the background stays


def test_affine_maps_xyz_in_float64_and_keeps_features():
    from pc3d.data.transforms.global_ops import affine_sample
    sample = _scene(np.random.default_rng(2))
    m = np.array([[0.6, -0.8, 0.0], [0.8, 0.6, 0.0], [0.0, 0.0, 1.0]]) * 1.03
    t = np.array([1.5, -2.0, 0.25])
    points = sample["points"].copy()
    out = affine_sample(dict(sample), m, t)["points"]
    np.testing.assert_array_equal(out[:, :3], (points[:, :3].astype(np.float64) @ m.T + t).astype(np.float32))
    np.testing.assert_array_equal(out[:, 3:], points[:, 3:])
    assert out.dtype == np.float32 and out is not sample["points"]
    np.testing.assert_array_equal(sample["points"], points)  # the input cloud is not written


def test_gt_sampling_never_overlaps(kitti_root):
    """Nor the objects of the classes not trained on (other_boxes: the simulated world's vans, trucks, trams)."""
    ds = KittiDataset(kitti_root, "train", fov_only=False)
    sampler = GTSampling(kitti_root / "kitti_gt_database_train.json", ds.class_names,
                         {"Car": 40, "Pedestrian": 20, "Cyclist": 20}, min_points=5)
    others = 0
    for i in range(len(ds)):
        raw = ds.load(i)
        n_before, other = len(raw["gt_boxes"]), raw["other_boxes"].copy()
        others += len(other)
        out = sampler(raw, np.random.default_rng(i))
        boxes = out["gt_boxes"]
        assert len(boxes) > n_before and len(out["gt_labels"]) == len(boxes)
        iou = np.asarray(iou_bev(boxes, boxes))
        new = np.arange(len(boxes)) >= n_before
        pairs = (new[:, None] | new[None, :]) & ~np.eye(len(boxes), dtype=bool)
        assert (iou[pairs] == 0).all()
        assert (points_in_boxes_count(out["points"], boxes[new]) >= 5).all()
        if len(other):
            assert (np.asarray(iou_bev(boxes[new], other)) == 0).all()
    assert others > 0


def test_gt_sampling_keeps_clear_of_the_objects_it_does_not_train_on(kitti_root):
    """A van (other_boxes) where a database car stood: the same draws paste cars through it when it is not known."""
    sampler = GTSampling(kitti_root / "kitti_gt_database_train.json", ["Car", "Pedestrian", "Cyclist"], {"Car": 20},
                         min_points=5)
    db, rng = sampler.db, np.random.default_rng(0)
    ground = np.zeros((500, db.points.shape[1]), np.float32)
    ground[:, :2] = rng.uniform([0, -30], [60, 30], (500, 2))
    through = 0
    for trial in range(20):
        van = db.box[rng.choice(np.flatnonzero(db.name == "Car")), :7][None].copy()
        scene = {"frame_id": "x", "points": ground.copy(), "gt_boxes": np.zeros((0, 7), np.float32),
                 "gt_labels": np.zeros(0, np.int64)}
        known = sampler({**scene, "other_boxes": van}, np.random.default_rng(trial))
        assert (np.asarray(iou_bev(known["gt_boxes"], van)) == 0).all()
        unknown = sampler(scene, np.random.default_rng(trial))
        through += bool((np.asarray(iou_bev(unknown["gt_boxes"], van)) > 0).any())
    assert through > 0


def test_other_boxes_move_with_the_scene(kitti_root):
    """Flips, turns and scaling move other_boxes as they move the points: each keeps its points."""
    augment = [RandomFlip(["x", "y"], 1.0), GlobalRotation(np.pi), GlobalScaling([0.9, 1.1])]
    ds = KittiDataset(kitti_root, "train", fov_only=False, augmentations=augment, seed=0)
    for i in range(len(ds)):
        raw, out = ds.load(i), ds[i]
        assert len(raw["other_boxes"]) and not np.allclose(out["other_boxes"][:, :3], raw["other_boxes"][:, :3])
        np.testing.assert_array_equal(points_in_boxes_count(out["points"], out["other_boxes"]),
                                      points_in_boxes_count(raw["points"], raw["other_boxes"]))


def test_flow_moves_with_points(tmp_path):
    root = simulate_dataset("sceneflow_ft3d", tmp_path, frames=1, seed=4)
    augment = [GlobalRotation(np.pi), GlobalScaling([0.8, 1.2]), GlobalTranslation(1.0), RandomFlip(["x", "y"], 1.0)]
    ds = SceneFlowDataset(root, "flyingthings3d", "train", num_points=None, augmentations=augment, seed=0)
    raw, out = ds.load(0), ds[0]
    assert not np.allclose(out["points"], raw["points"])
    np.testing.assert_allclose(out["points2"] - out["points"], out["flow"], atol=2e-4)
    # a similarity transform: every flow vector's length scales by the same factor
    ratio = np.linalg.norm(out["flow"], axis=1) / np.linalg.norm(raw["flow"], axis=1)
    moving = np.linalg.norm(raw["flow"], axis=1) > 0.05
    np.testing.assert_allclose(ratio[moving], np.median(ratio[moving]), rtol=1e-3)


def test_center_shift_centres_xy_and_grounds_z():
    rng = np.random.default_rng(1)
    points = np.c_[rng.uniform([2, 5, 0.3], [9, 8, 3.0], (500, 3)), rng.random((500, 3))].astype(np.float32)
    boxes = np.array([[5.0, 6.0, 1.0, 1, 1, 1, 0.3]], np.float32)
    out = CenterShift()({"points": points.copy(), "gt_boxes": boxes.copy()})
    xyz = out["points"][:, :3]
    np.testing.assert_allclose((xyz.min(0)[:2] + xyz.max(0)[:2]) / 2, 0, atol=1e-5)
    assert abs(xyz[:, 2].min()) < 1e-6
    shift = xyz[0] - points[0, :3]
    np.testing.assert_allclose(out["gt_boxes"][0, :3], boxes[0, :3] + shift, atol=1e-5)
    np.testing.assert_array_equal(out["points"][:, 3:], points[:, 3:])
    flat = CenterShift(apply_z=False)({"points": points.copy()})
    np.testing.assert_allclose(flat["points"][:, 2], points[:, 2])


def test_point_wise_keys_stay_aligned():
    rng = np.random.default_rng(0)
    n = 1000
    points = np.concatenate([rng.uniform(-5, 80, (n, 3)), rng.random((n, 3))], 1).astype(np.float32)
    sample = {"points": points, "point_labels": np.arange(n), "instance_ids": np.arange(n) * 2}
    pipe = Compose([PointShuffle(), RandomDrop(0.5), RangeCrop(RANGE), PointJitter(0.01, 0.02), ColorJitter()])
    out = pipe(dict(sample), rng)
    assert 0 < len(out["points"]) < n
    idx = out["point_labels"]
    np.testing.assert_array_equal(out["instance_ids"], idx * 2)
    assert np.abs(out["points"][:, :3] - points[idx, :3]).max() <= 0.02 + 1e-6
    assert out["points"][:, 3:].min() >= 0 and out["points"][:, 3:].max() <= 1


def _shift_x(sample: dict, rng: np.random.Generator) -> dict:
    points = sample["points"].copy()
    points[:, 0] += 100
    return {**sample, "points": points}


@pytest.mark.parametrize("op", [PointShuffle(), RandomDrop(0.5), RangeCrop(RANGE), SamplePoints(300),
                                SamplePoints(1500)], ids=["shuffle", "drop", "crop", "sample", "repeat"])
def test_a_second_view_takes_the_rows_of_its_points(op):
    """SecondView's points2 is the points row by row (here x + 100); a point op after it gives points2 the rows it
    gives points, the current scan of a multi-scan sample first. A pair of clouds that is no second view (scene
    flow) is still chosen cloud by cloud."""
    rng = np.random.default_rng(0)
    n, current = 1000, 400
    points = np.concatenate([rng.uniform(-5, 80, (n, 3)), rng.random((n, 1))], 1).astype(np.float32)
    sample = {"frame_id": "f", "points": points, "point_labels": np.arange(n), "num_current_points": current,
              "point_frame": (np.arange(n) >= current).astype(np.int64), "metadata": {}}
    out = op(SecondView([_shift_x])(sample, rng), rng)
    assert is_second_view(out) and 0 < len(out["points"]) and len(out["points2"]) == len(out["points"])
    np.testing.assert_array_equal(out["points"], points[out["point_labels"]])
    np.testing.assert_array_equal(out["points2"], _shift_x(out, rng)["points"])  # row i is still row i
    first = out["num_current_points"]
    assert (out["point_frame"][:first] == 0).all() and (out["point_frame"][first:] > 0).all()
    if not isinstance(op, RangeCrop):
        pair = op({"points": points, "points2": points.copy()}, rng)  # two clouds, each its own rows
        assert not np.array_equal(pair["points"], pair["points2"])


def test_reproducible_under_seed_and_collate(kitti_root):
    database = str(kitti_root / "kitti_gt_database_train.json")
    augment = [{"_target_": "pc3d.data.transforms.GTSampling", "database": database,
                "class_names": ["Car", "Pedestrian", "Cyclist"], "sample_groups": {"Car": 20, "Pedestrian": 10}},
               {"_target_": "pc3d.data.transforms.RandomFlip"}, {"_target_": "pc3d.data.transforms.GlobalRotation"},
               {"_target_": "pc3d.data.transforms.GlobalScaling"}]
    voxelizer = HardVoxelizer([0.05, 0.05, 0.1], RANGE, 5, 16000)
    make = lambda seed: KittiDataset(kitti_root, "train", augmentations=augment,  # noqa: E731
                                     transforms=[RangeCrop(RANGE), PointShuffle()], voxelizer=voxelizer, seed=seed)
    a, b = make(7), make(7)
    b[1]  # another order of access changes nothing
    for i in range(len(a)):
        x, y = a[i], b[i]
        np.testing.assert_array_equal(x["points"], y["points"])
        np.testing.assert_array_equal(x["gt_boxes"], y["gt_boxes"])
    a.set_epoch(1)
    assert not np.array_equal(a[0]["points"], b[0]["points"])
    assert not np.array_equal(make(8)[0]["points"], b[0]["points"])
    samples = [b[0], b[1]]
    batch = b.collate_fn(samples)
    m = [len(s["gt_boxes"]) for s in samples]
    assert batch["gt_boxes"].shape == (2, max(m), 8)
    for k, s in enumerate(samples):
        np.testing.assert_array_equal(batch["gt_boxes"][k, :m[k], :7].numpy(), s["gt_boxes"])
        np.testing.assert_array_equal(batch["gt_boxes"][k, :m[k], 7].numpy(), s["gt_labels"])
        assert (batch["gt_boxes"][k, m[k]:] == 0).all()
    offsets = batch["point_offsets"].numpy()
    assert offsets.tolist() == [0, len(samples[0]["points"]), len(samples[0]["points"]) + len(samples[1]["points"])]
    assert set(batch["voxel_coords"][:, 0].tolist()) == {0, 1}
    assert batch["voxels"].shape[1:] == (5, 4) and batch["spatial_shape"] == (40, 1600, 1408)
    st = sparse_input(batch)
    assert st.batch_size == 2 and st.feats.shape == (len(batch["voxel_coords"]), 4)


def test_dynamic_collate_maps_every_point():
    rng = np.random.default_rng(0)
    samples = [{"frame_id": str(k), "points": rng.uniform(-1, 11, (500, 6)).astype(np.float32),
                "point_labels": rng.integers(-1, 20, 500)} for k in range(3)]
    batch = Collate(DynamicVoxelizer(0.5, [0, 0, 0, 10, 10, 10]))(samples)
    p2v = batch["point_to_voxel"].numpy()
    inside = ((batch["points"][:, :3] >= 0) & (batch["points"][:, :3] < 10)).all(1).numpy()
    assert ((p2v >= 0) == inside).all() and len(batch["point_labels"]) == 1500
    assert (batch["voxel_coords"][p2v[inside], 0].numpy() == batch["point_batch"].numpy()[inside]).all()
    assert sparse_input(batch).feats.shape[1] == 6


def test_tanh_features_squash_the_named_columns_of_every_cloud():
    points = np.array([[1.0, -2.0, 3.0, 0.0, 4000.0, 0.5],
                       [5.0, 6.0, -7.0, -0.5, 0.25, 2.0]], np.float32)
    sample = {"points": points, "points2": points[::-1].copy(), "frame_id": "f"}
    out = TanhFeatures([3, 4])(sample, np.random.default_rng(0))
    expected = points.copy()
    expected[:, 3] = [0.0, -0.46211716]  # tanh(0), tanh(-0.5)
    expected[:, 4] = [1.0, 0.24491866]   # tanh(4000), tanh(0.25)
    np.testing.assert_allclose(out["points"], expected, rtol=1e-6)
    np.testing.assert_allclose(out["points2"], expected[::-1], rtol=1e-6)
    assert out["points"].dtype == np.float32
    assert sample["points"][0, 4] == 4000.0  # the input sample is left as it was
    with pytest.raises(DataFormatError, match="f: TanhFeatures squashes column 6 but points has 6 columns"):
        TanhFeatures([6])(sample, np.random.default_rng(0))
    for bad in ([2], [], [3, 3]):
        with pytest.raises(ConfigError, match="distinct feature columns"):
            TanhFeatures(bad)


def test_global_rotation_with_a_probability_turns_that_share_of_the_scenes():
    sample = {"frame_id": "f", "points": np.array([[1.0, 0.0, 0.0, 0.5]], np.float32)}
    turned = [not np.allclose(GlobalRotation([0.5, 0.5], prob=0.5)(dict(sample), np.random.default_rng(s))["points"],
                              sample["points"]) for s in range(400)]
    assert 0.42 < np.mean(turned) < 0.58
    rng, ref = np.random.default_rng(3), np.random.default_rng(3)  # prob 1: the stream of the option-less transform
    np.testing.assert_array_equal(GlobalRotation(np.pi)(dict(sample), rng)["points"],
                                  rotate_sample(dict(sample), ref.uniform(-np.pi, np.pi))["points"])
    with pytest.raises(ConfigError, match="prob must be in"):
        GlobalRotation(np.pi, prob=1.5)


def test_global_tilt_turns_points_and_flow_about_x_and_y_within_its_clip():
    points = np.array([[0.0, 0.0, 1.0, 0.3], [1.0, 2.0, 0.0, 0.7]], np.float32)
    sample = {"frame_id": "f", "points": points.copy(), "flow": points[:, :3].copy()}
    out = GlobalTilt(sigma=1.0, clip=0.1)(dict(sample), np.random.default_rng(0))
    z_axis = out["points"][0, :3]  # the unit z point: where the tilt sends the up axis
    assert abs(np.linalg.norm(z_axis) - 1) < 1e-6 and 0 < np.arccos(z_axis[2]) <= np.hypot(0.1, 0.1) + 1e-6
    np.testing.assert_allclose(np.linalg.norm(out["points"][:, :3], axis=1), np.linalg.norm(points[:, :3], axis=1),
                               rtol=1e-6)  # a rotation: lengths kept
    np.testing.assert_allclose(out["flow"], out["points"][:, :3], atol=1e-6)  # vectors turn as the points
    np.testing.assert_array_equal(out["points"][:, 3], points[:, 3])  # features stay
    # one angle by hand: rng draws (ax, ay); about x by ax turns (0, 0, 1) to (0, -sin ax, cos ax), then about y
    ax, ay = np.clip(np.random.default_rng(0).normal(0.0, 1.0, 2), -0.1, 0.1)
    np.testing.assert_allclose(z_axis, [np.sin(ay) * np.cos(ax), -np.sin(ax), np.cos(ay) * np.cos(ax)], atol=1e-6)
    with pytest.raises(DataFormatError, match="f: GlobalTilt would tilt the boxes"):
        GlobalTilt()({**sample, "gt_boxes": np.zeros((1, 7), np.float32)}, np.random.default_rng(0))


def test_range_crop_keeps_boxes_by_their_centre_in_x_and_y():
    # y is checked against y_max (10), not x_max (70); [min, max) in x and y, z not checked
    sample = {"points": np.zeros((1, 4), np.float32),
              "gt_boxes": np.array([[5, 9, 0, 1, 1, 1, 0], [5, 20, 0, 1, 1, 1, 0], [5, -10, 0, 1, 1, 1, 0],
                                    [70, 0, 0, 1, 1, 1, 0], [5, 0, 5, 1, 1, 1, 0]], np.float32),
              "gt_labels": np.array([1, 2, 3, 4, 5])}
    out = RangeCrop([0, -10, -3, 70, 10, 1])(sample)
    assert out["gt_labels"].tolist() == [1, 3, 5]


def test_sample_points_draws_a_subset_without_repeats():
    # a cloud of n >= num_points gives distinct rows; a smaller one is repeated to num_points
    rng = np.random.default_rng(0)
    idx = SamplePoints(64).indices(64, rng)
    assert sorted(idx.tolist()) == list(range(64))
    idx = SamplePoints(8).indices(10, rng)
    assert len(set(idx.tolist())) == 8
    small = SamplePoints(8).indices(5, rng)
    assert sorted(set(small.tolist())) == list(range(5)) and len(small) == 8


def test_color_jitter_clips_colours_to_the_unit_range():
    # a brightness shift of up to +-2 on colours 0 and 1 leaves them in [0, 1]; xyz untouched
    pts = np.array([[0, 0, 0, 0.0, 0.5, 1.0], [1, 1, 1, 1.0, 0.0, 0.5]], np.float32)
    for seed in range(5):
        out = ColorJitter(brightness=2.0, std=0.0, prob=1.0)({"points": pts.copy()}, np.random.default_rng(seed))
        colours = out["points"][:, 3:]
        assert colours.min() >= 0.0 and colours.max() <= 1.0
        assert np.isin(colours, [0.0, 1.0]).any()  # something was clipped
        assert np.array_equal(out["points"][:, :3], pts[:, :3])
