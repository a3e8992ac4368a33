"""Test-time augmentation (pc3d.models.tta): the views' geometry, each view voxelized as its scan would be, the
average over views against a brute-force one, and the symmetry a group of views gives the answer."""
from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch

from pc3d.data import SemanticKittiDataset
from pc3d.errors import ConfigError
from pc3d.models.backbones3d.unet import SparseUNet
from pc3d.models.segmentors import SparseSegmentor
from pc3d.models.semi import MeanTeacherSegmentor
from pc3d.models.toy import ToyPointNet
from pc3d.models.tta import TestTimeAugmented, View, fuse_boxes, view_batch, views
from pc3d.sim.api import simulate_dataset
from pc3d.voxel import DynamicVoxelizer

RANGE = [-19.2, -19.2, -3.2, 19.2, 19.2, 3.2]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("skitti")
    simulate_dataset("semantickitti", root, frames=2, seed=0, columns=512, sequence_length=2)
    return SemanticKittiDataset(root, sequences=[0], training=False, voxelizer=DynamicVoxelizer([0.4, 0.4, 0.4], RANGE))


@pytest.fixture(scope="module")
def segmentor():
    torch.manual_seed(0)
    unet = partial(SparseUNet, channels=(8, 16), enc_depths=(1,), dec_channels=(16,), dec_depths=(1,))
    return SparseSegmentor(4, unet, num_classes=20, ignore_index=0).eval()


def seen(view: View, xy=(1.0, 2.0)) -> tuple[float, float]:
    out = view.apply(torch.tensor([[xy[0], xy[1], 3.0, 0.5]]))
    assert out[0, 2] == 3.0 * view.scale and out[0, 3] == 0.5  # z scales, features stay
    return float(out[0, 0]) / view.scale, float(out[0, 1]) / view.scale


def test_the_presets_are_the_symmetries_they_name():
    assert seen(View(quarters=1)) == (-2.0, 1.0)  # a quarter turn counter-clockwise
    assert seen(View(mirror=True)) == (1.0, -2.0)
    assert seen(View(quarters=1, mirror=True)) == (2.0, 1.0)  # the mirror first, then the turn
    assert {seen(v) for v in views("flips")} == {(1, 2), (-1, 2), (1, -2), (-1, -2)}
    assert {seen(v) for v in views("turns")} == {(1, 2), (-2, 1), (-1, -2), (2, -1)}
    d4 = views("d4")
    assert len(d4) == 8 and {seen(v) for v in d4} == {(a * p, b * q) for a in (1, -1) for b in (1, -1)
                                                      for p, q in ((1, 2), (2, 1))}
    scaled = views("flips", [0.5, 1.0])
    assert len(scaled) == 8 and scaled[0].identity and sum(v.identity for v in scaled) == 1
    assert sorted({v.scale for v in scaled}) == [0.5, 1.0] and len(views("flips", [1, 1.0])) == 4
    assert {seen(v) for v in views("mirror")} == {(1, 2), (1, -2)}
    with pytest.raises(ConfigError, match="unknown views 'mirrors'"):
        views("mirrors")
    for bad in ([], [0.0], ["x"], None):
        with pytest.raises(ConfigError, match="tta_scales"):
            views("flips", bad)


def test_a_view_is_voxelized_as_its_scan_would_be(data):
    """view_batch of a two-scan batch equals collating the two scans already seen in the view."""
    samples = [data[0], data[1]]
    batch = data.collate_fn(samples)
    for view in (View(quarters=1, mirror=True), View(quarters=2, scale=0.9)):
        got = view_batch(batch, view, data.collate_fn.voxelizer)
        turned = [s | {"points": view.apply(torch.from_numpy(s["points"])).numpy()} for s in samples]
        want = data.collate_fn(turned)
        for key in ("points", "voxel_coords", "voxel_num_points", "point_to_voxel", "point_labels"):
            assert torch.equal(got[key], want[key]), key
        assert got["spatial_shape"] == want["spatial_shape"]
        assert not torch.equal(got["voxel_coords"], batch["voxel_coords"])


def test_the_identity_view_alone_is_the_model_itself(data, segmentor):
    batch = data.collate_fn([data[0], data[1]])
    with torch.no_grad():
        plain = segmentor(batch)
        once = TestTimeAugmented(segmentor, data.collate_fn.voxelizer, [View()]).eval()(batch)
    for a, b in zip(plain, once, strict=True):
        assert a["frame_id"] == b["frame_id"] and np.array_equal(a["pred_labels"], b["pred_labels"])


