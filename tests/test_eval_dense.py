"""Segmentation, MOS, scene-flow and classification metrics on hand-computed cases."""
from __future__ import annotations

import numpy as np
import pytest

from pc3d.errors import ConfigError, DataFormatError
from pc3d.eval import (
    MosAccumulator,
    SceneFlowAccumulator,
    SegmentationAccumulator,
    classification_metrics,
    confusion_matrix,
    mean_class_accuracy,
    missed_counts,
    mos_iou,
    overall_accuracy,
    pseudo_label_quality,
    scene_flow_metrics,
    segmentation_metrics,
)


def test_miou_with_an_absent_class_under_both_conventions():
    # class 2 appears in neither; a point labelled 255 (ignored) is dropped, one of class a predicted 255 (no
    # class) is a miss of a: a false negative, nobody's false positive, outside overall accuracy
    gt = np.array([0, 0, 1, 1, 255, 0])
    pred = np.array([0, 1, 1, 1, 0, 255])
    conf = confusion_matrix(pred, gt, 3, ignore_index=255)
    assert conf.tolist() == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]
    missed = missed_counts(pred, gt, 3, ignore_index=255)
    assert missed.tolist() == [1, 0, 0]
    zero = segmentation_metrics(conf, ["a", "b", "c"], absent="zero", missed=missed)  # SemanticKITTI
    assert zero["iou"] == pytest.approx({"a": 1 / 3, "b": 2 / 3, "c": 0.0})
    assert zero["mIoU"] == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
    assert zero["oAcc"] == pytest.approx(0.75)
    assert zero["mAcc"] == pytest.approx((1 / 3 + 1 + 0) / 3)
    nan = segmentation_metrics(conf, ["a", "b", "c"], absent="nan", missed=missed)  # ScanNet
    assert np.isnan(nan["iou"]["c"])
    assert nan["mIoU"] == pytest.approx((1 / 3 + 2 / 3) / 2)
    assert nan["mAcc"] == pytest.approx((1 / 3 + 1) / 2)
    accumulated = SegmentationAccumulator(3, 255, ["a", "b", "c"])
    accumulated.update(pred, gt)
    assert accumulated.metrics() == zero
    with pytest.raises(ConfigError):
        segmentation_metrics(conf, absent="skip")


def test_miou_equals_the_semantic_kitti_api_rule_with_no_class_predictions():
    """The api's iouEval on the same points (its confusion matrix rows = prediction, columns = label, the
    ignored label's column zeroed, the mean over the other classes), with predictions of the ignored id."""
    rng = np.random.default_rng(3)
    gt, pred = rng.integers(0, 6, 5000), rng.integers(0, 6, 5000)  # 0 is the ignored id, as SemanticKITTI's
    api = np.zeros((6, 6), np.int64)
    np.add.at(api, (pred, gt), 1)
    api[:, 0] = 0
    tp = np.diag(api)
    iou = tp / (tp + (api.sum(1) - tp) + (api.sum(0) - tp) + 1e-15)
    accumulated = SegmentationAccumulator(6, 0)
    accumulated.update(pred, gt)
    ours = segmentation_metrics(accumulated.conf[1:, 1:], absent="zero", missed=accumulated.missed[1:])
    assert ours["mIoU"] == pytest.approx(iou[1:].mean(), abs=1e-12)
    assert ours["oAcc"] == pytest.approx(tp.sum() / (api[1:].sum()), abs=1e-12)  # the api's getacc
    assert accumulated.missed[1:].sum() > 600  # the rule matters here


def test_accumulator_equals_one_big_frame_and_bad_labels_raise():
    rng = np.random.default_rng(0)
    gt, pred = rng.integers(0, 4, 1000), rng.integers(0, 4, 1000)
    acc = SegmentationAccumulator(4)
    acc.update(pred[:300], gt[:300])
    acc.update(pred[300:], gt[300:])
    assert acc.metrics() == segmentation_metrics(confusion_matrix(pred, gt, 4))
    with pytest.raises(DataFormatError):
        confusion_matrix(np.array([0, 5]), np.array([0, 1]), 4)
    with pytest.raises(DataFormatError):
        confusion_matrix(np.array([0]), np.array([0, 1]), 4)


