"""Waymo Objects files (pc3d.eval.waymo_objects): the wire bytes against a hand encoding of metrics.proto /
label.proto's field numbers, round trips and bad files; the official tools' frames, levels and breakdowns
(pc3d.eval.waymo_breakdown) on hand-built cases; and tools/eval_waymo.py on a simulated segment, against the
metrics pc3d scores the same predictions with."""
from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from pc3d.errors import ConfigError, DataFormatError
from pc3d.eval.waymo_breakdown import detection_breakdowns, detection_levels, tracking_breakdowns
from pc3d.eval.waymo_objects import read_objects, write_objects
from pc3d.eval.waymo_protos import message_class
from pc3d.eval.waymo_tracking import waymo_tracking_eval

ROOT = Path(__file__).resolve().parents[1]


def _varint(value: int) -> bytes:
    out = b""
    value &= (1 << 64) - 1
    while True:
        low, value = value & 0x7F, value >> 7
        out += bytes([low | (0x80 if value else 0)])
        if not value:
            return out


def _field(number: int, wire: int, payload: bytes) -> bytes:
    tag = _varint(number << 3 | wire)
    return tag + (_varint(len(payload)) + payload if wire == 2 else payload)


def test_bytes_are_metrics_proto_field_by_field(tmp_path):
    """One predicted box, encoded by hand from the .proto files: Box center_x 1, center_y 2, center_z 3, width 4,
    length 5, height 6, heading 7 (doubles); Label box 1, type 3, id 4; Object object 1, score 2 (float),
    context_name 4, frame_timestamp_micros 5; Objects objects 1. pc3d's dx is the length, dy the width."""
    x, y, z, dx, dy, dz, heading = 10.5, -3.25, 0.75, 4.5, 1.875, 1.5, 0.25
    box = b"".join(_field(n, 1, struct.pack("<d", v))
                   for n, v in ((1, x), (2, y), (3, z), (4, dy), (5, dx), (6, dz), (7, heading)))
    label = _field(1, 2, box) + _field(3, 0, _varint(4)) + _field(4, 2, b"7")
    obj = (_field(1, 2, label) + _field(2, 5, struct.pack("<f", 0.5)) + _field(4, 2, b"segment-a")
           + _field(5, 0, _varint(1_557_000_000_123_456)))
    path = write_objects(tmp_path / "one.bin", [{"context_name": "segment-a", "timestamp": 1_557_000_000_123_456,
                                                 "boxes": [[x, y, z, dx, dy, dz, heading]], "types": ["Cyclist"],
                                                 "scores": [0.5], "ids": [7]}])
    assert path.read_bytes() == _field(1, 2, obj)


def test_round_trip_and_defaults(tmp_path):
    frames = [{"context_name": "s1", "timestamp": 20, "boxes": np.array([[1, 2, 3, 4, 2, 1.5, 0.1, 3.0, -1.0],
                                                                         [5, 6, 0, 1, 1, 2, -3.0, 0.0, 0.5]]),
               "types": np.array([1, 2]), "ids": ["a", "b"], "num_points": [100, 3], "difficulty": [1, 2],
               "tracking_difficulty": [1, 2]},
              {"context_name": "s1", "timestamp": 10, "boxes": np.zeros((0, 7)), "types": []},
              {"context_name": "s0", "timestamp": 10, "boxes": [[9, 9, 9, 1, 1, 1, 0, 0, 0]], "types": ["SIGN"]}]
    read = read_objects(write_objects(tmp_path / "gt.bin", frames))
    assert list(read) == [("s1", 20), ("s0", 10)]  # frames in file order; one without boxes leaves no trace
    a = read[("s1", 20)]
    np.testing.assert_array_equal(a["boxes"], frames[0]["boxes"])
    assert a["types"].tolist() == ["vehicle", "pedestrian"] and a["ids"].tolist() == ["a", "b"]
    assert a["scores"].tolist() == [1.0, 1.0]  # no score written: metrics.proto's default, a ground truth's
    assert a["num_points"].tolist() == [100, 3] and a["difficulty"].tolist() == [1, 2]
    assert a["tracking_difficulty"].tolist() == [1, 2] and not a["overlap_with_nlz"].any()
    assert read[("s0", 10)]["types"].tolist() == ["sign"]
    scored = read_objects(write_objects(tmp_path / "pd.bin", [frames[2] | {"boxes": [[9, 9, 9, 1, 1, 1, 0]],
                                                                           "scores": [0.3]}]))
    assert scored[("s0", 10)]["boxes"].shape == (1, 7)  # no speeds in the file: 7 columns
    assert scored[("s0", 10)]["scores"][0] == pytest.approx(0.3)  # a float field


