"""KITTI AP on hand-computed cases: the devkit's rules (ignore logic, DontCare, 41 thresholds, R11 / R40)."""
from __future__ import annotations

import numpy as np
import pytest

from pc3d.errors import DataFormatError
from pc3d.eval import format_kitti_table, kitti_eval, read_kitti_label, write_kitti_label
from pc3d.eval.kitti_io import empty_anno

KEYS = ("name", "truncated", "occluded", "alpha", "bbox", "dimensions", "location", "rotation_y")
WIDTH = {"bbox": 4, "dimensions": 3, "location": 3}


def obj(x=0.0, z=20.0, name="Car", score=None, occ=0, trunc=0.0, bbox=None, ry=0.0):
    """One object: a 4 x 1.5 x 1.6 m box (l, h, w) and a 50 px tall image box."""
    o = {"name": name, "truncated": trunc, "occluded": occ, "alpha": ry, "rotation_y": ry,
         "bbox": bbox if bbox is not None else [300 + 20 * x, 100, 360 + 20 * x, 150],
         "dimensions": [4.0, 1.5, 1.6], "location": [x, 1.6, z]}
    if score is not None:
        o["score"] = score
    return o


def frame(objs, det=False):
    keys = KEYS + (("score",) if det else ())
    return {k: np.array([o[k] for o in objs], dtype=None if k != "name" else "<U16").reshape(
        (len(objs), WIDTH[k]) if k in WIDTH else (len(objs),)) for k in keys}


def perfect(n=50):
    """n frames with one easy Car each, detected exactly with distinct scores."""
    gts = [frame([obj()]) for _ in range(n)]
    dts = [frame([obj(score=0.5 + i / 200)], det=True) for i in range(n)]
    return gts, dts


def test_perfect_detections_give_100_everywhere():
    gts, dts = perfect()
    r = kitti_eval(gts, dts)
    car = r.classes.index("Car")
    # easy gts count at every level (moderate / hard include easier objects)
    np.testing.assert_allclose(r.ap_r11[0, car], 100.0)
    np.testing.assert_allclose(r.ap_r40[0, car], 100.0)
    assert r.num_gt[car].tolist() == [50, 50, 50]
    # no pedestrians at all: AP 0, not NaN
    assert r.ap("Pedestrian", "3d", "moderate") == 0.0


def test_one_shifted_box_drops_3d_and_bev_not_bbox():
    gts, dts = perfect()
    # the lowest-scored detection moves 1.5 m along its length: 3D IoU (4 - 1.5) / (4 + 1.5) = 0.45 < 0.7,
    # its 2D box is unchanged
    dts[0] = frame([obj(z=21.5, score=0.5)], det=True)
    r = kitti_eval(gts, dts)
    # 49 of 50 found with precision 1 (the FP scores below every threshold): recall reaches 0.98, so the
    # sample points 0, 1/40, ..., 39/40 have precision 1 and recall 1 has 0: R40 = 39/40, R11 = 10/11
    for metric in ("bev", "3d"):
        for diff in ("easy", "moderate", "hard"):
            assert r.ap("Car", metric, diff, "R40") == pytest.approx(97.5)
            assert r.ap("Car", metric, diff, "R11") == pytest.approx(1000 / 11)
            assert r.max_recall("Car", metric, diff) == pytest.approx(98.0)  # where the curve ends
    assert r.ap("Car", "bbox", "moderate", "R40") == pytest.approx(100.0)
    assert r.max_recall("Car", "bbox", "moderate") == pytest.approx(100.0)


def test_r40_drops_a_sample_point_for_each_box_lost_at_the_end_of_the_curve():
    # 40 Cars, found in score order; the k lowest-scored ones are missed (shifted 1.5 m: 3D IoU 0.45, scored below
    # every hit, so precision stays 1). The devkit keeps one threshold per 1/40 of recall, the i-th (0-based)
    # standing for sample point i: 40 hits give thresholds for points 0..39 (R40 39/40, as the devkit scores a
    # perfect 40-car set), and each box missed at the end of the curve takes one point, 1/40 of AP, however
    # small the share of the boxes it is
    for missed in (0, 1, 2):
        gts = [frame([obj()]) for _ in range(40)]
        dts = [frame([obj(z=21.5 if i < missed else 20.0, score=0.5 + i / 100)], det=True) for i in range(40)]
        r = kitti_eval(gts, dts, classes=("Car",))
        assert r.max_recall("Car", "3d", "moderate") == pytest.approx(100.0 * (40 - missed) / 40)
        assert r.ap("Car", "3d", "moderate", "R40") == pytest.approx(100.0 * (39 - missed) / 40)


