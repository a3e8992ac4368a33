"""Indoor detection AP (ScanNet / VoteNet convention) on hand-computed cases."""
from __future__ import annotations

import math

import numpy as np
import pytest

from pc3d.errors import DataFormatError
from pc3d.eval.indoor import aligned_iou, average_precision, class_ap, indoor_map


def box(x, y=0.0, z=0.0, size=1.0):
    return np.array([x, y, z, size, size, size, 0.0], np.float32)


def test_aligned_iou_by_hand():
    a = np.stack([box(0.0)])
    b = np.stack([box(0.0), box(0.5), box(2.0), box(0.0, size=2.0)])
    assert aligned_iou(a, b)[0] == pytest.approx([1.0, 0.5 / 1.5, 0.0, 1 / 8])


def test_average_precision_envelope():
    # ranks TP, FP, TP, TP of 3 positives: recall 1/3 1/3 2/3 1, precision 1 1/2 2/3 3/4
    ap = average_precision(np.array([1, 1, 2, 3]) / 3, np.array([1, 1 / 2, 2 / 3, 3 / 4]))
    assert ap == pytest.approx(1 / 3 * 1 + 1 / 3 * 0.75 + 1 / 3 * 0.75)


def test_one_class_by_hand():
    # scene A: two truths, scene B: one. Detections by score: A exact (TP), A duplicate of it (FP), B exact (TP),
    # A on the second truth with IoU 1/3 (TP at 0.25, FP at 0.5).
    truths = [np.stack([box(0.0), box(5.0)]), np.stack([box(0.0)])]
    dets = [(np.stack([box(0.0), box(0.0), box(5.5)]), np.array([0.9, 0.8, 0.6])),
            (np.stack([box(0.0)]), np.array([0.7]))]
    assert class_ap(dets, truths, 0.25) == pytest.approx(5 / 6)
    assert class_ap(dets, truths, 0.5) == pytest.approx(1 / 3 + 1 / 3 * 2 / 3)
    assert math.isnan(class_ap(dets, [np.zeros((0, 7))] * 2, 0.25))  # no ground truth: AP undefined (0 / 0)
    overlap = float(aligned_iou(np.stack([box(5.0)]), np.stack([box(5.5)]))[0, 0])  # eval_det: ovmax > ovthresh
    one = ([(np.stack([box(5.5)]), np.array([0.9]))], [np.stack([box(5.0)])])
    assert class_ap(*one, overlap) == 0.0 and class_ap(*one, overlap - 1e-6) == 1.0


def test_map_over_present_classes_and_mismatched_scenes():
    preds = [{"boxes": np.stack([box(0.0), box(3.0)]), "scores": np.array([0.9, 0.8]), "labels": np.array([1, 2])}]
    truths = [{"gt_boxes": np.stack([box(0.0)]), "gt_labels": np.array([1])}]
    metrics = indoor_map(preds, truths, ["chair", "table", "sofa"])
    assert metrics["AP_0.25/chair"] == pytest.approx(100) and math.isnan(metrics["AP_0.25/table"])
    assert metrics["mAP_0.25"] == pytest.approx(100) and metrics["mAP_0.50"] == pytest.approx(100)
    with pytest.raises(DataFormatError, match="2 scenes"):
        indoor_map(preds, truths * 2, ["chair"])


def test_a_class_without_ground_truth_has_ap_nan_and_stays_out_of_the_map():
    """npos = 0: eval_det's recall is 0 / 0, the AP undefined (NaN), not 0; the mAP is the mean over the classes
    with ground truth, and NaN when the split has none."""
    # scene A: chair truth at 0, scene B: chair truth at 5. Detections by score: chair on A's truth (TP), chair at 2
    # (FP), table at 3 (no table anywhere). Chair: recall 1/2 1/2, precision 1 1/2 -> AP = 1/2 x 1 = 0.5.
    preds = [{"boxes": np.stack([box(0.0), box(2.0), box(3.0)]), "scores": np.array([0.9, 0.8, 0.7]),
              "labels": np.array([1, 1, 2])},
             {"boxes": np.zeros((0, 7)), "scores": np.zeros(0), "labels": np.zeros(0, int)}]
    truths = [{"gt_boxes": np.stack([box(0.0)]), "gt_labels": np.array([1])},
              {"gt_boxes": np.stack([box(5.0)]), "gt_labels": np.array([1])}]
    metrics = indoor_map(preds, truths, ["chair", "table", "sofa"], thresholds=(0.25,))
    assert metrics["AP_0.25/chair"] == pytest.approx(50)
    assert math.isnan(metrics["AP_0.25/table"]) and math.isnan(metrics["AP_0.25/sofa"])  # predicted or not
    assert metrics["mAP_0.25"] == pytest.approx(50)  # chair alone: neither (50 + 0 + 0) / 3 nor NaN
    empty = [{"gt_boxes": np.zeros((0, 7)), "gt_labels": np.zeros(0, int)}] * 2
    nothing = indoor_map(preds, empty, ["chair", "table", "sofa"], thresholds=(0.25,))
    assert math.isnan(nothing["mAP_0.25"])  # no class present: no mean, not a 0
    assert all(math.isnan(nothing[f"AP_0.25/{name}"]) for name in ("chair", "table", "sofa"))


