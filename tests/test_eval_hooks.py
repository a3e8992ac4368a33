"""pc3d.eval.hooks: each hook against a hand-computed case, reading ground truth through the dataset."""
from __future__ import annotations

import numpy as np
import pytest

from pc3d.eval.hooks import (
    ClassificationEvaluator,
    FlowEvaluator,
    KittiEvaluator,
    MosEvaluator,
    SegmentationEvaluator,
    WaymoEvaluator,
)
from pc3d.geometry import KittiCalib


class NoPoints:
    """A dataset whose point clouds must not be read by the hook."""

    def load(self, index):
        raise AssertionError("the hook read a point cloud")

    def __getitem__(self, index):
        raise AssertionError("the hook read a point cloud")


def test_segmentation_hook_matches_hand_counts():
    class Data(NoPoints):
        class_names = ["unlabeled", "a", "b"]
        ignore_index = 0

    # gt 1 1 2 2 0 ; pred 1 2 2 2 1 -> the ignored point drops; a: tp 1, fn 1; b: tp 2, fp 1
    m = SegmentationEvaluator()(Data(), [{"frame_id": "x", "pred_labels": np.array([1, 2, 2, 2, 1]),
                                          "point_labels": np.array([1, 1, 2, 2, 0])}])
    assert m["iou"] == pytest.approx({"a": 50.0, "b": 200 / 3})
    assert m["mIoU"] == pytest.approx((50 + 200 / 3) / 2)
    assert m["oAcc"] == pytest.approx(75.0)
    with pytest.raises(Exception, match="3 predicted labels for 5"):
        SegmentationEvaluator()(Data(), [{"frame_id": "x", "pred_labels": np.array([1, 2, 2]),
                                          "point_labels": np.array([1, 1, 2, 2, 0])}])


def test_mos_hook_ignores_unlabelled_and_scores_current_scan():
    class Data:
        def __getitem__(self, index):  # current scan: 4 points; the past scan's 2 follow
            return {"point_labels": np.array([2, 2, 1, 0, 2, 2]), "num_current_points": 4}

    # current gt: moving moving static unlabelled; pred: 1 0 1 1 -> tp 1, fn 1, fp 1 (the unlabelled one ignored)
    m = MosEvaluator()(Data(), [{"frame_id": "08/000001", "moving": np.array([1, 0, 1, 1], np.uint8)}])
    assert m["moving_IoU"] == pytest.approx(100 / 3)
    assert m["num_points"] == 4 and m["num_moving"] == 2


def test_flow_hook_averages_per_sample():
    class Data:
        def __getitem__(self, index):
            return {"flow": np.zeros((2, 3), np.float32), "flow_mask": np.array([True, index == 0])}

    preds = [{"frame_id": "0", "flow": np.array([[0.0, 0, 0], [1.0, 0, 0]], np.float32)},
             {"frame_id": "1", "flow": np.array([[0.2, 0, 0], [5.0, 0, 0]], np.float32)}]
    m = FlowEvaluator()(Data(), preds)
    assert m["EPE3D"] == pytest.approx((0.5 + 0.2) / 2)  # sample 1 scores its one unmasked point
    assert m["Outliers"] == pytest.approx(100 * (0.5 + 1.0) / 2)
    assert "EPE2D" not in m  # no camera, no 2D metrics


def test_flow_hook_projects_with_the_datasets_camera():
    class Data:
        def __getitem__(self, index):  # the echoed points are used; the dataset's would be wrong
            return {"points": np.full((2, 3), np.nan)}

        def projection(self, index):  # x to the right, z the depth, f = 100 px
            return np.array([[100.0, 0, 0, 0], [0, 100.0, 0, 0], [0, 0, 1.0, 0]])

    points = np.array([[0.0, 0, 10], [0.0, 0, 10]])
    preds = [{"frame_id": "0", "points": points, "flow": np.array([[1.2, 0, 0], [0.5, 0, -5]]),
              "flow_gt": np.array([[1.0, 0, 0], [0.0, 0, -5]])}]
    m = FlowEvaluator()(Data(), preds)
    assert m["EPE2D"] == pytest.approx((2 + 10) / 2)  # 12 px against 10, 10 px against 0
    assert m["Acc2D"] == pytest.approx(50.0)


