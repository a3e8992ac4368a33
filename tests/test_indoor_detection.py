"""The TR3D-style indoor detector and its parts: axis-aligned NMS, the generative neck's site merge, site
centres, nearest-site assignment, the DIoU loss, boxes again from instances, and a scene it learns."""
from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch

import pc3d.sparse as sp
from pc3d.data.batch import Collate
from pc3d.data.indoor_boxes import instance_boxes
from pc3d.data.transforms import BoxesFromInstances, flip_sample, rotate_sample
from pc3d.errors import SparseTensorError
from pc3d.eval.indoor import indoor_map
from pc3d.geometry import nms_axis_aligned
from pc3d.models.backbones3d.generative_resnet import GenerativeSparseResNet
from pc3d.models.contract import check_prediction
from pc3d.models.detectors import SparseIndoorDetector
from pc3d.models.heads.aabb_head import AxisAlignedBoxHead, assign_nearest, site_centres
from pc3d.models.heads.losses import axis_aligned_diou_loss
from pc3d.voxel import DynamicVoxelizer


def box(x, y=0.0, z=0.0, size=1.0):
    return [x, y, z, size, size, size, 0.0]


# ------------------------------------------------------------------------------------------- NMS
def test_nms_axis_aligned_by_hand():
    boxes = np.array([box(0.0), box(0.2), box(3.0), box(0.1)], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.95], np.float32)
    labels = np.array([1, 1, 1, 2])
    # class 1: box 0 keeps, box 1 overlaps it by 0.8 / 1.2 = 0.67 > 0.5 (dropped), box 2 is apart; class 2 alone
    assert nms_axis_aligned(boxes, scores, labels, 0.5).tolist() == [3, 0, 2]
    assert nms_axis_aligned(boxes, scores, labels, 0.7).tolist() == [3, 0, 1, 2]  # 0.67 <= 0.7: kept
    assert nms_axis_aligned(boxes, scores, labels, 0.5, post_max_size=2).tolist() == [3, 0]
    assert nms_axis_aligned(np.zeros((0, 7)), np.zeros(0), np.zeros(0), 0.5).tolist() == []


def test_nms_axis_aligned_equals_greedy_over_the_full_iou_table(rng):
    """The kernel computes IoU only between kept boxes and the ones after them: the same boxes as the greedy
    pass over the full [n, n] table of iou_axis_aligned, for clustered boxes of 3 classes (with ties in score)
    and pre / post caps."""
    from pc3d.geometry import iou_axis_aligned

    centres = rng.uniform(0, 6, (40, 3))[rng.integers(0, 40, 900)] + rng.normal(0, 0.15, (900, 3))
    boxes = np.c_[centres, rng.uniform(0.3, 1.5, (900, 3)), np.zeros(900)]
    scores = np.round(rng.uniform(0, 1, 900), 2)  # ties
    labels = rng.integers(0, 3, 900)
    for threshold, pre, post in ((0.25, None, None), (0.5, 200, 50)):
        want = []
        for label in np.unique(labels):
            idx = np.flatnonzero(labels == label)
            idx = idx[np.lexsort((idx, -scores[idx]))][:pre]
            iou = iou_axis_aligned(boxes[idx], boxes[idx])
            alive = np.ones(len(idx), bool)
            for r in range(len(idx)):
                if alive[r]:
                    alive[r + 1:] &= iou[r, r + 1:] <= threshold
            want.append(idx[alive])
        want = np.concatenate(want)
        want = want[np.lexsort((want, -scores[want]))][:post]
        assert nms_axis_aligned(boxes, scores, labels, threshold, pre, post).tolist() == want.tolist()


# ------------------------------------------------------------------------------------- the neck
def test_add_at_sites_adds_where_sites_are_shared_and_refuses_foreign_ones():
    dst = sp.SparseTensor(torch.zeros(3, 2), torch.tensor([[0, 0, 0, 0], [0, 0, 0, 1], [1, 0, 0, 0]]).int(),
                          (2, 2, 2), 2)
    src = sp.SparseTensor(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[1, 0, 0, 0], [0, 0, 0, 1]]).int(),
                          (2, 2, 2), 2)
    assert sp.add_at_sites(dst, src).feats.tolist() == [[0, 0], [3, 4], [1, 2]]
    foreign = sp.SparseTensor(torch.ones(1, 2), torch.tensor([[0, 1, 1, 1]]).int(), (2, 2, 2), 2)
    with pytest.raises(SparseTensorError, match="not sites"):
        sp.add_at_sites(dst, foreign)