def test_bad_files_and_frames_are_named(tmp_path):
    path = write_objects(tmp_path / "ok.bin", [{"context_name": "s", "timestamp": 1, "boxes": [[0, 0, 0, 1, 1, 1, 0]],
                                                "types": ["vehicle"], "scores": [0.9]}])
    cut = tmp_path / "cut.bin"
    cut.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DataFormatError, match="cut.bin.*not a Waymo Objects protobuf"):
        read_objects(cut)
    with pytest.raises(DataFormatError, match="missing.bin.*no such file"):
        read_objects(tmp_path / "missing.bin")
    camera = message_class("Objects")()
    camera.objects.add(context_name="s", camera_name=1).object.box.length = 1.0
    (tmp_path / "camera.bin").write_bytes(camera.SerializeToString())
    with pytest.raises(DataFormatError, match="camera.bin.*1 camera objects"):
        read_objects(tmp_path / "camera.bin")
    frame = {"context_name": "s", "timestamp": 5, "boxes": [[0, 0, np.nan, 1, 1, 1, 0]], "types": ["vehicle"]}
    with pytest.raises(DataFormatError, match=r"out.bin \(frame 0: s 5\).*box 0 is not finite"):
        write_objects(tmp_path / "out.bin", [frame])
    with pytest.raises(DataFormatError, match="unknown Waymo object types.*'car'"):
        write_objects(tmp_path / "out.bin", [frame | {"boxes": [[0] * 7], "types": ["Car"]}])
    with pytest.raises(DataFormatError, match="2 scores for 1 boxes"):
        write_objects(tmp_path / "out.bin", [frame | {"boxes": [[0] * 7], "scores": [0.5, 0.5]}])
    assert not (tmp_path / "out.bin").exists()  # nothing half-written


def _gt(rows, context="s", timestamp=0):
    """rows: (x, y, z, type, points, detection difficulty, id) -> a read_objects frame."""
    boxes = np.array([[x, y, z, 4.0, 2.0, 1.5, 0.0] for x, y, z, *_ in rows]).reshape(-1, 7)
    return {"boxes": boxes, "types": np.array([r[3] for r in rows], "<U10"), "scores": np.ones(len(rows)),
            "ids": np.array([r[6] for r in rows], str), "num_points": np.array([r[4] for r in rows]),
            "difficulty": np.array([r[5] for r in rows]), "tracking_difficulty": np.array([r[5] for r in rows]),
            "overlap_with_nlz": np.zeros(len(rows), bool)}


def _pd(rows):
    """rows: (x, y, z, type, score, id) -> a read_objects frame of predictions."""
    frame = _gt([(x, y, z, t, 0, 0, i) for x, y, z, t, _, i in rows])
    frame["scores"] = np.array([r[4] for r in rows], float)
    return frame


def test_detection_levels_follow_the_official_tool():
    """No points: not scored; difficulty unset: LEVEL_2 at <= 5 points; a set level stands (pc3d.eval.waymo's own
    rule would make the 3-point LEVEL_1 box LEVEL_2)."""
    frame = detection_levels(_gt([(0, 0, 0, "vehicle", 0, 0, "a"), (5, 0, 0, "vehicle", 3, 0, "b"),
                                  (9, 0, 0, "vehicle", 3, 1, "c"), (13, 0, 0, "vehicle", 50, 0, "d"),
                                  (17, 0, 0, "vehicle", 50, 2, "e")]))
    assert frame["ids"].tolist() == ["b", "c", "d", "e"] and frame["levels"].tolist() == [2, 1, 1, 2]


def _line(lines, name):
    return dict(lines)[name]


