"""Tracking: the Waymo tracking metrics on hand-computed sequences (pc3d.eval.waymo_tracking), the greedy tracker
(pc3d.track), and the chain tools/infer.py --track -> v2 parquet -> tools/eval_tracking.py on a simulated
segment, where the ground-truth boxes tracked through the ego vehicle's motion score MOTA 100."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from pc3d.errors import ConfigError, DataFormatError
from pc3d.eval.waymo_tracking import tracking_table, waymo_tracking_eval
from pc3d.track import GreedyTracker, max_distances, max_speeds, parse_gates

ROOT = Path(__file__).resolve().parents[1]


def box(x: float) -> list[float]:
    """A 4 x 2 x 2 m box at (x, 0): two of them shifted by 1 m along x overlap with IoU 12 / 20 = 0.6."""
    return [x, 0.0, 1.0, 4.0, 2.0, 2.0, 0.0]


def gt_frame(objects, cls="vehicle", points=None):
    """objects: [(id, x)]; points: the LiDAR points of each (default 100: LEVEL_1)."""
    return {"boxes": np.array([box(x) for _, x in objects]).reshape(-1, 7), "types": np.array([cls] * len(objects)),
            "num_points": np.array(points or [100] * len(objects)), "ids": np.array([i for i, _ in objects])}


def dt_frame(hypotheses, cls="vehicle"):
    """hypotheses: [(track id, x) or (track id, x, score)]."""
    return {"boxes": np.array([box(h[1]) for h in hypotheses]).reshape(-1, 7),
            "types": np.array([cls] * len(hypotheses)), "ids": np.array([h[0] for h in hypotheses]),
            "scores": np.array([h[2] if len(h) > 2 else 1.0 for h in hypotheses])}


def mot(gt, dt, cls="vehicle", level="LEVEL_1") -> dict:
    return waymo_tracking_eval([gt], [dt], (cls,))[cls][level]


def test_swapped_tracks_are_two_mismatches_and_an_extra_box_a_false_positive():
    gt = [gt_frame([("A", 0), ("B", 10)]), gt_frame([("A", 0), ("B", 10)]), gt_frame([("A", 0)])]
    dt = [dt_frame([(1, 0), (2, 10)]), dt_frame([(2, 0), (1, 10)]), dt_frame([(2, 0), (3, 20)])]
    r = mot(gt, dt)
    # 5 objects; frame 1: A and B each change hypothesis (2 mismatches); frame 2: A keeps 2, track 3 is a FP
    assert r["MOTA"] == pytest.approx(1 - 3 / 5) and r["mismatch"] == pytest.approx(2 / 5)
    assert r["fp"] == pytest.approx(1 / 5) and r["miss"] == 0 and r["MOTP"] == pytest.approx(0.0)
    assert r["num_gt"] == 5 and r["score_cutoff"] == 0.0  # every cutoff ties: the lowest is reported


def test_a_hypothesis_taken_from_an_object_gone_from_the_frame_is_an_eviction():
    first = (gt_frame([("o1", 0), ("o2", 10)]), dt_frame([("h1", 0), ("h2", 10)]))
    # o1 moves onto h2 and o2 leaves: o1 changed hypothesis (1) and h2 was o2's (1, mot.cc's eviction)
    gone = mot([first[0], gt_frame([("o1", 10)])], [first[1], dt_frame([("h2", 10)])])
    assert gone["MOTA"] == pytest.approx(1 - 2 / 3) and gone["mismatch"] == pytest.approx(2 / 3)
    # o2 still in the frame but unmatched: a miss, not also a mismatch
    missed = mot([first[0], gt_frame([("o1", 10), ("o2", 30)])], [first[1], dt_frame([("h2", 10)])])
    assert missed["MOTA"] == pytest.approx(1 - 2 / 4) and missed["miss"] == pytest.approx(1 / 4)
    assert missed["mismatch"] == pytest.approx(1 / 4)


def test_a_valid_earlier_pair_is_kept_over_a_better_overlap():
    gt = [gt_frame([("A", 0)], "pedestrian"), gt_frame([("A", 0)], "pedestrian")]
    dt = [dt_frame([("h1", 0)], "pedestrian"), dt_frame([("h1", 1), ("h2", 0)], "pedestrian")]
    r = mot(gt, dt, "pedestrian")
    # IoU(A, h1) = 0.6 >= 0.5 keeps (A, h1); h2 (IoU 1) is a FP; MOTP = mean(1 - IoU) = (0 + 0.4) / 2
    assert r["MOTA"] == pytest.approx(0.5) and r["mismatch"] == 0 and r["MOTP"] == pytest.approx(0.2)
    # for vehicles (0.7) the pair breaks: A takes h2 (a mismatch) and h1 is a FP, MOTA 0: reported as zeros
    v = mot([gt_frame([("A", 0)])] * 2, [dt_frame([("h1", 0)]), dt_frame([("h1", 1), ("h2", 0)])])
    assert v == {"MOTA": 0.0, "MOTP": 0.0, "miss": 0.0, "mismatch": 0.0, "fp": 0.0, "score_cutoff": 0.0, "num_gt": 2}
    table = tracking_table(waymo_tracking_eval([[gt_frame([("A", 0)])] * 2],
                                               [[dt_frame([("h1", 0)]), dt_frame([("h1", 1), ("h2", 0)])]],
                                               ("vehicle",)), ["Vehicle"], "title")
    assert "| Vehicle | 1 | 0.00 | 0.00 | 0.00 |" in table
    assert "No score cutoff gives Vehicle LEVEL_1, Vehicle LEVEL_2 a MOTA above 0" in table


def test_levels_and_the_best_score_cutoff():
    gt = [gt_frame([("A", 0), ("B", 10), ("C", 20)], points=[100, 3, 100])]  # B: 3 points, LEVEL_2
    dt = [dt_frame([(1, 0, 0.9), (2, 20, 0.9), (3, 40, 0.05)])]
    r = waymo_tracking_eval([gt], [dt], ("vehicle",))["vehicle"]
    # the FP scores 0.05: from cutoff 0.06 on it is gone; an unmatched LEVEL_2 object is no LEVEL_1 object
    assert r["LEVEL_1"] == pytest.approx({"MOTA": 1.0, "MOTP": 0.0, "miss": 0.0, "mismatch": 0.0, "fp": 0.0,
                                          "score_cutoff": 0.06, "num_gt": 2})
    assert r["LEVEL_2"]["MOTA"] == pytest.approx(2 / 3) and r["LEVEL_2"]["num_gt"] == 3
    found = waymo_tracking_eval([gt], [[dt[0] | dt_frame([(1, 0, .9), (2, 20, .9), (4, 10, .9)])]], ("vehicle",))
    assert found["vehicle"]["LEVEL_1"]["num_gt"] == 3  # a matched LEVEL_2 object counts at LEVEL_1
    table = tracking_table(found, ["Vehicle"], "title")
    assert "| Vehicle | 1 | 100.00 |" in table


def test_metric_input_errors():
    with pytest.raises(DataFormatError, match="id 'A' appears twice"):
        mot([gt_frame([("A", 0), ("A", 10)])], [dt_frame([])])
    with pytest.raises(DataFormatError, match="2 ground-truth frames but 1 prediction frames"):
        mot([gt_frame([]), gt_frame([])], [dt_frame([])])
    with pytest.raises(ConfigError, match="not evaluated"):
        waymo_tracking_eval([], [], ("car",))


def gates(**overrides) -> np.ndarray:
    return max_distances(["Vehicle", "Pedestrian"], overrides)


def test_tracker_keeps_ids_of_parallel_objects_and_starts_new_ones():
    tracker = GreedyTracker(gates())
    for k in range(10):  # two cars 3 m apart at 10 m/s, 10 Hz
        ids = tracker.update([[k * 1.0, 0.0], [k * 1.0, 3.0]], [1, 1], [0.9, 0.8], 0.1 * k)
        assert ids.tolist() == [0, 1]
    assert tracker.update([[10.0, 0.0], [50.0, 50.0]], [1, 1], [0.9, 0.9], 1.0).tolist() == [0, 2]


def test_detector_velocities_carry_a_fast_object_beyond_the_gate():
    def run(velocities: bool) -> list[int]:
        tracker = GreedyTracker(gates(Pedestrian=1.0))
        return [int(tracker.update([[2.0 * k, 0.0]], [2], [0.9], 0.1 * k,
                                   [[20.0, 0.0]] if velocities else None)[0]) for k in range(5)]

    assert run(True) == [0] * 5       # the detector says 20 m/s: each frame lies where the track predicts
    assert run(False) == [0, 1, 2, 3, 4]  # 2 m per frame, 1 m gate, no motion known for a new track


def test_hybrid_motion_takes_the_detector_velocity_for_a_new_track_then_its_own():
    def run(motion: str) -> list[int]:
        tracker = GreedyTracker(gates(Pedestrian=1.0), motion=motion)
        # 2 m per frame at 10 Hz; the detector gets the velocity right at the first frame only
        return [int(tracker.update([[2.0 * k, 0.0]], [2], [0.9], 0.1 * k, [[20.0 if k == 0 else 0.0, 0.0]])[0])
                for k in range(5)]

    assert run("detector") == [0, 0, 1, 2, 3]  # follows the later, wrong velocities
    assert run("own") == [0, 1, 2, 3, 4]       # ignores the detector: a new track cannot catch its next detection
    assert run("hybrid") == [0] * 5            # the first velocity starts it, its own displacement carries it
    assert run("either") == [0] * 5            # so does either: the detector's prediction stays behind, unused
    with pytest.raises(ConfigError, match="tracking motion 'kalman'"):
        GreedyTracker(gates(), motion="kalman")


def test_either_motion_finds_a_track_where_its_own_or_the_detector_velocity_puts_it():
    def run(motion: str) -> list[int]:
        tracker = GreedyTracker(gates(Pedestrian=1.0), motion=motion)
        # 2 m per frame at 10 Hz, the detector's velocity right every time; the third detection lies 0.8 m aside
        return [int(tracker.update([[2.0 * k, 0.8 if k == 2 else 0.0]], [2], [0.9], 0.1 * k, [[20.0, 0.0]])[0])
                for k in range(5)]

    assert run("hybrid") == [0, 0, 0, 1, 1]  # its own displacement turned 22 degrees and missed by 1.6 m
    assert run("detector") == [0] * 5
    assert run("either") == [0] * 5         # the detector's prediction, 0.8 m off, finds it


def test_second_stage_lets_a_new_track_take_a_detection_it_could_have_reached():
    def run(max_speed, detections=((0.0, 0.0), (5.0, 0.0), (10.0, 0.0), (15.0, 0.0))) -> list[list[int]]:
        tracker = GreedyTracker(gates(), motion="own", max_speed=max_speed)
        return [tracker.update([xy], [1], [0.9], 0.5 * k).tolist() for k, xy in enumerate(detections)]

    # a car at 10 m/s seen at 2 Hz: 5 m per frame, beyond the 4 m gate while its track has no motion of its own
    assert run(None) == [[0], [1], [2], [3]]
    assert run(max_speeds(["Vehicle", "Pedestrian"])) == [[0]] * 4  # 30 m/s reaches 15 m; then its own motion
    assert run(max_speeds(["Vehicle", "Pedestrian"], {"Vehicle": 8.0})) == [[0], [1], [2], [3]]  # 4 m reach
    # only a track seen once: an established track's own motion is not second-guessed
    assert run(max_speeds(["Vehicle", "Pedestrian"]), ((0.0, 0.0), (5.0, 0.0), (10.0, 0.0), (10.0, 8.0))) == \
        [[0], [0], [0], [1]]
    # the first stage goes first: a detection on an established track's prediction is not taken by a new one
    tracker = GreedyTracker(gates(), motion="own", max_speed=max_speeds(["Vehicle", "Pedestrian"]))
    tracker.update([[0.0, 0.0]], [1], [0.9], 0.0)
    tracker.update([[1.0, 0.0], [20.0, 0.0]], [1, 1], [0.9, 0.9], 0.5)   # track 0 at 2 m/s, track 1 new
    assert tracker.update([[2.0, 0.0]], [1], [0.5], 1.0).tolist() == [0]
    with pytest.raises(ConfigError, match="max_speed has 2 entries"):
        GreedyTracker(gates(), max_speed=[0.0, 30.0])


@pytest.mark.parametrize("empty", [np.zeros((0, 7)), np.zeros((0, 9)), np.zeros(0)])
def test_a_frame_without_detections_lets_the_tracks_coast_on(empty):
    from pc3d.track.world import update_in_world

    tracker = GreedyTracker(gates(), motion="own")
    ids = []
    for k, xs in enumerate([[0.0], [1.0], [], [3.0]]):  # a car at 10 m/s; nothing detected at the third frame
        boxes = np.array([box(x) for x in xs]) if xs else empty
        ids.append(update_in_world(tracker, boxes, [1] * len(xs), [0.9] * len(xs), np.eye(4), 0.1 * k)[0].tolist())
    assert ids == [[0], [0], [], [0]]


def test_own_motion_predicts_a_track_through_a_gap_of_up_to_max_age_frames():
    def run(gap: int) -> int:
        tracker = GreedyTracker(gates(), max_age=3)
        for k in range(3):
            first = tracker.update([[1.5 * k, 0.0]], [1], [0.9], 0.1 * k)
        for k in range(3, 3 + gap):
            tracker.update(np.zeros((0, 2)), [], [], 0.1 * k)
        k = 3 + gap  # the car drove on at 15 m/s while unseen: its coasting prediction is where it reappears
        return int(tracker.update([[1.5 * k, 0.0]], [1], [0.9], 0.1 * k)[0]) - int(first[0])

    assert run(3) == 0 and run(4) == 1


def test_classes_score_order_and_reset():
    tracker = GreedyTracker(gates())
    tracker.update([[0.0, 0.0]], [1], [0.9], 0.0)
    # a pedestrian at the car's spot does not take its track; of two cars, the higher score does
    assert tracker.update([[0.0, 0.0], [0.5, 0.0], [0.2, 0.0]], [2, 1, 1], [0.9, 0.3, 0.6], 0.1).tolist() == [1, 2, 0]
    tracker.reset()
    assert len(tracker) == 0 and tracker.update([[0.0, 0.0]], [1], [0.9], 0.0).tolist() == [3]  # ids stay unique
    with pytest.raises(ValueError, match="does not come after"):
        tracker.update([[0.0, 0.0]], [1], [0.9], 0.0)
    with pytest.raises(ConfigError, match="no tracking gate \\(metres\\) for classes \\['Sign'\\]"):
        max_distances(["Vehicle", "Sign"])
    assert parse_gates(["Sign=2", "Pedestrian=0.5"]) == {"Sign": 2.0, "Pedestrian": 0.5}
    for bad in ("Sign", "Sign=two", "Sign=-1", "Sign=0"):
        with pytest.raises(ConfigError, match="--track-distance '.*': expected CLASS=VALUE with VALUE > 0"):
            parse_gates([bad])
    assert parse_gates(["Sign=0"], "--track-max-speed", zero=True) == {"Sign": 0.0}
    with pytest.raises(ConfigError, match="--track-max-speed 'Sign=-1': expected CLASS=VALUE with VALUE >= 0"):
        parse_gates(["Sign=-1"], "--track-max-speed", zero=True)
    with pytest.raises(ConfigError, match="no tracking speed \\(m/s\\) for classes \\['Sign'\\]"):
        max_speeds(["Vehicle", "Sign"])


class Recorder:
    def __init__(self):
        self.ids = []

    def write(self, frame, pred):
        self.ids.append(pred["track_ids"].tolist())

    def close(self) -> str:
        return "recorded"


def test_tracked_output_moves_boxes_and_velocities_by_the_pose():
    from types import SimpleNamespace

    from pc3d.infer.tracking import TrackedOutput

    def run(poses: bool, velocity: bool) -> list[list[int]]:
        inner = Recorder()
        out = TrackedOutput(inner, GreedyTracker(gates(Pedestrian=1.0), motion="detector" if velocity else "own"))
        turn = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # the vehicle faces world +y
        for k in range(4):
            pose = np.eye(4)
            if poses:
                pose[:3, :3], pose[:3, 3] = turn, [0.0, 2.0 * k, 0.0]  # driving 20 m/s along world +y
            # a pedestrian standing still at world (0, 10) seen from the car, reported as moving 20 m/s along the
            # car's +x (world +y) when `velocity`: one id only if the pose moves the box and turns the velocity
            world = np.array([0.0, 10.0 + (20.0 * 0.1 * k if velocity else 0.0), 0.0])
            local = turn.T @ (world - pose[:3, 3]) if poses else world
            frame = SimpleNamespace(sequence="s", source="s", extra={"pose": pose, "timestamp": 100_000 * k})
            out.write(frame, {"boxes": np.array([[*local, 1, 1, 2, 0, 20.0 if velocity else 0.0, 0.0]]),
                              "scores": np.array([0.9]), "labels": np.array([2])})
        return inner.ids

    assert run(poses=True, velocity=False) == [[0]] * 4
    assert run(poses=True, velocity=True) == [[0]] * 4
    assert run(poses=False, velocity=True) == [[0], [1], [2], [3]]  # unturned, the velocity points the wrong way
    with pytest.raises(DataFormatError, match="no pose"):
        TrackedOutput(Recorder(), GreedyTracker(gates())).write(SimpleNamespace(sequence="s", source="f", extra={}),
                                                                {})


@pytest.fixture(scope="module")
def segment_world(tmp_path_factory) -> Path:
    from pc3d.sim.api import simulate_dataset

    return simulate_dataset("waymo", tmp_path_factory.mktemp("waymo"), frames=12, seed=3, columns=512,
                            sequence_length=12)


def test_ground_truth_tracked_through_ego_motion_scores_perfect_tracks(segment_world, tmp_path, capsys):
    """The simulated boxes as detections, moved by the vehicle poses into the world frame and tracked, written
    as tools/infer.py --track writes them and scored by tools/eval_tracking.py: MOTA 100, no mismatch."""
    sys.path.insert(0, str(ROOT / "tools"))
    import eval_tracking
    import pyarrow.parquet as pq

    from pc3d.data import WaymoDataset
    from pc3d.infer.outputs import DetectionOutput
    from pc3d.infer.sources import open_source
    from pc3d.infer.tracking import TrackedOutput

    data = WaymoDataset(segment_world, "training")
    names = data.class_names
    source = open_source(segment_world / "training", ("intensity", "elongation"), "training")
    source.with_poses = True
    ego = []
    out = TrackedOutput(DetectionOutput(tmp_path, {"_target_": "pc3d.data.WaymoDataset", "class_names": names},
                                        source, 3),
                        GreedyTracker(max_distances(names), motion="own"))
    for item in source.items:
        frame = source.read(item)
        gt = data.read_boxes(frame.extra["segment"], frame.extra["timestamp"])
        keep = gt["num_points"] > 0
        ego.append(frame.extra["pose"][:2, 3])
        out.write(frame, {"boxes": gt["box"][keep, :7], "scores": np.ones(keep.sum()),
                          "labels": np.array([names.index(n) + 1 for n in gt["name"][keep]])})
    assert np.linalg.norm(ego[-1] - ego[0]) > 5  # the vehicle drove: vehicle-frame boxes alone would drift
    assert "track ids:" in out.close()
    folder = tmp_path / "waymo" / "training" / "lidar_box"
    table = pq.read_table(next(folder.glob("*.parquet")))
    ids = table.column("key.laser_object_id").to_pylist()
    assert len(set(ids)) < len(ids) and all(i.isdigit() for i in ids)  # track ids repeat over frames
    assert eval_tracking.main([str(folder), str(segment_world), "--split", "training"]) == 0
    printed = capsys.readouterr().out
    assert "| Vehicle | 1 | 100.00 | 0.00 | 0.00 | 0.00 | 0.00 |" in printed, printed

    # the same boxes with ids shuffled in every frame: mismatches
    shuffled = table.set_column(table.column_names.index("key.laser_object_id"), "key.laser_object_id",
                                [[str(k) for k in range(len(ids))]])
    pq.write_table(shuffled, next(folder.glob("*.parquet")))
    eval_tracking.main([str(folder), str(segment_world), "--split", "training"])
    assert "| Vehicle | 1 | 100.00 |" not in capsys.readouterr().out


def test_renders_colour_boxes_by_track():
    from pc3d.viz import Scene
    from pc3d.viz.bev import render_bev

    boxes = np.array([[10.0, -5.0, 0.0, 4.0, 2.0, 1.5, 0.0], [10.0, 5.0, 0.0, 4.0, 2.0, 1.5, 0.0]])
    by_class = Scene(np.zeros((0, 4)), pred_boxes=boxes, pred_labels=np.array([1, 1]))
    by_track = Scene(np.zeros((0, 4)), pred_boxes=boxes, pred_labels=np.array([1, 1]), track_ids=np.array([0, 1]))
    assert np.array_equal(*by_class.pred_colors()) and not np.array_equal(*by_track.pred_colors())
    area = (0.0, -10.0, -3.0, 20.0, 10.0, 1.0)
    image = render_bev(np.zeros((0, 4)), pred_boxes=boxes, pred_labels=by_track.pred_labels, area=area,
                       resolution=0.1, pred_colors=by_track.pred_colors())
    colours = {tuple(c) for c in image.reshape(-1, 3).tolist()} - {(16, 16, 16)}
    want = {tuple(int(v) for v in (c * 255).astype(np.uint8)) for c in by_track.pred_colors()}
    assert want <= colours


def test_track_tool_tracks_written_detections(segment_world, tmp_path, capsys):
    """tools/track.py on detection files (the ground truth with its velocities, written by
    tools/truth_detections.py as tools/test.py writes a detector's): tracks on the velocities, scored 100 by
    tools/eval_tracking.py; a wrong segment is named."""
    sys.path.insert(0, str(ROOT / "tools"))
    import eval_tracking
    import track
    import truth_detections

    from pc3d.data import WaymoDataset
    from pc3d.data.waymo_parquet import read_box_predictions

    assert truth_detections.main([str(segment_world), "--split", "training", "--out", str(tmp_path / "det")]) == 0
    assert "1 segment(s), 12 frames," in capsys.readouterr().out
    frames = WaymoDataset(segment_world, "training").frames
    segment = frames[0][0]
    stamps = [t for s, t, _ in frames if s == segment]
    assert track.main([str(tmp_path / "det"), str(segment_world), "--split", "training",
                       "--out", str(tmp_path / "tracks")]) == 0
    assert ("velocities from the detector's velocities for new tracks, then their own motion or the detector's, "
            "whichever is nearer") in capsys.readouterr().out
    assert eval_tracking.main([str(tmp_path / "tracks"), str(segment_world), "--split", "training"]) == 0
    assert "| Vehicle | 1 | 100.00 | 0.00 | 0.00 | 0.00 | 0.00 |" in capsys.readouterr().out

    # every 3rd frame (12 -> 4): tracked and scored on those frames alone; the others are not predictions
    assert track.main([str(tmp_path / "det"), str(segment_world), "--split", "training", "--frame-step", "3",
                       "--out", str(tmp_path / "step3")]) == 0
    assert "1 segment(s), one frame in 3," in capsys.readouterr().out
    assert set(read_box_predictions(tmp_path / "step3" / f"{segment}.parquet")) == set(stamps[::3])
    assert eval_tracking.main([str(tmp_path / "step3"), str(segment_world), "--split", "training",
                               "--frame-step", "3"]) == 0
    out = capsys.readouterr().out
    assert "4 frames, one frame in 3," in out and "| Vehicle | 1 | 100.00 | 0.00 | 0.00 | 0.00 | 0.00 |" in out
    assert eval_tracking.main([str(tmp_path / "step3"), str(segment_world), "--split", "training"]) == 0
    out = capsys.readouterr().out  # scored on every frame, the 8 in between have no boxes
    assert "12 frames, 8 without prediction rows" in out and "| Vehicle | 1 | 100.00 |" not in out
    assert eval_tracking.main([str(tmp_path / "step3"), str(segment_world), "--split", "training",
                               "--frame-step", "2"]) == 2
    assert "scored with --frame-step 2" in capsys.readouterr().err
    for tool, out in ((eval_tracking, []), (track, ["--out", str(tmp_path / "t0")])):
        assert tool.main([str(tmp_path / "step3"), str(segment_world), "--split", "training", "--frame-step", "0",
                          *out]) == 2
        assert "--frame-step must be >= 1, got 0" in capsys.readouterr().err
    (tmp_path / "det" / f"{segment}.parquet").rename(tmp_path / "det" / "elsewhere.parquet")
    assert track.main([str(tmp_path / "det"), str(segment_world), "--split", "training", "--out",
                       str(tmp_path / "t2")]) == 2
    assert "segment elsewhere is not in" in capsys.readouterr().err


def test_truth_detections_keep_the_boxes_a_detector_could_see_and_add_the_noise_asked():
    from pc3d.track.truth import truth_detections

    n = 20_000
    rng = np.random.default_rng(0)
    gt = {"box": np.c_[rng.uniform(-50, 50, (n, 3)), rng.uniform(0.5, 5, (n, 3)), rng.uniform(-3, 3, (n, 3))],
          "name": rng.choice(["Vehicle", "Pedestrian", "Sign"], n), "num_points": rng.integers(0, 3, n)}
    gt["box"][::7, 7:9] = np.nan  # unknown velocities
    seen = (gt["name"] != "Sign") & (gt["num_points"] > 0)
    exact = truth_detections(gt, ("Vehicle", "Pedestrian"), np.random.default_rng(1))
    assert np.array_equal(exact["boxes"], np.nan_to_num(gt["box"][seen]))
    assert np.array_equal(exact["labels"], np.where(gt["name"][seen] == "Vehicle", 1, 2))
    assert np.all((exact["scores"] >= 0.5) & (exact["scores"] < 1))

    noisy = truth_detections(gt, ("Vehicle", "Pedestrian"), np.random.default_rng(1), centre=0.2, velocity=0.5,
                             drop=0.25)
    again = truth_detections(gt, ("Vehicle", "Pedestrian"), np.random.default_rng(1), centre=0.2, velocity=0.5,
                             drop=0.25)
    assert all(np.array_equal(noisy[k], again[k]) for k in noisy)
    assert abs(len(noisy["scores"]) / seen.sum() - 0.75) < 0.02
    # match each kept box to its ground truth by its unchanged z, sizes and heading
    rows = {tuple(b[2:7]): i for i, b in enumerate(np.nan_to_num(gt["box"]))}
    truth = np.nan_to_num(gt["box"])[[rows[tuple(b[2:7])] for b in noisy["boxes"]]]
    assert abs(np.std(noisy["boxes"][:, :2] - truth[:, :2]) - 0.2) < 0.01
    assert abs(np.std(noisy["boxes"][:, 7:9] - truth[:, 7:9]) - 0.5) < 0.02
    for bad in ({"centre": -0.1}, {"velocity": -1.0}, {"drop": 1.0}):
        with pytest.raises(ConfigError, match="noise must be"):
            truth_detections(gt, ("Vehicle",), rng, **bad)


def test_dropped_truth_detections_are_scored_as_misses(segment_world, tmp_path, capsys):
    """Half the ground-truth boxes dropped (tools/truth_detections.py --drop 0.5): the tracks of the rest miss
    about half the objects."""
    sys.path.insert(0, str(ROOT / "tools"))
    import eval_tracking
    import track
    import truth_detections

    assert truth_detections.main([str(segment_world), "--split", "training", "--out", str(tmp_path / "det"),
                                  "--drop", "0.5", "--centre", "0.05", "--seed", "3"]) == 0
    assert "drop 0.5" in capsys.readouterr().out
    assert track.main([str(tmp_path / "det"), str(segment_world), "--split", "training",
                       "--out", str(tmp_path / "tracks")]) == 0
    capsys.readouterr()
    assert eval_tracking.main([str(tmp_path / "tracks"), str(segment_world), "--split", "training"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| Vehicle | 1 |"))
    miss = float(row.split("|")[5])
    assert 30 < miss < 70, row  # all found (miss 0) if the boxes were not dropped


def test_eval_tracking_names_bad_files(segment_world, tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "tools"))
    import eval_tracking

    folder = tmp_path / "tracks"
    folder.mkdir()
    assert eval_tracking.main([str(folder), str(segment_world), "--split", "training"]) == 2
    assert "missing (1 of 1 segments have no prediction file" in capsys.readouterr().err
    segment = next((segment_world / "training" / "lidar").glob("*.parquet")).name
    (folder / segment).write_bytes(b"PAR1 not really")
    assert eval_tracking.main([str(folder), str(segment_world), "--split", "training"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(folder / segment) in err[0] and "Traceback" not in err[0]


def test_a_score_on_a_tracking_cutoff_meets_it_as_in_float32():
    """The official tracking tool compares float32 scores with float32 cutoffs: at 0.57 the true track scored 0.57
    stands alone (MOTA 1), the false one scored 0.565 is cut."""
    gt = [gt_frame([("A", 0)])]
    dt = [dt_frame([(1, 0, np.float32(0.57)), (2, 30, np.float32(0.565))])]
    for frame in dt:
        frame["scores"] = frame["scores"].astype(np.float32)
    r = mot(gt, dt)
    assert r["MOTA"] == pytest.approx(1.0) and r["score_cutoff"] == pytest.approx(0.57)


def test_an_iou_of_the_threshold_in_float32_matches_as_in_the_official_tracking_tool():
    """IoU 0.7 exactly (0.6999999999999998 in float64 arithmetic) meets the vehicle threshold, as float32 does."""
    gt = gt_frame([("A", 0)])
    gt["boxes"][0, 3:6] = (1.0, 2.0, 1.5)
    dt = dt_frame([(1, 0)])
    dt["boxes"][0, 3:6] = (0.7, 2.0, 1.5)
    assert mot([gt], [dt])["MOTA"] == pytest.approx(1.0)


def test_motp_is_the_mean_over_matches_not_objects():
    # two pedestrians, one matched at IoU 0.6 (box shifted 1 m), the other missed:
    # MOTA 1 - 1/2, MOTP = (1 - 0.6) / 1 match = 0.4 (averaged over the objects it would be 0.2)
    r = mot([gt_frame([("A", 0), ("B", 10)], "pedestrian")], [dt_frame([("h1", 1)], "pedestrian")], "pedestrian")
    assert r["MOTA"] == pytest.approx(0.5) and r["miss"] == pytest.approx(0.5)
    assert r["MOTP"] == pytest.approx(0.4, abs=1e-6)


def test_a_detection_exactly_at_the_gate_is_taken():
    # the assignment's rule is dist <= gate: 4.0 m from a still vehicle track (gate 4 m) keeps its id
    tracker = GreedyTracker(max_distances(["Vehicle"]))
    assert tracker.update([[0.0, 0.0]], [1], [0.9], 0.0).tolist() == [0]
    assert tracker.update([[4.0, 0.0]], [1], [0.9], 0.1).tolist() == [0]


def test_a_track_taken_in_the_second_stage_is_not_counted_as_missed():
    # with max_age 0 a track that the second stage matched must survive the frame
    tracker = GreedyTracker(max_distances(["Vehicle"]), max_age=0, motion="own", max_speed=max_speeds(["Vehicle"]))
    assert tracker.update([[0.0, 0.0]], [1], [0.9], 0.0).tolist() == [0]
    assert tracker.update([[10.0, 0.0]], [1], [0.9], 0.5).tolist() == [0]  # 10 m: beyond the gate, within 15 m
    assert len(tracker) == 1 and tracker.missed.tolist() == [0]
    assert tracker.update([[20.0, 0.0]], [1], [0.9], 1.0).tolist() == [0]  # own motion 20 m/s predicts (20, 0)