def test_generative_neck_covers_every_child_cell_of_the_coarsest_sites():
    torch.manual_seed(0)
    coords = torch.unique(torch.randint(0, 32, (300, 3)), dim=0)
    x = sp.SparseTensor(torch.randn(len(coords), 4), torch.cat([torch.zeros(len(coords), 1).long(), coords], 1).int(),
                        (32, 32, 32), 1)
    net = GenerativeSparseResNet(4, channels=(8, 8, 8, 8), out_level=1).eval()
    y = net(x)
    assert y.stride == (2, 2, 2) and y.feats.shape[1] == net.out_channels == 8
    # stride-8 cells holding a voxel, each split into its 4^3 stride-2 children
    coarse = np.unique(coords.numpy() // 8, axis=0)
    expected = {tuple(int(v) for v in c * 4 + np.array(o)) for c in coarse for o in np.ndindex(4, 4, 4)}
    assert {tuple(c) for c in y.coords[:, 1:].tolist()} == expected


def test_site_centres_of_nested_grids():
    x = sp.SparseTensor(torch.zeros(2, 1), torch.tensor([[0, 0, 0, 0], [0, 1, 2, 3]]).int(), (4, 4, 4), 1,
                        stride=(4, 4, 4))
    centres = site_centres(x, (0.05, 0.05, 0.1), (-1.0, -2.0, 0.0))
    # cell 0.2 x 0.2 x 0.4 m; (z, y, x) = (1, 2, 3) -> x = -1 + 3.5 * 0.2, y = -2 + 2.5 * 0.2, z = 1.5 * 0.4
    np.testing.assert_allclose(centres.numpy(), [[-0.9, -1.9, 0.2], [-0.3, -1.5, 0.6]], atol=1e-6)


# ------------------------------------------------------------------------------ targets, losses
def test_assign_nearest_takes_the_top_k_sites_and_the_smaller_box_on_a_tie():
    centres = torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [2.0, 0, 0], [3.0, 0, 0], [0.0, 0, 0]])
    site_batch = torch.tensor([0, 0, 0, 0, 1])
    gt = torch.zeros(2, 2, 8)
    gt[0, 0] = torch.tensor([0.4, 0, 0, 2, 2, 2, 0, 1])  # big box near sites 0, 1
    gt[0, 1] = torch.tensor([1.4, 0, 0, 1, 1, 1, 0, 3])  # small box near sites 1, 2
    target, boxes = assign_nearest(centres, site_batch, gt, torch.tensor([2, 0]), top_k=2)
    assert target.tolist() == [0, 1, 1, -1, -1]  # site 1 is near both: the smaller box wins; sample 1 has none
    assert boxes[:, -1].tolist() == [1, 3]


def test_assign_by_level_and_the_nearest_box_rule():
    # sites 0-3 on level 0 at x = 0, 1, 2, 3; sites 4-5 on level 1 at x = 0.5, 2.5. Box A (class 1 -> level 0) at
    # x = 1.2, box B (class 2 -> level 1) at x = 2.2, top_k 2
    centres = torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [2.0, 0, 0], [3.0, 0, 0], [0.5, 0, 0], [2.5, 0, 0]])
    site_level = torch.tensor([0, 0, 0, 0, 1, 1])
    gt = torch.zeros(1, 2, 8)
    gt[0, 0] = torch.tensor([1.2, 0, 0, 3, 3, 3, 0, 1])
    gt[0, 1] = torch.tensor([2.2, 0, 0, 1, 1, 1, 0, 2])
    args = (centres, torch.zeros(6, dtype=torch.long), gt, torch.tensor([2]), 2, site_level, [0, 1])
    target, _ = assign_nearest(*args, rule="smallest")
    assert target.tolist() == [-1, 0, 0, -1, 1, 1]  # A: sites 1, 2 of level 0; B: both level-1 sites
    # TR3D's rule: site 2 (x = 2) lies nearer B's centre (0.2) than A's (0.8), and B cannot take it (level 1): no
    # box; site 4 (x = 0.5) is B's by level but A's centre is nearer: no box either
    target, _ = assign_nearest(*args, rule="nearest")
    assert target.tolist() == [-1, 0, -1, -1, -1, 1]
    # boxes with fewer sites on their level than top_k take what there is, never a site of the other level (both
    # level-1 sites go to the smaller box B)
    target, _ = assign_nearest(centres, torch.zeros(6, dtype=torch.long), gt, torch.tensor([2]), 4, site_level, [1, 1])
    assert target.tolist() == [-1, -1, -1, -1, 1, 1]