def test_breakdowns_by_type_and_3d_range_over_both_files_frames():
    """A vehicle at (24, 0, 18) lies 30 m from the origin: RANGE [30, 50), although 24 m away in x / y; its
    prediction is found there. A frame only in the predictions counts: its false positive halves the AP."""
    gt = {("s", 0): _gt([(24, 0, 18, "vehicle", 50, 0, "a"), (10, 0, 0, "pedestrian", 50, 0, "p")])}
    pd = {("s", 0): _pd([(24, 0, 18, "vehicle", 0.9, "x")]), ("s", 1): _pd([(40, 0, 0, "vehicle", 0.95, "y")])}
    lines = detection_breakdowns(pd, gt)
    assert [n for n, _ in lines][:4] == ["OBJECT_TYPE_TYPE_VEHICLE", "OBJECT_TYPE_TYPE_PEDESTRIAN",
                                         "OBJECT_TYPE_TYPE_SIGN", "OBJECT_TYPE_TYPE_CYCLIST"]
    near, mid = _line(lines, "RANGE_TYPE_VEHICLE_[0, 30)"), _line(lines, "RANGE_TYPE_VEHICLE_[30, 50)")
    assert near["LEVEL_1"]["num_gt"] == 0 and mid["LEVEL_1"]["num_gt"] == 1
    # both predictions lie in [30, 50) and the true one ranks below the false one: the one real PR point is
    # precision 1/2 at recall 1, and the official code gives recall 0 the next point's precision: AP 0.5
    assert mid["LEVEL_1"]["AP"] == pytest.approx(0.5)
    assert _line(lines, "OBJECT_TYPE_TYPE_VEHICLE")["LEVEL_1"]["AP"] == pytest.approx(0.5)
    alone = detection_breakdowns({k: v for k, v in pd.items() if k == ("s", 0)}, gt)
    assert _line(alone, "OBJECT_TYPE_TYPE_VEHICLE")["LEVEL_1"]["AP"] == pytest.approx(1.0)
    assert _line(alone, "OBJECT_TYPE_TYPE_PEDESTRIAN")["LEVEL_1"]["AP"] == 0.0


def test_tracking_keeps_every_box_and_the_first_of_a_repeated_id():
    """The tracking tool scores boxes without points too (a miss here), and of two predictions with one id in a
    frame the first in the file above the cutoff stands, the other is ignored (mot.cc): MOTA 1/2 from the miss
    alone. pc3d's own tracking evaluation refuses the repeated id."""
    gt = {("s", t): _gt([(10, 0, 0, "vehicle", 50, 0, "a"), (30, 0, 0, "vehicle", 0, 0, "b")], timestamp=t)
          for t in (0, 1)}
    pd = {("s", t): _pd([(10, 0, 0, "vehicle", 0.9, "h"), (60, 0, 0, "vehicle", 0.95, "h")]) for t in (0, 1)}
    vehicle = _line(tracking_breakdowns(pd, gt), "OBJECT_TYPE_TYPE_VEHICLE")["LEVEL_1"]
    assert (vehicle["MOTA"], vehicle["miss"], vehicle["fp"], vehicle["mismatch"]) == pytest.approx((0.5, 0.5, 0, 0))
    frames = [[{**gt[("s", t)], "levels": np.ones(2)} for t in (0, 1)]], [[pd[("s", t)] for t in (0, 1)]]
    with pytest.raises(DataFormatError, match="predicted vehicle id 'h' appears twice"):
        waymo_tracking_eval(*frames, ("vehicle",))
    with pytest.raises(ConfigError, match="duplicate_ids"):
        waymo_tracking_eval(*frames, ("vehicle",), duplicate_ids="last")


def test_an_unmatched_prediction_in_a_no_label_zone_is_not_a_false_positive(tmp_path):
    """metrics_utils.cc's IsFP and mot.cc: a prediction flagged overlap_with_nlz counts when it matches and is
    ignored when it does not. The false one outranks the true one: AP 0.5 and MOTA 0 when counted, 1 when
    flagged; flagging the true one changes nothing. The flag survives the file."""
    gt = {("s", t): _gt([(10, 0, 0, "vehicle", 50, 0, "a")], timestamp=t) for t in (0, 1)}
    pd = {("s", t): _pd([(10, 0, 0, "vehicle", 0.9, "h"), (40, 0, 0, "vehicle", 0.95, "z")]) for t in (0, 1)}

    def scores(flags):
        frames = {k: {**v, "overlap_with_nlz": np.array(flags)} for k, v in pd.items()}
        path = write_objects(tmp_path / "pd.bin", [{"context_name": c, "timestamp": t, **v}
                                                   for (c, t), v in frames.items()])
        frames = read_objects(path)
        detection = _line(detection_breakdowns(frames, gt), "OBJECT_TYPE_TYPE_VEHICLE")["LEVEL_1"]
        tracking = _line(tracking_breakdowns(frames, gt), "OBJECT_TYPE_TYPE_VEHICLE")["LEVEL_1"]
        return detection["AP"], tracking["MOTA"], tracking["fp"]

    assert scores([False, False]) == pytest.approx((0.5, 0.0, 0.0))  # MOTA <= 0 at every cutoff: zeros
    assert scores([False, True]) == pytest.approx((1.0, 1.0, 0.0))
    assert scores([True, False]) == pytest.approx((0.5, 0.0, 0.0))


