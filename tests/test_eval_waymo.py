"""Waymo AP / APH on hand cases: perfect, flipped heading, LEVEL_2 low-point boxes, the AP integral."""
from __future__ import annotations

import numpy as np
import pytest

from pc3d.errors import DataFormatError
from pc3d.eval import waymo_eval
from pc3d.eval.waymo import mean_average_precision


def boxes(n, heading=0.0, shift=0.0):
    b = np.zeros((n, 7), np.float32)
    b[:, 0] = np.arange(n) * 10 + shift
    b[:, 3:6] = (4.5, 2.0, 1.6)
    b[:, 6] = heading
    return b


def gt_frame(n, points=100, types=1):
    return {"boxes": boxes(n), "types": np.full(n, types), "num_points": np.full(n, points)}


def dt_frame(b, types=1):
    return {"boxes": b, "types": np.full(len(b), types), "scores": np.linspace(0.9, 0.5, len(b))}


def test_perfect_predictions():
    r = waymo_eval([gt_frame(3), gt_frame(2)], [dt_frame(boxes(3)), dt_frame(boxes(2))])
    for level in ("LEVEL_1", "LEVEL_2"):
        assert r["vehicle"][level]["AP"] == pytest.approx(1.0)
        assert r["vehicle"][level]["APH"] == pytest.approx(1.0)
    assert r["vehicle"]["LEVEL_1"]["num_gt"] == 5
    assert r["pedestrian"]["LEVEL_1"]["AP"] == 0.0


def test_flipped_heading_gives_aph_zero():
    r = waymo_eval([gt_frame(3)], [dt_frame(boxes(3, heading=np.pi))])
    assert r["vehicle"]["LEVEL_1"]["AP"] == pytest.approx(1.0)
    assert r["vehicle"]["LEVEL_1"]["APH"] == pytest.approx(0.0, abs=1e-6)
    # a quarter turn of a square-ish footprint still overlaps < 0.7: use a small heading error instead
    r = waymo_eval([gt_frame(3)], [dt_frame(boxes(3, heading=0.1))])
    assert r["vehicle"]["LEVEL_1"]["APH"] == pytest.approx(1 - 0.1 / np.pi, abs=1e-5)


def test_level_2_adds_low_point_boxes():
    gt = gt_frame(2)
    gt["num_points"] = np.array([100, 3])  # the second box is LEVEL_2 (<= 5 points) and missed
    r = waymo_eval([gt], [dt_frame(boxes(1))])
    assert r["vehicle"]["LEVEL_1"] == {"AP": pytest.approx(1.0), "APH": pytest.approx(1.0), "num_gt": 1}
    # LEVEL_2: recall 1/2 at precision 1 -> area 0.5
    assert r["vehicle"]["LEVEL_2"]["AP"] == pytest.approx(0.5)
    assert r["vehicle"]["LEVEL_2"]["num_gt"] == 2
    # an explicit difficulty field also makes a box LEVEL_2; boxes without points are not evaluated
    gt = gt_frame(3)
    gt["difficulty"] = np.array([1, 2, 0])
    gt["num_points"] = np.array([100, 100, 0])
    r = waymo_eval([gt], [dt_frame(boxes(1))])
    assert r["vehicle"]["LEVEL_1"]["num_gt"] == 1 and r["vehicle"]["LEVEL_2"]["num_gt"] == 2
    assert r["vehicle"]["LEVEL_1"]["AP"] == pytest.approx(1.0)


def test_false_positive_and_type_matching():
    # a pedestrian-typed prediction on a vehicle is an FP for pedestrians and not a match for vehicles
    gt = gt_frame(1)
    dt = {"boxes": np.concatenate([boxes(1), boxes(1)]), "types": np.array(["vehicle", "pedestrian"]),
          "scores": np.array([0.9, 0.8])}
    r = waymo_eval([gt], [dt])
    assert r["vehicle"]["LEVEL_1"]["AP"] == pytest.approx(1.0)
    assert r["pedestrian"]["LEVEL_1"]["AP"] == 0.0
    # a higher-scored FP: precision 1/2 at recall 1, 0 -> 1 at recall 0 (the official override)
    dt = {"boxes": np.concatenate([boxes(1, shift=50), boxes(1)]), "types": np.array([1, 1]),
          "scores": np.array([0.9, 0.8])}
    assert waymo_eval([gt], [dt])["vehicle"]["LEVEL_1"]["AP"] == pytest.approx(0.5)


def test_mean_average_precision_integral():
    # (recall 0.5, precision 1), (1.0, 0.5): gaps filled every 0.05 with the envelope from higher recall,
    # so 1.0 -> 0.55 at 0.5, one trapezoid 0.55 -> 0.5 from 0.5 to 1, then 0.5 -> 0 at 1
    expected = 0.45 * 0.5 + 0.05 * 0.75 + 0.5
    assert mean_average_precision(np.array([1.0, 0.5]), np.array([0.5, 1.0])) == pytest.approx(expected)
    assert mean_average_precision(np.array([]), np.array([])) == 0.0


def test_errors():
    with pytest.raises(DataFormatError, match="frame 0"):
        waymo_eval([{"boxes": boxes(2), "types": np.ones(2)}], [dt_frame(boxes(1))])
    with pytest.raises(DataFormatError, match="type ids"):
        waymo_eval([gt_frame(1, types=7)], [dt_frame(boxes(1))])


def test_a_score_on_a_cutoff_meets_it_as_in_float32():
    """Scores and cutoffs are proto floats in the official tools: a TP scored 0.57 (float32) stays at the cutoff
    0.57, where alone it has precision 1 (in float64 it lay just below, and the FP scored 0.565 came with it)."""
    gt = gt_frame(1)
    dt = {"boxes": np.r_[boxes(1), boxes(1, shift=30)], "types": np.ones(2, int),
          "scores": np.array([0.57, 0.565], np.float32)}
    assert waymo_eval([gt], [dt])["vehicle"]["LEVEL_1"]["AP"] == pytest.approx(1.0)
    assert sum(float(np.float32(k / 100)) >= k * 0.01 for k in range(101)) < 101  # float64 would miss some


def test_a_difficulty_the_label_sets_stands_and_points_decide_where_it_is_unset():
    """compute_detection_metrics_main (OpenPCDet's waymo_eval too): a box labelled LEVEL_1 with 3 points stays
    LEVEL_1; an unset level (0) follows the points (<= 5: LEVEL_2)."""
    gt = gt_frame(3)
    gt["num_points"] = np.array([100, 3, 3])
    gt["difficulty"] = np.array([0, 1, 0])
    r = waymo_eval([gt], [dt_frame(boxes(1))])
    assert r["vehicle"]["LEVEL_1"]["num_gt"] == 2 and r["vehicle"]["LEVEL_2"]["num_gt"] == 3
    assert r["vehicle"]["LEVEL_1"]["AP"] == pytest.approx(0.5)


def test_an_iou_of_the_threshold_in_float32_matches_as_in_the_official_matcher():
    """The official matcher's IoU() is a float compared with float thresholds: a box 0.7 as long as its ground
    truth inside it (IoU 0.7; 0.6999999999999998 in float64 arithmetic) is a TP."""
    gt = {"boxes": np.array([[0, 0, 0, 1.0, 2.0, 1.5, 0]]), "types": np.ones(1, int), "num_points": np.full(1, 100)}
    dt = {"boxes": np.array([[0, 0, 0, 0.7, 2.0, 1.5, 0]]), "types": np.ones(1, int), "scores": np.ones(1)}
    assert waymo_eval([gt], [dt])["vehicle"]["LEVEL_1"]["AP"] == pytest.approx(1.0)