def test_classification_hook():
    class Data(NoPoints):
        labels = np.array([0, 0, 1, 2])
        class_names = ["a", "b", "c"]

    m = ClassificationEvaluator()(Data(), [{"frame_id": str(i), "label": k, "scores": np.ones(3)}
                                           for i, k in enumerate([0, 1, 1, 2])])
    assert m["accuracy"] == pytest.approx(75.0)
    assert m["mean_class_accuracy"] == pytest.approx(100 * (0.5 + 1 + 1) / 3)


def test_waymo_hook_perfect_predictions_and_range():
    boxes = np.array([[10, 0, 1, 4.5, 2, 1.6, 0.3, 0, 0], [0, 5, 1, 0.8, 0.8, 1.8, 0, 0, 0],
                      [80, 0, 1, 4.5, 2, 1.6, 0, 0, 0]], np.float32)

    class Data(NoPoints):
        class_names = ["Vehicle", "Pedestrian", "Cyclist"]

        def annotations(self, index):
            return {"annos": {"box": boxes, "name": np.array(["Vehicle", "Pedestrian", "Vehicle"]),
                              "num_points": np.array([50, 3, 40]), "difficulty": np.array([1, 2, 1], np.int8)}}

    near = {"frame_id": "s/1", "boxes": boxes[:2, :7], "scores": np.array([0.9, 0.8]), "labels": np.array([1, 2])}
    hook = WaymoEvaluator(point_cloud_range=[-51.2, -51.2, -2, 51.2, 51.2, 4])
    m = hook(Data(), [near])
    assert m["Vehicle/L2_APH"] == pytest.approx(100.0) and m["Pedestrian/L2_AP"] == pytest.approx(100.0)
    assert "inside x, y range" in hook.last_table
    m = WaymoEvaluator()(Data(), [near])  # the far vehicle now counts: half the vehicles found
    assert m["Vehicle/L1_AP"] < 60.0


def test_kitti_hook_reads_annotations_only(tmp_path):
    from pc3d.eval.kitti_io import to_kitti_anno
    from pc3d.sim.ground_truth import kitti_calib

    calib = kitti_calib()
    assert isinstance(calib, KittiCalib)
    pred = {"frame_id": "000000", "boxes": np.array([[10, 1, -0.8, 4, 1.7, 1.5, 0.2]], np.float32),
            "scores": np.array([0.9], np.float32), "labels": np.array([1])}
    anno = to_kitti_anno(pred, calib, (375, 1242), ["Car"])
    truth = {k: anno[k] for k in ("name", "truncated", "occluded", "alpha", "bbox", "location", "rotation_y")}
    truth["dimensions"] = anno["dimensions"][:, [1, 2, 0]]  # the label file's h, w, l

    class Data(NoPoints):
        class_names = ["Car"]

        def annotations(self, index):
            return {"annos": truth, "calib": calib, "image_shape": (375, 1242)}

    hook = KittiEvaluator()
    m = hook(Data(), [pred] * 50)
    assert m["Car_3d/easy_R40"] == pytest.approx(100.0, abs=0.01)
    assert "Car" in hook.last_table


def test_kitti_rows_of_lidar_boxes_by_hand():
    """A LiDAR box at (10, 5) heading 0 (along the LiDAR's x = the camera's z) has rotation_y -pi/2 and
    alpha = rotation_y - atan2(x_cam, z_cam), about -pi/2 + atan2(5, 10) = -1.107 (the camera sits near the
    LiDAR); a box left of the image (y 30 at x 10) or behind the camera gives no row."""
    from pc3d.eval.kitti_io import to_kitti_anno
    from pc3d.sim.ground_truth import kitti_calib

    def rows(boxes):
        return to_kitti_anno({"boxes": np.array(boxes, np.float32), "scores": np.ones(len(boxes)),
                              "labels": np.ones(len(boxes), np.int64)}, kitti_calib(), (370, 1224), ["Car"])

    anno = rows([[10, 5, -1, 4, 2, 1.5, 0]])
    x, z, ry = anno["location"][0, 0], anno["location"][0, 2], anno["rotation_y"][0]
    assert ry == pytest.approx(-np.pi / 2, abs=1e-3)
    assert anno["alpha"][0] == pytest.approx((ry - np.arctan2(x, z) + np.pi) % (2 * np.pi) - np.pi, abs=1e-4)
    assert anno["alpha"][0] == pytest.approx(-np.pi / 2 + np.arctan2(5, 10), abs=0.02)
    assert len(rows([[10, 30, -1, 4, 2, 1.5, 0], [-10, 0, -1, 4, 2, 1.5, 0]])["name"]) == 0