def test_r11_and_r40_on_a_crafted_pr_curve():
    # 4 Cars found at scores 0.9, 0.8, 0.7, 0.6 and one far FP at 0.85. The devkit keeps the 4 TP
    # scores as thresholds: precisions 1, 2/3, 3/4, 4/5 -> interpolated 1, .8, .8, .8, then 0 up to 41 points.
    gts = [frame([obj(x=-4), obj(x=0), obj(x=4), obj(x=8)])]
    dets = [obj(x=-4, score=0.9), obj(x=0, score=0.8), obj(x=4, score=0.7), obj(x=8, score=0.6),
            obj(x=-12, z=40, score=0.85, bbox=[10, 10, 50, 70])]
    r = kitti_eval(gts, [frame(dets, det=True)], classes=("Car",))
    assert r.ap("Car", "3d", "easy", "R11") == pytest.approx(100 / 11)  # only point 0 of 0, 4, ..., 40
    assert r.ap("Car", "3d", "easy", "R40") == pytest.approx(2.4 / 40 * 100)  # points 1, 2, 3
    np.testing.assert_allclose(r.precision[0, 0, 2, 0, :5], [1, 0.8, 0.8, 0.8, 0])


def test_detection_on_dontcare_is_not_a_false_positive():
    gts, dts = perfect()
    dc = obj(name="DontCare", bbox=[600, 120, 700, 200])
    gts[10] = frame([obj(), dc])
    # a confident Car detection inside the DontCare region (2D box fully inside it)
    dts[10] = frame([obj(score=0.55), obj(x=30, score=0.99, bbox=[610, 130, 690, 190])], det=True)
    r = kitti_eval(gts, dts)
    assert r.ap("Car", "bbox", "moderate", "R40") == pytest.approx(100.0)
    # without the DontCare label it is a false positive at every threshold
    gts[10] = frame([obj()])
    assert kitti_eval(gts, dts).ap("Car", "bbox", "moderate", "R40") < 99.0


def test_neighbouring_class_and_harder_gts_are_ignored():
    gts, dts = perfect()
    # a Van with a Van detection and a Car detection on it; a heavily occluded Car (hard only) detected
    gts[3] = frame([obj(), obj(x=10, name="Van"), obj(x=-10, occ=2)])
    dts[3] = frame([obj(score=0.515), obj(x=10, name="Van", score=0.99), obj(x=10, score=0.98),
                    obj(x=-10, score=0.97)], det=True)
    r = kitti_eval(gts, dts)
    assert r.ap("Car", "3d", "easy", "R40") == pytest.approx(100.0)
    assert r.ap("Car", "3d", "moderate", "R40") == pytest.approx(100.0)
    assert r.num_gt[0].tolist() == [50, 50, 51]
    assert r.ap("Car", "3d", "hard", "R40") == pytest.approx(100.0)


def test_detections_below_min_height_are_ignored():
    gts, dts = perfect()
    # a 20 px tall unmatched Car detection: ignored at every level (min height 25 / 40 px)
    dts[5] = frame([obj(score=0.525), obj(x=30, score=0.99, bbox=[10, 10, 30, 30])], det=True)
    assert kitti_eval(gts, dts).ap("Car", "bbox", "hard", "R40") == pytest.approx(100.0)


def test_aos_flipped_heading_and_invalid_alpha():
    gts, dts = perfect()
    for d in dts:
        d["alpha"] = d["alpha"] + np.pi  # orientation similarity (1 + cos(pi)) / 2 = 0
    r = kitti_eval(gts, dts)
    assert r.ap("Car", "aos", "easy", "R40") == pytest.approx(0.0, abs=1e-9)
    assert r.ap("Car", "bbox", "easy", "R40") == pytest.approx(100.0)
    dts[0]["alpha"][:] = -10
    r = kitti_eval(gts, dts)
    assert not r.aos_computed and np.isnan(r.ap("Car", "aos"))
    assert "aos" not in format_kitti_table(r)