def brute_force(data, model, sample: dict, chosen: list[View]) -> np.ndarray:
    """Each view's scan collated on its own, its softmax summed, the argmax over the classes but the ignored one."""
    total = 0
    for view in chosen:
        batch = data.collate_fn([sample | {"points": view.apply(torch.from_numpy(sample["points"])).numpy()}])
        logits, mapped = model.evaluated_logits(batch)
        assert mapped.all()  # unmapped="nearest": every point has a voxel
        total = total + logits.softmax(1)
    total[:, model.ignore_index] = -1
    return total.argmax(1).numpy()


def test_the_answer_is_the_argmax_of_the_views_mean(data, segmentor):
    chosen = views("d4", [0.9, 1.0])
    tta = TestTimeAugmented(segmentor, data.collate_fn.voxelizer, chosen).eval()
    batch = data.collate_fn([data[0], data[1]])
    with torch.no_grad():
        got = tta(batch)
        for b in range(2):
            want = brute_force(data, segmentor, data[b], chosen)
            assert np.mean(got[b]["pred_labels"] == want) > 0.999  # sums in another order: float ties at most


def test_flips_answer_the_same_for_a_scan_and_its_mirror_image(data, segmentor):
    """The four flips map onto themselves when the scan is mirrored, so the answer does not change, where one
    pass of the model does."""
    tta = TestTimeAugmented(segmentor, data.collate_fn.voxelizer, views("flips")).eval()
    sample = data[0]
    mirror = sample | {"points": View(quarters=2, mirror=True).apply(torch.from_numpy(sample["points"])).numpy()}
    with torch.no_grad():
        both = [tta(data.collate_fn([s]))[0]["pred_labels"] for s in (sample, mirror)]
        once = [segmentor(data.collate_fn([s]))[0]["pred_labels"] for s in (sample, mirror)]
    assert np.mean(both[0] == both[1]) > 0.999
    assert np.mean(once[0] == once[1]) < 0.99


def test_a_mean_teacher_is_augmented_through_the_segmentor_it_evaluates(data, segmentor):
    teacher = MeanTeacherSegmentor(segmentor).eval()
    teacher.teacher.load_state_dict(segmentor.state_dict())
    batch = data.collate_fn([data[0]])
    with torch.no_grad():
        a = TestTimeAugmented(teacher, data.collate_fn.voxelizer, views("flips")).eval()(batch)
        b = TestTimeAugmented(segmentor, data.collate_fn.voxelizer, views("flips")).eval()(batch)
    assert np.array_equal(a[0]["pred_labels"], b[0]["pred_labels"])


def test_what_cannot_be_augmented_is_refused(data, segmentor):
    with pytest.raises(ConfigError, match="ToyPointNet has task 'classification'"):
        TestTimeAugmented(ToyPointNet(num_classes=3), data.collate_fn.voxelizer, views("flips"))
    segmentor.class_probabilities = None  # an instance attribute hides the method
    try:
        with pytest.raises(ConfigError, match="SparseSegmentor has no .*class_probabilities"):
            TestTimeAugmented(segmentor, data.collate_fn.voxelizer, views("flips"))
    finally:
        del segmentor.class_probabilities
    with pytest.raises(ConfigError, match="no voxelizer"):
        TestTimeAugmented(segmentor, None, views("flips"))
    tta = TestTimeAugmented(segmentor, data.collate_fn.voxelizer, views("flips"))
    with pytest.raises(ConfigError, match="only predicts"):
        tta.train()(data.collate_fn([data[0]]))
    segmentor.eval()


