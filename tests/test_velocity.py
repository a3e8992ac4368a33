"""Box velocities end to end: nuScenes' AVE (hand-computed cases), CenterHead's velocity branch (targets decode
back to the boxes' velocities, unknown velocities add no loss), post-processing, writers and the GT database keep
the two columns, GT sampling pastes them (NaN when the database has none), the Waymo hook scores them."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pc3d.data.gt_database import GTDatabase, write_database
from pc3d.data.transforms import GTSampling
from pc3d.errors import ConfigError, DataFormatError
from pc3d.eval.velocity import running_mean, velocity_error
from pc3d.models.heads.center_head import CenterHead
from pc3d.models.postprocess import PostProcessor

CLASSES = ["Car", "Pedestrian", "Cyclist"]
VOXEL, RANGE = [0.4, 0.4, 4.0], [0.0, -12.8, -3.0, 25.6, 12.8, 1.0]


def car(x, y, vx, vy):
    return [x, y, 0.0, 4.0, 2.0, 1.5, 0.0, vx, vy]


def frame(boxes, scores=None, names=None):
    boxes = np.asarray(boxes, np.float64).reshape(-1, 9)
    out = {"boxes": boxes, "types": np.asarray(names or ["car"] * len(boxes))}
    return out | ({"scores": np.asarray(scores, np.float64)} if scores is not None else
                  {"num_points": np.full(len(boxes), 10)})


def test_running_mean_skips_nan():
    np.testing.assert_allclose(running_mean(np.array([np.nan, 1.0, 3.0, np.nan, 5.0])), [0, 1, 2, 2, 3])
    np.testing.assert_array_equal(running_mean(np.array([np.nan, np.nan])), [1, 1])


def test_ave_of_two_matches_by_hand():
    """Errors 1 (score 0.9) and 3 (score 0.8) on 2 ground truths: recall 0.5 then 1. Resampled at recall i / 100:
    i <= 50 reads score 0.9, running mean 1 (40 bins from i = 11); i = 51..100 read a score between the two, a
    running mean 2 i / 100 by interpolation; AVE = (40 + sum_i 2 i / 100) / 90 = (40 + 75.5) / 90."""
    gt = [frame([car(0, 0, 5, 0), car(10, 0, 0, 0)])]
    dt = [frame([car(0.5, 0, 4, 0), car(10, 1, 0, 3)], scores=[0.9, 0.8])]
    r = velocity_error(gt, dt, ["car"])
    assert r["car"]["AVE"] == pytest.approx(115.5 / 90) and r["car"]["num_tp"] == 2 == r["car"]["num_gt"]
    assert r["mean"]["AVE"] == pytest.approx(115.5 / 90)


def test_ave_matching_rules():
    gt = [frame([car(0, 0, 2, 0)]), frame([car(0, 0, 0, 0)])]
    # the best score takes the ground truth; the second one in its frame, 0.1 m away, is a FP; 2 m is too far
    dt = [frame([car(0.0, 0, 2, 0), car(0.1, 0, 9, 9)], scores=[0.9, 0.95]), frame([car(2.0, 0, 0, 0)], scores=[0.5])]
    r = velocity_error(gt, dt, ["car"])
    assert r["car"]["num_tp"] == 1 and r["car"]["AVE"] == pytest.approx(np.hypot(7, 9))  # recall 0.5 throughout
    assert velocity_error(gt, [frame([], []), frame([], [])], ["car"])["car"]["AVE"] == 1.0  # no TP: the devkit's 1
    assert np.isnan(velocity_error(gt, dt, ["pedestrian"])["pedestrian"]["AVE"])  # no ground truth
    # an unknown ground-truth velocity adds no error; ground truth without points is not scored
    gt_nan = [frame([car(0, 0, np.nan, np.nan), car(10, 0, 1, 0)])]
    r = velocity_error(gt_nan, [frame([car(0, 0, 5, 5), car(10, 0, 1, 0)], scores=[0.9, 0.8])], ["car"])
    assert r["car"]["AVE"] == pytest.approx(0.0) and r["car"]["num_tp"] == 2
    gt_nan[0]["num_points"][1] = 0
    assert velocity_error(gt_nan, [frame([car(10, 0, 1, 0)], scores=[0.9])], ["car"])["car"]["num_gt"] == 1
    with pytest.raises(DataFormatError, match="vx, vy"):
        velocity_error([{"boxes": np.zeros((1, 7)), "types": ["car"], "num_points": [1]}], [frame([], [])], ["car"])


def velocity_batch(velocity=((3.0, -1.0), (0.0, 0.0), (1.5, 0.5))) -> dict:
    boxes = np.array([[8.0, 2.0, -0.9, 4.2, 1.7, 1.5, 0.3, *velocity[0], 1],
                      [15.3, -5.1, -0.8, 3.8, 1.6, 1.6, -2.8, *velocity[1], 1],
                      [5.2, -3.3, -0.85, 0.7, 0.6, 1.75, 1.2, *velocity[2], 2]], np.float32)
    return {"gt_boxes": torch.from_numpy(boxes)[None], "num_gt": torch.tensor([3]), "frame_id": ["f0"],
            "batch_size": 1}


def velocity_head(**kwargs) -> CenterHead:
    return CenterHead(16, CLASSES, [["Car"], ["Pedestrian", "Cyclist"]], VOXEL, RANGE, out_stride=4,
                      shared_channels=8, head_channels=8, score_threshold=0.5, with_velocity=True, **kwargs)


def test_center_head_velocity_targets_decode_to_the_boxes():
    head, batch = velocity_head(), velocity_batch()
    assert head.code_weights.tolist() == pytest.approx([1] * 8 + [0.2, 0.2])
    preds = []
    for tgt in head.targets(batch, (16, 16), "cpu"):
        assert tgt["targets"].shape[-1] == 10
        maps = torch.zeros(1, 10, 16 * 16)
        maps[0, :, tgt["index"][0][tgt["mask"][0]]] = tgt["targets"][0][tgt["mask"][0]].T
        maps = maps.view(1, 10, 16, 16)
        preds.append({"hm": torch.logit(tgt["heatmap"].clamp(1e-4, 1 - 1e-4)), "center": maps[:, 0:2],
                      "center_z": maps[:, 2:3], "dim": maps[:, 3:6], "rot": maps[:, 6:8], "vel": maps[:, 8:10]})
    pred = PostProcessor(score_threshold=0.9, nms="circle", min_radius=1.0)(head.predict(preds), ["f0"])[0]
    ref = batch["gt_boxes"][0].numpy()
    assert pred["boxes"].shape == (3, 9)
    order = np.argsort(pred["boxes"][:, 0])
    np.testing.assert_allclose(pred["boxes"][order], ref[np.argsort(ref[:, 0]), :9], atol=1e-4)


def test_unknown_velocities_add_no_loss():
    head = velocity_head()
    torch.manual_seed(0)
    x = torch.randn(1, 16, 16, 16)
    out = head(x)
    known = head.loss(out, velocity_batch())["loss_reg"]
    # NaN velocities: finite loss, lower by the velocity terms; a velocity of 0 is a different target
    unknown = head.loss(out, velocity_batch(((np.nan, np.nan),) * 3))["loss_reg"]
    zero = head.loss(out, velocity_batch(((0.0, 0.0),) * 3))["loss_reg"]
    assert torch.isfinite(unknown) and unknown < known and unknown < zero
    x.requires_grad_(True)
    head.loss(head(x), velocity_batch(((np.nan, np.nan),) * 3))["loss"].backward()
    assert torch.isfinite(x.grad).all()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for h in head.heads for p in h.branches["vel"].parameters())


def test_velocity_head_configuration_errors():
    with pytest.raises(ConfigError, match="10"):
        velocity_head(code_weights=[1.0] * 8)
    batch = velocity_batch()
    no_velocity = {**batch, "gt_boxes": batch["gt_boxes"][..., [0, 1, 2, 3, 4, 5, 6, 9]]}
    with pytest.raises(ConfigError, match="no velocity"):
        velocity_head().loss(velocity_head()(torch.zeros(1, 16, 16, 16)), no_velocity)


def test_postprocess_and_kitti_writer_with_velocities():
    from pc3d.eval.kitti_io import to_kitti_anno
    from pc3d.sim.ground_truth import kitti_calib

    boxes = np.array([car(10, 0, 3, 1), car(10.1, 0, 0, 0), car(20, 2, -1, 0)], np.float32)
    out = PostProcessor(nms="rotated", iou_threshold=0.5).frame(boxes, np.array([0.9, 0.8, 0.7]), np.ones(3))
    np.testing.assert_array_equal(out["boxes"], boxes[[0, 2]])  # NMS on the boxes, velocities kept
    anno = to_kitti_anno(out, kitti_calib(), None, CLASSES)
    assert len(anno["name"]) == 2 and np.allclose(anno["dimensions"][0], [4.0, 1.5, 2.0])


def test_gt_database_keeps_velocities_and_sampling_pastes_them(tmp_path):
    points = np.array([[0.5, 0.2, 0.1, 0.3], [0.2, -0.3, 0.0, 0.1], [10.2, 0.1, 0.2, 0.5], [10.0, 0.3, 0.0, 0.2]],
                      np.float32)
    columns = ["x", "y", "z", "intensity"]
    frames = [{"frame_id": "a", "points": points, "names": ["Car", "Car"], "difficulty": [0, 0],
               "gt_boxes": np.array([car(0, 0, 4, 1), car(10, 0, -2, 0)], np.float32)}]
    header = write_database(tmp_path, "v", "train", columns, frames)
    db = GTDatabase.load(header)
    np.testing.assert_array_equal(db.box[:, 7:], [[4, 1], [-2, 0]])
    seven = [f | {"gt_boxes": f["gt_boxes"][:, :7]} for f in frames]
    assert GTDatabase.load(write_database(tmp_path, "s", "train", columns, seven)).box.shape == (2, 7)

    scene = {"frame_id": "b", "points": np.array([[30.0, 5.0, 0.0, 0.1]], np.float32),
             "gt_boxes": np.zeros((0, 9), np.float32), "gt_labels": np.zeros(0, np.int64)}
    for name, want in (("v", [[4, 1], [-2, 0]]), ("s", [[np.nan, np.nan]] * 2)):
        sampler = GTSampling(tmp_path / f"{name}_gt_database_train.json", CLASSES, {"Car": 2}, min_points=1)
        out = sampler({k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in scene.items()},
                      np.random.default_rng(0))
        order = np.argsort(out["gt_boxes"][:, 0])
        np.testing.assert_array_equal(out["gt_boxes"][order, 7:], want)


@pytest.fixture(scope="module")
def waymo_world(tmp_path_factory):
    from pc3d.sim.api import simulate_dataset

    return simulate_dataset("waymo", tmp_path_factory.mktemp("waymo"), frames=4, seed=2, columns=512,
                            sequence_length=2)


def test_waymo_hook_scores_and_writer_keeps_velocities(waymo_world, tmp_path):
    import pyarrow.parquet as pq

    from pc3d.data import WaymoDataset
    from pc3d.eval.hooks.waymo import WaymoEvaluator

    ds = WaymoDataset(waymo_world, "training")
    annos = [ds.annotations(i)["annos"] for i in range(len(ds))]
    assert np.isfinite(np.concatenate([a["box"][:, 7:] for a in annos])).all()
    moving = np.concatenate([np.hypot(*a["box"][:, 7:].T) for a in annos])
    assert (moving > 1).sum() >= 3  # the world has moving objects
    perfect = [{"boxes": a["box"], "scores": np.ones(len(a["box"])),
                "labels": np.asarray([ds.class_names.index(n) + 1 for n in a["name"]])} for a in annos]
    hook = WaymoEvaluator()
    metrics = hook(ds, perfect)
    assert metrics["Vehicle/AVE"] == pytest.approx(0.0, abs=1e-5) and "Average velocity error" in hook.last_table
    still = [p | {"boxes": np.concatenate([p["boxes"][:, :7], np.zeros((len(p["boxes"]), 2))], 1)} for p in perfect]
    assert metrics["Vehicle/L2_APH"] == pytest.approx(hook(ds, still)["Vehicle/L2_APH"])
    assert hook(ds, still)["Vehicle/AVE"] > 0.5
    assert "Vehicle/AVE" not in hook(ds, [p | {"boxes": p["boxes"][:, :7]} for p in perfect])

    # Waymo's speeds are in world axes: the predictions' parquet holds the ground truth file's speeds again
    segment, timestamp, _ = ds.frames[0]
    yaw = np.arctan2(*ds.vehicle_pose(segment, timestamp)[[1, 0], 0])
    assert abs(yaw) > 0.05  # else world and vehicle axes agree and this test could not tell them apart
    out = ds.write_predictions(perfect, tmp_path)
    read = lambda path: (lambda t: np.stack([t.column(f"[LiDARBoxComponent].speed.{a}").to_numpy()  # noqa: E731
                                             for a in "xy"], 1)[:len(annos[0]["box"])])(pq.read_table(path))
    written, truth = read(out / f"{segment}.parquet"), read(ds.component("lidar_box", segment))
    np.testing.assert_allclose(written, truth, atol=1e-5)  # read with speed.z: the pose is tilted
    assert np.abs(written - annos[0]["box"][:, 7:]).max() > 0.1  # not the vehicle-frame velocities


def test_bev_draws_where_a_moving_box_goes():
    from pc3d.viz.bev import render_bev

    area = (0.0, -10.0, -3.0, 20.0, 10.0, 1.0)
    still, moving = np.array([car(5, 0, 0, 0)], np.float32), np.array([car(5, 0, 8, 0)], np.float32)
    ahead = (slice(200 - 1 - 125, 200 - 1 - 75), slice(99, 102))  # x 7.5 .. 12.5 m on the box's axis, past its front
    drawn = lambda boxes: (render_bev(np.zeros((0, 3)), pred_boxes=boxes, pred_labels=[1], area=area)[ahead]  # noqa: E731
                           != 16).any()  # the background is grey 16
    assert drawn(moving) and not drawn(still) and not drawn(moving[:, :7])


def test_open3d_box_of_a_moving_object_carries_its_arrow():
    pytest.importorskip("open3d")
    from pc3d.viz import Scene
    from pc3d.viz.scene import geometries

    boxes = np.array([car(5, 0, 8, 0), car(15, 0, 0, 0)], np.float32)
    lines = dict(geometries(Scene(np.zeros((1, 4), np.float32), None, boxes, np.ones(2), np.ones(2, np.int64))))
    moving, still = np.asarray(lines["pred_0"].points), np.asarray(lines["pred_1"].points)
    assert len(still) == 10 and len(moving) == 14  # 8 corners, centre, front (+ an arrow's 4 points)
    np.testing.assert_allclose(moving[11], [13, 0, 0])  # the tip: the centre a second later


def test_a_nan_box_still_fails_loudly():
    """Only the velocity columns may be unknown: a NaN centre is a bug upstream and shows as a NaN loss."""
    batch = velocity_batch()
    batch["gt_boxes"][0, 0, 2] = float("nan")
    head = velocity_head()
    assert torch.isnan(head.loss(head(torch.zeros(1, 16, 16, 16)), batch)["loss_reg"])


def test_velocity_branch_depth():
    """One 3x3 conv on the shared features by default (no private ReLU layer to die at parked cars); CenterPoint's
    two on request."""
    assert [type(m).__name__ for m in velocity_head().heads[0].branches["vel"]] == ["Conv2d"]
    deep = velocity_head(velocity_convs=2).heads[0].branches["vel"]
    assert [type(m).__name__ for m in deep] == ["Conv2d", "BatchNorm2d", "ReLU", "Conv2d"]
    assert len(velocity_head().heads[0].branches["rot"]) == 4  # the other branches keep num_head_convs