@pytest.fixture(scope="module")
def segment_world(tmp_path_factory) -> Path:
    from pc3d.data.create import create_waymo
    from pc3d.sim.api import simulate_dataset

    root = simulate_dataset("waymo", tmp_path_factory.mktemp("waymo"), frames=12, seed=3, columns=512,
                            sequence_length=12)
    create_waymo(root)
    return root


def test_eval_waymo_scores_written_files_as_pc3d_scores_the_predictions(segment_world, tmp_path, capsys):
    """create_data's ground-truth file and tools/test.py's predictions file (the simulated boxes moved by 0.1 m
    noise, random scores), scored by tools/eval_waymo.py: each class's AP / APH are pc3d.eval.waymo's on the same
    boxes (the simulated world sets difficulty as the tool's rule would: LEVEL_2 at <= 5 points)."""
    sys.path.insert(0, str(ROOT / "tools"))
    import eval_waymo

    from pc3d.data import WaymoDataset
    from pc3d.eval.waymo import waymo_eval

    data = WaymoDataset(segment_world, "training")
    rng = np.random.default_rng(0)
    gts, preds = [], []
    for segment, timestamp, _ in data.frames:
        annos = data.read_boxes(segment, timestamp)
        keep = np.isin(annos["name"], data.class_names) & (annos["num_points"] > 0)
        boxes = annos["box"][keep, :7].astype(np.float64)
        boxes[:, :2] += rng.normal(0, 0.1, (len(boxes), 2))
        preds.append({"boxes": boxes, "scores": rng.uniform(0.1, 1.0, len(boxes)),
                      "labels": np.array([data.class_names.index(n) + 1 for n in annos["name"][keep]])})
        gts.append({"boxes": annos["box"], "types": annos["name"], "num_points": annos["num_points"],
                    "difficulty": annos["difficulty"]})
    data.write_predictions(preds, tmp_path)
    expected = waymo_eval(gts, [{"boxes": p["boxes"], "scores": p["scores"],
                                 "types": np.asarray(data.class_names)[p["labels"] - 1]} for p in preds])
    gt_file = segment_world / "waymo_gt_objects_training.bin"
    assert eval_waymo.main([str(tmp_path / "training" / "objects.bin"), str(gt_file),
                            "--json", str(tmp_path / "m.json")]) == 0
    printed = capsys.readouterr().out
    assert "12 frames (0 without predictions)" in printed
    for cls in ("vehicle", "pedestrian", "cyclist"):
        for level in ("LEVEL_1", "LEVEL_2"):
            r = expected[cls][level]
            assert f"OBJECT_TYPE_TYPE_{cls.upper()}_{level}: [mAP {r['AP']:.6g}] [mAPH {r['APH']:.6g}]" in printed
    assert 0.5 < expected["vehicle"]["LEVEL_1"]["AP"] < 1.0  # the noise costs something, not everything
    assert '"RANGE_TYPE_CYCLIST_[50, +inf)"' in (tmp_path / "m.json").read_text()

    # --range: the boxes of both files with centres in the x / y range, as the Waymo hook scores a cropped recipe
    crop = [-20.0, -20.0, -5.0, 20.0, 20.0, 5.0]
    inside = [(np.abs(g["boxes"][:, :2]) < 20).all(1) for g in gts], [(np.abs(p["boxes"][:, :2]) < 20).all(1)
                                                                     for p in preds]
    cropped = waymo_eval([{k: v[m] for k, v in g.items()} for g, m in zip(gts, inside[0], strict=True)],
                         [{"boxes": p["boxes"][m], "scores": p["scores"][m],
                           "types": np.asarray(data.class_names)[p["labels"][m] - 1]}
                          for p, m in zip(preds, inside[1], strict=True)])["vehicle"]["LEVEL_2"]
    assert eval_waymo.main([str(tmp_path / "training" / "objects.bin"), str(gt_file), "--range",
                            *map(str, crop)]) == 0
    assert (f"OBJECT_TYPE_TYPE_VEHICLE_LEVEL_2: [mAP {cropped['AP']:.6g}] [mAPH {cropped['APH']:.6g}]"
            in capsys.readouterr().out)
    assert cropped["num_gt"] < expected["vehicle"]["LEVEL_2"]["num_gt"]