def test_boxes_from_instances_of_a_hand_built_scene():
    from pc3d.data.indoor_boxes import instance_boxes
    from pc3d.data.scannet import SCANNET18_CLASSES

    points = np.array([[0, 0, 0], [2, 1, 1], [1, 0.5, 3],            # instance 1: a chair (train id 4)
                       [5, 5, 0], [6, 7, 0],                          # instance 2: wall (train id 0): no box
                       [9, 9, 9],                                     # no instance
                       [3, 3, 3], [4, 5, 6], [3.5, 4, 4]], np.float32)  # instance 7: a table, one point says sofa
    labels = np.array([4, 4, 4, 0, 0, 6, 6, 5, 6])
    instances = np.array([1, 1, 1, 2, 2, 0, 7, 7, 7])
    boxes, ids = instance_boxes(points, labels, instances)
    assert ids.tolist() == [3, 5] and [SCANNET18_CLASSES[i - 1] for i in ids] == ["chair", "table"]
    np.testing.assert_allclose(boxes[0], [1, 0.5, 1.5, 2, 1, 3, 0])
    np.testing.assert_allclose(boxes[1], [3.5, 4, 4.5, 1, 2, 3, 0])
    with pytest.raises(DataFormatError, match="scene0000_00.*9 points but 8 labels"):
        instance_boxes(points, labels[:8], instances, frame="scene0000_00")


def test_simulated_scannet_boxes_infos_and_the_hook(tmp_path):
    from pc3d.data import ScanNetDataset
    from pc3d.data.create import create_data
    from pc3d.eval.hooks import IndoorDetectionEvaluator
    from pc3d.sim.api import simulate_dataset

    simulate_dataset("scannet", tmp_path, frames=3, seed=0)
    data = ScanNetDataset(tmp_path, "train", boxes=True)
    sample = data.load(0)
    assert len(sample["gt_boxes"]) > 0 and sample["gt_labels"].min() >= 1 and sample["gt_labels"].max() <= 18
    spans = []  # each instance's min / max: every box is one of them
    for i in np.unique(sample["instance_ids"][sample["instance_ids"] > 0]):
        pts = sample["points"][sample["instance_ids"] == i, :3]
        spans.append(np.concatenate([pts.min(0), pts.max(0)]))
    for b in sample["gt_boxes"]:
        assert np.abs(np.array(spans) - np.concatenate([b[:3] - b[3:6] / 2, b[:3] + b[3:6] / 2])).max(1).min() < 1e-5
    computed = data.annotations(0)
    create_data("scannet", tmp_path)
    from_infos = ScanNetDataset(tmp_path, "train").annotations(0)
    np.testing.assert_allclose(from_infos["gt_boxes"], computed["gt_boxes"], atol=1e-5)
    assert from_infos["gt_labels"].tolist() == computed["gt_labels"].tolist()
    perfect = [{"boxes": data.annotations(i)["gt_boxes"], "labels": data.annotations(i)["gt_labels"],
                "scores": np.ones(len(data.annotations(i)["gt_labels"]))} for i in range(len(data))]
    metrics = IndoorDetectionEvaluator()(data, perfect)
    # a box of zero volume (the simulator's pictures are planes) has IoU 0 with everything, as in VoteNet's
    # evaluation: every other class is found perfectly
    flat = {int(c) for i in range(len(data)) for b, c in zip(*data.annotations(i).values(), strict=True)
            if np.prod(b[3:6]) == 0}
    for c, name in enumerate(data.box_class_names, 1):
        if not math.isnan(metrics[f"AP_0.25/{name}"]) and c not in flat:
            assert metrics[f"AP_0.25/{name}"] == pytest.approx(100) and metrics[f"AP_0.50/{name}"] == pytest.approx(100)