def test_pseudo_label_quality_hand_case():
    """Rows ground truth, columns the teacher: the ignored class's row is dropped (its 5 points count nowhere), c
    has one point and no hard label naming it (precision NaN), d has no points (not scored)."""
    everything = np.array([[0, 5, 0, 0, 0],
                           [0, 6, 2, 0, 0],    # a: 8 points
                           [0, 1, 3, 0, 0],    # b: 4 points
                           [0, 1, 0, 0, 0],    # c: 1 point
                           [0, 0, 0, 0, 0]])   # d: none
    hard = np.array([[0, 5, 0, 0, 0],
                     [0, 4, 1, 0, 0],
                     [0, 0, 2, 0, 0],
                     [0, 0, 0, 0, 0],
                     [0, 0, 0, 0, 0]])
    q = pseudo_label_quality(everything, hard, ["ignored", "a", "b", "c", "d"], ignore_index=0)
    assert list(q["per_class"]) == ["a", "b", "c"]
    a, b, c = q["per_class"]["a"], q["per_class"]["b"], q["per_class"]["c"]
    assert a["iou"] == pytest.approx(6 / 10) and b["iou"] == pytest.approx(3 / 6) and c["iou"] == 0
    assert q["mIoU"] == pytest.approx((0.6 + 0.5 + 0) / 3)
    assert (a["points"], a["coverage"], a["precision"]) == (8, pytest.approx(5 / 8), pytest.approx(1.0))
    assert (b["coverage"], b["precision"]) == (pytest.approx(0.5), pytest.approx(2 / 3))
    assert c["coverage"] == 0 and np.isnan(c["precision"])
    assert q["coverage"] == pytest.approx(7 / 13) and q["accuracy"] == pytest.approx(6 / 7)
    with pytest.raises(DataFormatError, match="part"):
        pseudo_label_quality(hard, everything)


def test_mos_iou():
    pred = np.array([1, 1, 0, 0], bool)
    gt = np.array([1, 0, 1, 0], bool)
    assert mos_iou(pred, gt) == pytest.approx(1 / 3)  # tp 1, fp 1, fn 1
    assert mos_iou(pred, gt, ignore=np.array([0, 1, 0, 0], bool)) == pytest.approx(0.5)
    acc = MosAccumulator()
    acc.update(pred, gt)
    acc.update(pred, gt)
    assert acc.iou() == pytest.approx(1 / 3)


def test_scene_flow_hand_case():
    gt = np.array([[1.0, 0, 0], [10.0, 0, 0], [0.5, 0, 0], [1.0, 0, 0]])
    pred = gt + np.array([[0.04, 0, 0], [0, 0.4, 0], [0, 0, 0.08], [5.0, 0, 0]])
    m = scene_flow_metrics(pred, gt, mask=np.array([True, True, True, False]))  # last point occluded
    # err 0.04 (AccS), err 0.4 but relative 4 % (AccS, and an outlier by error > 0.3),
    # err 0.08 relative 16 % (AccR only, outlier by relative error)
    assert m["EPE3D"] == pytest.approx((0.04 + 0.4 + 0.08) / 3)
    assert m["AccS"] == pytest.approx(2 / 3)
    assert m["AccR"] == pytest.approx(1.0)
    assert m["Outliers"] == pytest.approx(2 / 3)


def test_scene_flow_accumulation_modes():
    zeros = np.zeros((1, 3))
    big = np.zeros((3, 3))
    per_sample = SceneFlowAccumulator("sample")
    per_point = SceneFlowAccumulator("point")
    for acc in (per_sample, per_point):
        acc.update(zeros + [0.0, 0, 0.2], zeros)  # one point, error 0.2
        acc.update(big, big)  # three points, error 0
    assert per_sample.metrics()["EPE3D"] == pytest.approx(0.1)  # HPLFlowNet / FLOT: mean of sample means
    assert per_point.metrics()["EPE3D"] == pytest.approx(0.05)
    with pytest.raises(DataFormatError):
        scene_flow_metrics(np.zeros((2, 3)), np.zeros((3, 3)))