def test_tracks_written_by_track_tool_score_as_the_tracking_tool(segment_world, tmp_path, capsys):
    """tools/truth_detections.py's boxes, tracked by tools/track.py, whose objects.bin tools/eval_waymo.py --tracking
    scores against create_data's ground-truth file: every class tracked whole (MOTA 1, no miss, mismatch or false
    positive), as tools/eval_tracking.py scores the same tracks from the parquet files."""
    sys.path.insert(0, str(ROOT / "tools"))
    import eval_waymo
    import track
    import truth_detections

    assert truth_detections.main([str(segment_world), "--split", "training", "--out", str(tmp_path / "det")]) == 0
    assert track.main([str(tmp_path / "det"), str(segment_world), "--split", "training",
                       "--out", str(tmp_path / "tracks")]) == 0
    assert "objects.bin (Waymo's Objects protobuf" in capsys.readouterr().out
    gt_file = segment_world / "waymo_gt_objects_training.bin"
    assert eval_waymo.main([str(tmp_path / "tracks" / "objects.bin"), str(gt_file), "--tracking"]) == 0
    lines = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines() if "_LEVEL_" in line)
    for cls in ("VEHICLE", "PEDESTRIAN", "CYCLIST"):
        for level in ("1", "2"):
            line = lines[f"OBJECT_TYPE_TYPE_{cls}_LEVEL_{level}"]
            assert line.startswith("[MOTA 1] [MOTP ") and line.endswith("[Miss 0] [Mismatch 0] [FP 0]"), (cls, line)


def test_a_box_and_itself_turned_by_pi_overlap_whole():
    """pc3d's IoU of a box with the same box turned by pi is 1 (Waymo's polygon intersection returns 0 for about 1
    in 100 such exact twins: the one difference on Waymo's example files, README)."""
    from pc3d.geometry import iou_3d

    rng = np.random.default_rng(0)
    boxes = np.column_stack([rng.uniform(-60, 60, (500, 2)), rng.uniform(-1, 2, 500), rng.uniform(1, 6, 500),
                             rng.uniform(0.5, 3, 500), rng.uniform(1, 3, 500), rng.uniform(-np.pi, np.pi, 500)])
    turned = boxes.copy()
    turned[:, 6] = np.where(boxes[:, 6] > 0, boxes[:, 6] - np.pi, boxes[:, 6] + np.pi)
    ious = np.array([float(np.asarray(iou_3d(a[None], b[None]))[0, 0]) for a, b in zip(boxes, turned, strict=True)])
    np.testing.assert_allclose(ious, 1.0, atol=1e-9)


# Waymo 3D semantic segmentation: the metric's rules by hand, the file's bytes, and the files of a simulated world

def test_waymo_segmentation_iou_by_hand():
    """Car: 4 points, 3 right, 1 predicted undefined (a miss), and 2 undefined points predicted car (not counted):
    3 / 4. Road: 2 points, 1 right, 1 predicted pedestrian: 1 / 2; pedestrian: 0 / 1. The 19 classes neither
    labelled nor predicted on a labelled point score 1: mIoU (0.75 + 0.5 + 0 + 19) / 22."""
    from pc3d.eval.waymo_segmentation import waymo_confusion, waymo_segmentation_iou

    gt = np.array([1, 1, 1, 1, 0, 0, 18, 18])
    pred = np.array([1, 1, 1, 0, 1, 1, 18, 7])
    result = waymo_segmentation_iou(waymo_confusion(pred, gt))
    assert result["iou"][[0, 17, 6]].tolist() == pytest.approx([0.75, 0.5, 0.0])
    assert np.delete(result["iou"], [0, 17, 6]).tolist() == [1.0] * 19
    assert result["mIoU"] == pytest.approx(20.25 / 22, abs=1e-7)
    with pytest.raises(DataFormatError, match="3 predicted labels for 8 labels"):
        waymo_confusion(pred[:3], gt)