def test_boxes_move_with_their_points_and_come_back():
    """A box seen in a view has the view of its centre as centre, of its front point as front point and of its
    velocity as velocity; taking it back gives the box again."""
    box = np.array([[3.0, 1.0, -0.5, 4.0, 2.0, 1.5, 0.4, 2.0, -1.0]], np.float32)
    heading = box[0, 6]
    front = box[0, :3] + [box[0, 3] / 2 * np.cos(heading), box[0, 3] / 2 * np.sin(heading), 0]
    velocity_tip = box[0, :3] + [box[0, 7], box[0, 8], 0]
    for view in views("d4", [0.9, 1.0]):
        moved = view.boxes(box)
        centre, h = moved[0, :3], moved[0, 6]
        pts = view.apply(torch.tensor(np.stack([box[0, :3], front, velocity_tip]), dtype=torch.float32)).numpy()
        np.testing.assert_allclose(centre, pts[0], atol=1e-5)
        np.testing.assert_allclose(centre + [moved[0, 3] / 2 * np.cos(h), moved[0, 3] / 2 * np.sin(h), 0], pts[1],
                                   atol=1e-5)
        np.testing.assert_allclose(centre + [moved[0, 7], moved[0, 8], 0], pts[2], atol=1e-5)
        np.testing.assert_allclose(moved[0, 3:6], box[0, 3:6] * view.scale, rtol=1e-6)
        np.testing.assert_allclose(view.boxes(moved, inverse=True), box, atol=1e-5)
    assert View().boxes(np.zeros((0, 9), np.float32)).shape == (0, 9)


def test_fused_boxes_by_hand():
    car = [0.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.0]
    boxes = np.array([car, [0.2, 0, 0, 4, 2, 1.5, 0.1], [10, 0, 0, 4, 2, 1.5, 0], car, car], np.float32)
    scores = np.array([0.9, 0.6, 0.8, 0.5, 0.3], np.float32)
    labels = np.array([1, 1, 1, 2, 1])
    view_of = np.array([0, 1, 1, 1, 0])
    out = fuse_boxes(boxes, scores, labels, view_of, n_views=2)
    # class 1 at the origin: view 0's 0.9 and 0.3, view 1's 0.6; the score is the mean of the views' best
    np.testing.assert_allclose(out["scores"], [0.75, 0.4, 0.25], rtol=1e-6)
    np.testing.assert_array_equal(out["labels"], [1, 1, 2])
    np.testing.assert_allclose(out["boxes"][0, 0], 0.2 * 0.6 / 1.8, rtol=1e-5)
    np.testing.assert_allclose(out["boxes"][0, 6], np.arctan2(0.6 * np.sin(0.1), 1.2 + 0.6 * np.cos(0.1)), rtol=1e-5)
    np.testing.assert_allclose(out["boxes"][1:], boxes[[2, 3]], atol=1e-6)
    empty = fuse_boxes(np.zeros((0, 7)), np.zeros(0), np.zeros(0), np.zeros(0), 2)
    assert empty["boxes"].shape == (0, 7) and len(empty["scores"]) == 0
    # view 1's box half turned (the same BEV footprint) votes for heading 0.1 still, not against the best's 0
    pair = boxes[:2].copy()
    pair[1, 6] -= np.float32(np.pi)
    flipped = fuse_boxes(pair, scores[:2], labels[:2], view_of[:2], 2)
    np.testing.assert_allclose(flipped["boxes"][0, 6], np.arctan2(0.6 * np.sin(0.1), 0.9 + 0.6 * np.cos(0.1)),
                               rtol=1e-5)


class LeftHanded(torch.nn.Module):
    """A detector that is not mirror symmetric: one box at the mean of the points left of the sensor (y > 0),
    heading towards it, its score from how many voxels the scan has (so it reads the view's own voxels)."""

    task = "detection"

    def forward(self, batch):
        out = []
        for b in range(batch["batch_size"]):
            rows = slice(int(batch["point_offsets"][b]), int(batch["point_offsets"][b + 1]))
            points = batch["points"][rows]
            left = points[points[:, 1] > 0, :3].double().mean(0).numpy()
            voxels = int((batch["voxel_coords"][:, 0] == b).sum())
            box = [*left, 4.0, 2.0, 1.5, np.arctan2(left[1], left[0])]
            out.append({"frame_id": batch["frame_id"][b], "boxes": np.array([box], np.float32),
                        "scores": np.array([voxels / (voxels + 100.0) * (0.5 + 0.01 * left[1])], np.float32),
                        "labels": np.array([1])})
        return out


def test_fused_detections_turn_with_the_scan(data):
    """With the views {identity, mirror} a mirrored scan gets the mirror image of the scan's fused boxes, though
    the detector alone is not symmetric; the identity view alone is the detector itself."""
    detector = LeftHanded()
    sample = data[0]
    flip = View(mirror=True)
    mirror = sample | {"points": flip.apply(torch.from_numpy(sample["points"])).numpy()}
    tta = TestTimeAugmented(detector, data.collate_fn.voxelizer, views("mirror"))
    got = [tta(data.collate_fn([s]))[0] for s in (sample, mirror)]
    assert len(got[0]["boxes"]) == 2
    np.testing.assert_allclose(got[1]["boxes"], flip.boxes(got[0]["boxes"]), atol=1e-4)
    np.testing.assert_allclose(got[1]["scores"], got[0]["scores"], rtol=1e-6)
    alone = [detector(data.collate_fn([s]))[0]["boxes"] for s in (sample, mirror)]
    assert not np.allclose(alone[1], flip.boxes(alone[0]), atol=1e-2)
    once = TestTimeAugmented(detector, data.collate_fn.voxelizer, [View()])(data.collate_fn([sample]))[0]
    np.testing.assert_array_equal(once["boxes"], alone[0])