@pytest.mark.parametrize("options", [{"align": False},
                                     {"transforms": [{"_target_": "pc3d.data.transforms.CenterShift"}]}])
def test_the_hook_scores_in_the_frame_of_the_predictions(tmp_path, options):
    """Unaligned scenes (create_data's infos hold aligned boxes) or an evaluation transform (CenterShift):
    a detector that predicts each scene's boxes exactly scores 100, as the transformed samples hold them."""
    from pc3d.data import ScanNetDataset
    from pc3d.data.create import create_data
    from pc3d.eval.hooks import IndoorDetectionEvaluator
    from pc3d.sim.api import simulate_dataset

    simulate_dataset("scannet", tmp_path, frames=2, seed=1)
    create_data("scannet", tmp_path)
    data = ScanNetDataset(tmp_path, "train", boxes=True, **options)
    perfect = []
    for i in range(len(data)):
        sample = data[i]
        solid = np.prod(sample["gt_boxes"][:, 3:6], 1) > 0  # zero-volume boxes have IoU 0 (see above)
        perfect.append({"boxes": sample["gt_boxes"][solid], "labels": sample["gt_labels"][solid],
                        "scores": np.ones(int(solid.sum()))})
    assert IndoorDetectionEvaluator(thresholds=(0.5,))(data, perfect)["mAP_0.50"] == pytest.approx(100)


def test_box_json_layout_and_bad_labels(tmp_path):
    import json

    from pc3d.eval.box_json import read_box_json, write_box_json

    pred = {"boxes": np.array([[1.0, 2.0, 0.5, 0.6, 0.7, 0.8, 0.123456]]), "scores": np.array([0.98766]),
            "labels": np.array([2])}
    path = write_box_json(tmp_path / "a" / "s0.json", "s0", "scene", pred, ["chair", "table"], source="x.ply")
    assert json.loads(path.read_text()) == {"frame_id": "s0", "frame": "scene",
                                            "boxes": [[1.0, 2.0, 0.5, 0.6, 0.7, 0.8, 0.1235]], "scores": [0.9877],
                                            "labels": [2], "names": ["table"], "source": "x.ply"}
    empty = {"boxes": np.zeros((0, 7)), "scores": np.zeros(0), "labels": np.zeros(0, int)}
    assert json.loads(write_box_json(tmp_path / "e.json", "e", "lidar", empty, ["car"]).read_text())["boxes"] == []
    with pytest.raises(DataFormatError, match=r"bad\.json.*labels must be in \[1, 2\], got \[0, 2\]"):
        write_box_json(tmp_path / "bad.json", "b", "scene", {**pred, "labels": np.array([0, 2]),
                                                           "boxes": np.zeros((2, 7)), "scores": np.ones(2)},
                       ["chair", "table"])
    moving = {**pred, "boxes": np.array([[1.0, 2.0, 0.5, 4.0, 2.0, 1.5, 0.0, 3.0, -1.0]])}  # with vx, vy
    assert json.loads(write_box_json(tmp_path / "v.json", "v", "lidar", moving, ["car", "truck"]).read_text())[
        "boxes"] == [[1.0, 2.0, 0.5, 4.0, 2.0, 1.5, 0.0, 3.0, -1.0]]
    with pytest.raises(DataFormatError, match=r"boxes must be \[K, 7\] or \[K, 9\].*got \[2, 8\]"):
        write_box_json(tmp_path / "bad.json", "b", "lidar", {**pred, "boxes": np.zeros((2, 8))}, ["car"])
    with pytest.raises(DataFormatError, match="1 boxes, 2 scores and 1 labels"):
        write_box_json(tmp_path / "bad.json", "b", "scene", {**pred, "scores": np.ones(2)}, ["chair", "table"])
    # read back (tools/visualize.py): every width the writer writes, empty files, a score threshold
    back = read_box_json(tmp_path / "v.json")
    np.testing.assert_allclose(back["boxes"], moving["boxes"])
    assert back["labels"].tolist() == [2]
    assert read_box_json(tmp_path / "e.json")["boxes"].shape == (0, 7)
    assert len(read_box_json(path, min_score=0.99)["boxes"]) == 0 and len(read_box_json(path, 0.98)["boxes"]) == 1
    (tmp_path / "eight.json").write_text(json.dumps({"boxes": [[0] * 8], "scores": [1], "labels": [1]}))
    with pytest.raises(DataFormatError, match=r"eight\.json: not a tools/infer.py detection file"):
        read_box_json(tmp_path / "eight.json")