def test_segmentation_file_bytes_and_round_trip(tmp_path):
    """One frame of a 1 x 2 range image, classes 5 and 7: MatrixInt32 data packed (field 1), shape dims unpacked
    (field 2 > 1), zlib-compressed in RangeImage field 6, under a TOP Laser (name 1, returns 2 and 3) of a
    SegmentationFrame (labels 1, context_name 2, frame_timestamp_micros 3); and read back."""
    import zlib

    from pc3d.eval.waymo_segmentation import read_segmentation_frames, write_segmentation_frames

    matrix = _field(1, 2, bytes([0, 5, 0, 7])) + _field(2, 2, _field(1, 0, b"\x01") + _field(1, 0, b"\x02")
                                                         + _field(1, 0, b"\x02"))
    empty = _field(2, 2, _field(1, 0, b"\x01") + _field(1, 0, b"\x02") + _field(1, 0, b"\x02"))  # all zeros
    laser = (_field(1, 0, b"\x01") + _field(2, 2, _field(6, 2, zlib.compress(matrix)))
             + _field(3, 2, _field(6, 2, zlib.compress(_field(1, 2, bytes(4)) + empty[0:]))))
    frame = _field(1, 2, laser) + _field(2, 2, b"seg") + _field(3, 0, _varint(42))
    path = write_segmentation_frames(tmp_path / "p.bin", [{"context_name": "seg", "timestamp": 42,
                                                          "returns": {1: [[5, 7]], 2: [[0, 0]]}}])
    assert path.read_bytes() == _field(1, 2, frame)
    read = read_segmentation_frames(path)
    assert read[("seg", 42)]["lasers"] == [1] and read[("seg", 42)][1].tolist() == [[5, 7]]
    with pytest.raises(DataFormatError, match=r"return 1\): expected an \[H, W\] image of classes 0..22"):
        write_segmentation_frames(tmp_path / "q.bin", [{"context_name": "seg", "timestamp": 42,
                                                       "returns": {1: [[23, 0]], 2: [[0, 0]]}}])


def test_segmentation_files_are_scored_frame_by_frame(tmp_path):
    """A labelled frame without a prediction counts as all undefined (misses); a ground-truth frame without
    labels is skipped; a prediction of another size is named."""
    from pc3d.eval.waymo_segmentation import score_segmentation_files

    gt = {("s", 0): {"lasers": [1], 1: np.array([[1, 1]]), 2: np.array([[0, 0]])},
          ("s", 1): {"lasers": [1], 1: np.array([[1, 0]]), 2: np.array([[0, 0]])},
          ("s", 2): {"lasers": []}}
    pred = {("s", 0): {"lasers": [1], 1: np.array([[1, 1]]), 2: np.array([[0, 0]])}}
    result = score_segmentation_files(pred, gt)
    assert (result["frames"], result["missing"]) == (2, 1)
    assert result["iou"][0] == pytest.approx(2 / 3)  # car: 2 right, 1 missed in the frame without a prediction
    with pytest.raises(DataFormatError, match="return 1: 1 labels for 2 ground-truth pixels"):
        score_segmentation_files({("s", 0): pred[("s", 0)] | {1: np.array([[1]])}}, gt)
    with pytest.raises(DataFormatError, match=r"labels lasers \[1, 2\]"):
        score_segmentation_files({}, {("s", 3): {"lasers": [1, 2]}})


def test_segmentation_hook_reports_waymos_miou():
    """SegmentationEvaluator(official="waymo"): mIoU_official by Waymo's rules, the headline over the classes
    present unchanged."""
    from types import SimpleNamespace

    from pc3d.data.waymo_seg import WAYMO_SEG_CLASSES
    from pc3d.eval.hooks import SegmentationEvaluator

    data = SimpleNamespace(class_names=list(WAYMO_SEG_CLASSES), ignore_index=0)
    preds = [{"pred_labels": np.array([1, 1, 1, 0, 1, 1, 18, 7]), "point_labels": np.array([1, 1, 1, 1, 0, 0, 18, 18])}]
    m = SegmentationEvaluator(official="waymo")(data, preds)
    assert m["mIoU_official"] == pytest.approx(100 * 20.25 / 22, abs=1e-5)
    assert m["mIoU"] == pytest.approx(100 * (0.75 + 0.5) / 2)  # car and road present; the undefined one a car miss
    with pytest.raises(ConfigError, match="official must be"):
        SegmentationEvaluator(official="nuscenes")