def test_two_out_levels_come_finest_first_at_the_head_width():
    torch.manual_seed(0)
    coords = torch.unique(torch.randint(0, 32, (300, 3)), dim=0)
    x = sp.SparseTensor(torch.randn(len(coords), 4), torch.cat([torch.zeros(len(coords), 1).long(), coords], 1).int(),
                        (32, 32, 32), 1)
    net = GenerativeSparseResNet(4, channels=(8, 8, 12, 16), blocks=[0, 1, 1, 2], out_level=[2, 3],
                                 head_channels=10).eval()
    fine, coarse = net(x)
    assert fine.stride == (4, 4, 4) and coarse.stride == (8, 8, 8) and net.out_channels == 10
    assert fine.feats.shape[1] == coarse.feats.shape[1] == 10
    assert len(net.stem) == 1 and len(net.stages[2]) == 3  # the conv block, then the level's residual blocks
    # the coarse level is the encoder's last; the fine one every child of it (generative), as with one level
    one = GenerativeSparseResNet(4, channels=(8, 8, 12, 16), out_level=2).eval()
    assert {tuple(c) for c in one(x).coords.tolist()} == {tuple(c) for c in fine.coords.tolist()}
    with pytest.raises(ValueError, match="head_channels"):
        GenerativeSparseResNet(4, channels=(8, 8, 12, 16), out_level=[2, 3])


def test_diou_loss_by_hand():
    unit = torch.tensor([[0.0, 0, 0, 1, 1, 1]])
    assert axis_aligned_diou_loss(unit, unit).item() == pytest.approx(0.0)
    shifted = torch.tensor([[0.5, 0, 0, 1, 1, 1]])
    # IoU 0.5 / 1.5; enclosing box 1.5 x 1 x 1: diagonal^2 = 2.25 + 2; centre distance^2 = 0.25
    assert axis_aligned_diou_loss(shifted, unit).item() == pytest.approx(1 - 1 / 3 + 0.25 / 4.25)
    apart = torch.tensor([[3.0, 0, 0, 1, 1, 1]])
    assert axis_aligned_diou_loss(apart, unit).item() == pytest.approx(1 + 9 / (16 + 2))


# ----------------------------------------------------------------------------------- augmentation
def _scene(seed=0):
    """Two cubes of points (instances 1, 2; chair and table) on a floor (instance 3, label 1)."""
    rng = np.random.default_rng(seed)
    chair = rng.uniform([0.5, 0.5, 0.0], [1.0, 1.0, 0.9], (400, 3))
    table = rng.uniform([2.0, 1.0, 0.0], [3.2, 1.8, 0.75], (600, 3))
    floor = np.c_[rng.uniform(0, 4, (800, 2)), np.zeros(800)]
    xyz = np.concatenate([chair, table, floor]).astype(np.float32)
    rgb = rng.uniform(0, 1, (len(xyz), 3)).astype(np.float32)
    labels = np.r_[np.full(400, 4), np.full(600, 6), np.full(800, 1)].astype(np.int64)  # chair, table, floor
    instances = np.r_[np.full(400, 1), np.full(600, 2), np.full(800, 3)].astype(np.int64)
    sample = {"frame_id": f"scene{seed}", "points": np.c_[xyz, rgb], "point_labels": labels, "instance_ids": instances}
    sample["gt_boxes"], sample["gt_labels"] = instance_boxes(sample["points"], labels, instances)
    return sample


def test_boxes_from_instances_follow_the_augmented_points():
    sample = flip_sample(_scene(), "x")
    flipped = sample["gt_boxes"].copy()
    again = BoxesFromInstances()(sample, np.random.default_rng(0))
    np.testing.assert_allclose(again["gt_boxes"], flipped, atol=1e-6)  # a mirror keeps axis-aligned boxes exact
    assert again["gt_labels"].tolist() == [3, 5]  # chair, table of the 18 detection classes
    turned = BoxesFromInstances()(rotate_sample(_scene(), 0.3), np.random.default_rng(0))
    assert (turned["gt_boxes"][:, 3:5] > flipped[:, 3:5]).all()  # a turned object spans more of x and y
    assert (turned["gt_boxes"][:, 6] == 0).all()