def test_scene_flow_2d_hand_case():
    camera = np.array([[100.0, 0, 50, 0], [0, 100.0, 20, 0], [0, 0, 1.0, 0]])  # z is the depth
    points = np.array([[0.0, 0, 10], [1.0, 1, 10], [0.0, 0, 10], [0.0, 0, 20]])
    gt = np.array([[1.0, 0, 0], [0.0, 0, 10], [0.0, 0, -5], [0.0, 1, 0]])
    pred = gt + np.array([[0.2, 0, 0], [0.0, 0, 0], [0.5, 0, 0], [9.0, 0, 0]])
    m = scene_flow_metrics(pred, gt, np.array([True, True, True, False]), points, camera)
    # 2D flows (pixels), gt / pred: (10, 0) / (12, 0): err 2 (< 3 px); (-5, -5) / the same: err 0;
    # (0, 0) / (10, 0) at depth 5: err 10, relative to a still point: a miss; the last point is masked
    assert m["EPE2D"] == pytest.approx(12 / 3)
    assert m["Acc2D"] == pytest.approx(2 / 3)
    assert m["EPE3D"] == pytest.approx(0.7 / 3)
    along_the_ray = scene_flow_metrics(np.zeros((1, 3)), np.array([[0.0, 0, -9]]), None, np.array([[0.0, 0, 10]]),
                                       camera)  # 9 m of error in 3D, none in the image
    assert along_the_ray["EPE2D"] == 0 and along_the_ray["Acc2D"] == 1 and along_the_ray["EPE3D"] == 9
    far = scene_flow_metrics(np.array([[0.0, 0, -30]]), np.zeros((1, 3)), None, np.array([[1.0, 0, 10]]), camera)
    assert far["EPE2D"] == pytest.approx(15.0)  # behind the camera, projected as it is: u = 45 against 60
    with pytest.raises(DataFormatError, match="in front of the camera"):
        scene_flow_metrics(np.zeros((1, 3)), np.zeros((1, 3)), None, np.array([[0.0, 0, -1]]), camera)
    acc = SceneFlowAccumulator()
    acc.update(gt, gt, None, points, camera)
    with pytest.raises(DataFormatError, match="some samples only"):
        acc.update(gt, gt)
    with pytest.raises(ConfigError, match="points"):
        SceneFlowAccumulator().update(gt, gt, projection=camera)


def test_classification_accuracy():
    pred = np.array([0, 1, 1, 2])
    gt = np.array([0, 1, 2, 2])
    m = classification_metrics(pred, gt, 4)  # class 3 has no samples: not averaged
    assert m["oAcc"] == overall_accuracy(pred, gt) == pytest.approx(0.75)
    assert m["mAcc"] == mean_class_accuracy(pred, gt, 4) == pytest.approx((1 + 1 + 0.5) / 3)


def test_scene_flow_relative_error_is_relative_to_the_ground_truth():
    # ||gt|| = 1, errors 0.052 and 0.105 along the flow: relative to gt 5.2 % and 10.5 %
    # (relative to the prediction 4.94 % and 9.5 %, which would flip AccS, AccR and Outliers)
    gt = np.array([[1.0, 0, 0], [1.0, 0, 0]])
    pred = np.array([[1.052, 0, 0], [1.105, 0, 0]])
    m = scene_flow_metrics(pred, gt)
    assert m["AccS"] == 0.0 and m["AccR"] == pytest.approx(0.5) and m["Outliers"] == pytest.approx(0.5)


def test_scene_flow_accr_counts_a_point_by_its_relative_error_alone():
    # err 0.15 m (>= 0.1) but 7.5 % of a 2 m flow: AccR, not AccS, not an outlier
    m = scene_flow_metrics(np.array([[2.15, 0, 0]]), np.array([[2.0, 0, 0]]))
    assert (m["AccS"], m["AccR"], m["Outliers"]) == (0.0, 1.0, 0.0)


CAMERA = np.array([[100.0, 0, 50, 0], [0, 100.0, 20, 0], [0, 0, 1.0, 0]])  # z is the depth


def test_acc2d_relative_error_is_relative_to_the_ground_truth_flow():
    # at depth 10 m, 10 m of x flow is 100 px, 10.52 m is 105.2 px: err 5.2 px (> 3),
    # 5.2 % of the gt flow (a miss) but 4.94 % of the predicted one
    m = scene_flow_metrics(np.array([[10.52, 0, 0]]), np.array([[10.0, 0, 0]]), None, np.array([[0.0, 0, 10]]),
                           CAMERA)
    assert m["EPE2D"] == pytest.approx(5.2) and m["Acc2D"] == 0.0


def test_2d_flow_uses_the_projections_fourth_column():
    # KITTI's P_rect_02 has P[0, 3] = f * tx != 0; a point at depth 10 moving 5 m towards the camera:
    # u = (50 z + 100) / z goes 60 -> 70 (10 px of gt flow); without the column both are 50 (no flow)
    camera = CAMERA.copy()
    camera[0, 3] = 100.0
    m = scene_flow_metrics(np.zeros((1, 3)), np.array([[0.0, 0, -5]]), None, np.array([[0.0, 0, 10]]), camera)
    assert m["EPE2D"] == pytest.approx(10.0) and m["Acc2D"] == 0.0