def test_table_dict_and_loose_set():
    gts, dts = perfect()
    r = kitti_eval(gts, dts, overlap_sets=("strict", "loose"))
    table = format_kitti_table(r)
    assert table.startswith("| class |") and "| Car | 3d | 0.70 |" in table
    d = r.to_dict()
    assert d["flat"]["Car_3d/moderate_R40"] == pytest.approx(100.0)
    assert d["results"]["Car"]["loose"]["min_overlap"]["3d"] == 0.5
    assert d["results"]["Car"]["num_gt"]["hard"] == 50


def test_label_file_round_trip_and_errors(tmp_path):
    anno = frame([obj(x=1.25, score=0.75), obj(name="Pedestrian", x=-2, score=0.5)], det=True)
    path = tmp_path / "000001.txt"
    write_kitti_label(path, anno)
    first = path.read_text().splitlines()[0].split()
    assert first[0] == "Car" and first[8:11] == ["1.5000", "1.6000", "4.0000"]  # h, w, l in the file
    back = read_kitti_label(path)
    for k in KEYS + ("score",):
        if k == "name":
            assert back[k].tolist() == anno[k].tolist()
        else:
            np.testing.assert_allclose(back[k], anno[k], atol=1e-4)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert read_kitti_label(empty)["bbox"].shape == (0, 4)
    gts, dts = perfect(3)  # a result file read back empty (no score column) is a frame without detections
    with_empty = kitti_eval(gts, dts[:2] + [read_kitti_label(empty)]).to_dict()["flat"]["Car_3d/moderate_R40"]
    assert with_empty == kitti_eval(gts, dts[:2] + [empty_anno(with_score=True)]).to_dict()["flat"][
        "Car_3d/moderate_R40"] < 100
    bad = tmp_path / "bad.txt"
    bad.write_text("Car 0 0 0 1 2 3\n")
    with pytest.raises(DataFormatError, match="bad.txt"):
        read_kitti_label(bad)
    gts, dts = perfect(3)
    dts[1]["score"] = dts[1]["score"][:0]
    with pytest.raises(DataFormatError, match="frame 1"):
        kitti_eval(gts, dts)
    with pytest.raises(DataFormatError):
        kitti_eval(gts, dts[:2])


def test_difficulty_at_exactly_40_and_25_px():
    from pc3d.eval.kitti import kitti_difficulty

    # the devkit needs a ground truth *taller* than a level's minimum: 40 px is moderate, 25 px is none
    height = np.array([40.0, 40.01, 25.0, 25.01, 50.0, 50.0, 50.0, 50.0])
    occluded = np.array([0, 0, 0, 0, 1, 2, 3, 0])
    truncated = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.16])
    assert kitti_difficulty(height, occluded, truncated).tolist() == [1, 0, -1, 1, 1, 2, -1, 1]
    assert kitti_difficulty([50.0, 50.0], [0, 2], [0.5, 0.51]).tolist() == [2, -1]

    gts, dts = perfect()
    # a 40 px Car: counted at moderate, not easy (only 49 easy ground truths)
    gts[0] = frame([obj(bbox=[300, 100, 360, 140])])
    dts[0] = frame([obj(score=0.5, bbox=[300, 100, 360, 140])], det=True)
    # a 25 px Car and its detection: ignored at every level; the 25 px detection is not "too small"
    gts[1] = frame([obj(), obj(x=5, bbox=[400, 100, 460, 125])])
    dts[1] = frame([obj(score=0.505), obj(x=5, score=0.99, bbox=[400, 100, 460, 125])], det=True)
    r = kitti_eval(gts, dts)
    assert r.num_gt[0].tolist() == [49, 50, 50]
    assert r.ap("Car", "bbox", "moderate", "R40") == pytest.approx(100.0)
    assert r.ap("Car", "bbox", "hard", "R40") == pytest.approx(100.0)