def test_eval_waymo_segmentation_scores_written_files_as_the_hook(segment_world, tmp_path, capsys):
    """The simulated segment's labels with a fifth of them changed, written by WaymoSegmentationDataset's
    write_predictions (segmentation.bin) and scored by tools/eval_waymo.py --segmentation against create_data's
    ground-truth file: the mIoU the hook gives the same predictions (Waymo's rule)."""
    sys.path.insert(0, str(ROOT / "tools"))
    import eval_waymo

    from pc3d.data.waymo_seg import WaymoSegmentationDataset
    from pc3d.eval.hooks import SegmentationEvaluator

    data = WaymoSegmentationDataset(segment_world, "training")
    rng = np.random.default_rng(0)
    preds = []
    for index in range(len(data)):
        labels = data.load(index)["point_labels"]
        swapped = rng.choice(np.unique(labels), len(labels))  # among the classes there, and undefined
        preds.append({"pred_labels": np.where(rng.random(len(labels)) < 0.2, swapped, labels), "point_labels": labels})
    data.write_predictions(preds, tmp_path)
    expected = SegmentationEvaluator(official="waymo")(data, preds)["mIoU_official"] / 100
    assert 0.5 < expected < 0.99
    truth = segment_world / "waymo_gt_segmentation_training.bin"
    assert eval_waymo.main([str(tmp_path / "segmentation.bin"), str(truth), "--segmentation"]) == 0
    printed = capsys.readouterr().out
    assert "12 frames found in prediction.\n12 frames found in groundtruth.\n" in printed
    assert f"miou={expected:.6g}" in printed, printed


def test_eval_waymo_reports_a_bad_file_in_one_line(tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "tools"))
    import eval_waymo

    (tmp_path / "bad.bin").write_bytes(b"\x0a\xff\xff")
    assert eval_waymo.main([str(tmp_path / "bad.bin"), str(tmp_path / "bad.bin")]) == 2
    assert "eval_waymo: error: " in capsys.readouterr().err
    assert eval_waymo.main([str(tmp_path / "bad.bin"), str(tmp_path / "bad.bin"), "--segmentation"]) == 2
    assert "not a Waymo SegmentationFrameList protobuf" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        eval_waymo.main([str(tmp_path / "bad.bin"), str(tmp_path / "bad.bin"), "--segmentation", "--range",
                         *["0"] * 6])
    assert "--range crops boxes" in capsys.readouterr().err


def test_objects_without_speeds_in_a_file_with_speeds_get_nan(tmp_path):
    """A frame written with 7 columns beside one with 9: its objects carry no metadata, so their speeds are unknown
    (NaN, which AVE skips), not 0 m/s."""
    frames = [{"context_name": "s", "timestamp": 1, "boxes": [[0, 0, 0, 1, 1, 1, 0, 2.0, -1.0]], "types": ["vehicle"]},
              {"context_name": "s", "timestamp": 2, "boxes": [[5, 0, 0, 1, 1, 1, 0]], "types": ["vehicle"]}]
    read = read_objects(write_objects(tmp_path / "mixed.bin", frames))
    assert read[("s", 1)]["boxes"][0, 7:].tolist() == [2.0, -1.0]
    assert np.isnan(read[("s", 2)]["boxes"][0, 7:]).all()
    again = read_objects(write_objects(tmp_path / "again.bin", [{"context_name": "s", "timestamp": t, **read["s", t]}
                                                                for t in (1, 2)]))
    np.testing.assert_array_equal(again[("s", 2)]["boxes"], read[("s", 2)]["boxes"])  # NaN speeds stay unset
    with pytest.raises(DataFormatError, match="box 0 is not finite"):
        write_objects(tmp_path / "half.bin", [frames[0] | {"boxes": [[0, 0, 0, 1, 1, 1, 0, 2.0, np.nan]]}])