def test_an_axis_aligned_detector_keeps_axis_aligned_boxes(data):
    """A quarter turn of an indoor detector's answer comes back with its x and y sizes swapped and heading 0."""

    class Indoor(torch.nn.Module):
        task, axis_aligned = "detection", True

        def forward(self, batch):
            box = np.array([[1.0, 2.0, 0.5, 4.0, 1.0, 1.0, 0.0]], np.float32)
            return [{"frame_id": f, "boxes": box, "scores": np.ones(1, np.float32), "labels": np.ones(1, np.int64)}
                    for f in batch["frame_id"]]

    out = TestTimeAugmented(Indoor(), data.collate_fn.voxelizer, [View(quarters=1)])(data.collate_fn([data[0]]))
    np.testing.assert_allclose(out[0]["boxes"], [[2.0, -1.0, 0.5, 1.0, 4.0, 1.0, 0.0]], atol=1e-6)


def test_stacked_indoor_objects_stay_apart(data):
    """A wall cabinet above a base cabinet (one footprint, one class) are two objects: an axis-aligned detector's
    views fuse by 3D IoU; the outdoor default (BEV IoU) would merge them."""
    base, wall = [2.0, 1.0, 0.45, 1.2, 0.6, 0.9, 0.0], [2.0, 1.0, 1.85, 1.2, 0.6, 0.7, 0.0]
    boxes = np.array([base, wall, base, wall], np.float32)
    args = boxes, np.array([0.9, 0.8, 0.85, 0.7], np.float32), np.ones(4, np.int64), np.array([0, 0, 1, 1]), 2
    np.testing.assert_allclose(fuse_boxes(*args, overlap="3d")["boxes"], boxes[:2], atol=1e-6)
    assert len(fuse_boxes(*args)["boxes"]) == 1

    class Cabinets(torch.nn.Module):
        task, axis_aligned = "detection", True

        def forward(self, batch):
            return [{"frame_id": f, "boxes": boxes[:2], "scores": np.array([0.9, 0.8], np.float32),
                     "labels": np.ones(2, np.int64)} for f in batch["frame_id"]]

    identity_twice = [View(), View()]  # two views that agree: the fused answer is the answer
    out = TestTimeAugmented(Cabinets(), data.collate_fn.voxelizer, identity_twice)(data.collate_fn([data[0]]))
    np.testing.assert_allclose(out[0]["boxes"], boxes[:2], atol=1e-6)


@pytest.mark.slow
def test_tools_test_writes_the_augmented_scores_beside_the_plain_ones(tmp_path):
    """tools/test.py tta=flips on a segmentation checkpoint: its own results folder, the tag in metrics.json and
    the table's title, every point scored."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from conftest import experiment_checkpoint

    root = simulate_dataset("semantickitti", tmp_path / "skitti", frames=2, seed=0, columns=512, sequence_length=2)
    ckpt = experiment_checkpoint(tmp_path / "runs", "sim_semantickitti_seg", f"dataset.root={root}",
                                 "dataset.sequences=[0]")
    tool = Path(__file__).resolve().parents[1] / "tools" / "test.py"
    for extra in ([], ["tta=flips", "tta_scales=[0.9,1]"]):
        done = subprocess.run([sys.executable, str(tool), f"ckpt={ckpt}", "split=train", "write_predictions=false",
                               *extra], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    plain, augmented = (ckpt.parent.parent / "test_train", ckpt.parent.parent / "test_train_tta-flips-x0.9-1")
    assert json.loads((plain / "metrics.json").read_text())["tag"] is None
    scores = json.loads((augmented / "metrics.json").read_text())
    assert scores["tag"] == "tta-flips-x0.9-1" and "mIoU" in scores["metrics"]
    assert "· tta-flips-x0.9-1" in (augmented / "metrics.md").read_text()