# ------------------------------------------------------------------------------------ the detector
GRID = dict(voxel_size=[0.05, 0.05, 0.05], point_cloud_range=[-3.2, -3.2, -0.8, 3.2, 3.2, 2.4])


def _detector():
    return SparseIndoorDetector(
        6, 18, partial(GenerativeSparseResNet, channels=(16, 16, 24, 32, 32), out_level=2),
        partial(AxisAlignedBoxHead, **GRID, score_threshold=0.05))


def _batch(samples):
    return Collate(voxelizer=DynamicVoxelizer(GRID["voxel_size"], GRID["point_cloud_range"]))(samples)


def _two_level_detector():
    return SparseIndoorDetector(
        6, 18, partial(GenerativeSparseResNet, channels=(16, 16, 24, 32, 32), out_level=[2, 3], head_channels=24),
        partial(AxisAlignedBoxHead, **GRID, score_threshold=0.05, top_k=6, rule="nearest",
                label2level=[0, 1, 0, 1, 1, 0, 1, 1, 0, 1, 1, 1, 0, 0, 0, 0, 1, 0]))


@pytest.mark.parametrize("make", [_detector, _two_level_detector])
def test_detector_losses_backpropagate_and_predictions_meet_the_contract(make):
    torch.manual_seed(0)
    model = make()
    batch = _batch([_scene(0), _scene(1)])
    out = model.train()(batch)
    assert set(out) >= {"loss", "loss_cls", "loss_box"} and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert model.head.box.weight.grad.abs().sum() > 0
    predictions = model.eval()(batch)
    assert [p["frame_id"] for p in predictions] == ["scene0", "scene1"]
    for p in predictions:
        check_prediction("detection", p)
        assert (p["boxes"][:, 6] == 0).all()


@pytest.mark.slow
def test_detector_learns_a_scene():
    """Training moves mAP@0.25 on the two objects of a few scenes from ~0 to most of them."""
    torch.manual_seed(0)
    model = _detector()
    samples = [_scene(s) for s in range(4)]
    batch = _batch(samples)
    truths = [{"gt_boxes": s["gt_boxes"], "gt_labels": s["gt_labels"]} for s in samples]
    names = [f"c{i}" for i in range(18)]
    before = indoor_map(model.eval()(batch), truths, names)["mAP_0.25"]
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    model.train()
    for _ in range(60):
        optimizer.zero_grad()
        model(batch)["loss"].backward()
        optimizer.step()
    after = indoor_map(model.eval()(batch), truths, names)
    assert before < 10 and after["mAP_0.25"] > 80, (before, after)


def test_simulated_doors_windows_and_wall_items_have_thickness(tmp_path):
    """They stand off their wall (frames, sills, folds), so their boxes have volume and can be matched at IoU."""
    from pc3d.data import ScanNetDataset
    from pc3d.sim.api import simulate_dataset

    root = simulate_dataset("scannet", tmp_path, frames=2, seed=3)
    names = ScanNetDataset.box_class_names
    thin = {"door", "window", "picture", "curtain", "shower curtain"}
    seen = set()
    for split in ("train", "val"):
        data = ScanNetDataset(root, split=split, boxes=True)
        for i in range(len(data)):
            sample = data.load(i)
            for b, label in zip(sample["gt_boxes"], sample["gt_labels"], strict=True):
                if names[label - 1] in thin:
                    seen.add(names[label - 1])
                    assert b[3:6].min() >= 0.02, (names[label - 1], b)
    assert {"door", "window"} <= seen


def test_inference_output_of_an_indoor_scene_is_json_in_the_scene_frame(tmp_path):
    import json
    from types import SimpleNamespace

    from pc3d.infer.outputs import DetectionOutput
    from pc3d.infer.sources import SourceFrame

    output = DetectionOutput(tmp_path, {"_target_": "pc3d.data.ScanNetDataset"}, SimpleNamespace(kind="file"), 18)
    frame = SourceFrame("scene0000_00", "samples", np.zeros((4, 6), np.float32), tmp_path / "scene0000_00.bin")
    pred = {"frame_id": "scene0000_00", "boxes": np.array([box(1.0)], np.float32),
            "scores": np.array([0.9], np.float32), "labels": np.array([3])}
    scene = output.write(frame, pred)
    written = json.loads((tmp_path / "json" / "scene0000_00.json").read_text())
    assert written["names"] == ["chair"] and written["frame"] == "scene"  # the 18 detection classes, not the 20
    assert scene.view == "overview" and not (tmp_path / "kitti").exists()
