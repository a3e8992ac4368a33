"""Waymo leaderboard submissions (pc3d.eval.waymo_submission, tools/waymo_submission.py): create_submission's rules
on a hand-made Objects file, and the segmentation submission around a SegmentationFrameList."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from pc3d.errors import ConfigError
from pc3d.eval.waymo_objects import write_objects
from pc3d.eval.waymo_protos import parse
from pc3d.eval.waymo_submission import SubmissionInfo, write_box_submission, write_segmentation_submission

ROOT = Path(__file__).resolve().parents[1]
INFO = SubmissionInfo("me@example.com", "pc3d-test", ["A. Author"], sensor_type="LIDAR_TOP", past_frames=1)


@pytest.fixture
def objects_file(tmp_path):
    boxes = np.array([[1, 2, 0, 4, 2, 1.5, 0.1]] * 5, np.float64)
    boxes[1, 6] = np.nan  # left out: a NaN field
    boxes[3, 3] = 0.0  # kept, its length raised to 1e-6
    frame = {"context_name": "seg", "timestamp": 7, "boxes": boxes, "types": ["vehicle"] * 4 + ["cyclist"],
             "scores": np.array([0.9, 0.8, 0.01, 0.5, 0.031])}  # 0.01: left out, below 0.03
    return tmp_path / "objects.bin", frame


def test_box_submission_follows_create_submission(objects_file, tmp_path):
    path, frame = objects_file
    from pc3d.eval.waymo_protos import message_class

    objects = message_class("Objects")()  # written by hand: write_objects refuses a NaN box
    for k, box in enumerate(frame["boxes"]):
        o = objects.objects.add(context_name="seg", frame_timestamp_micros=7, score=float(frame["scores"][k]))
        for name, value in zip(("center_x", "center_y", "center_z", "length", "width", "height", "heading"), box,
                               strict=True):
            setattr(o.object.box, name, float(value))
        o.object.type = 4 if k == 4 else 1
    path.write_bytes(objects.SerializeToString())
    counts = write_box_submission([path], tmp_path / "out" / "detection", INFO, num_shards=2)
    assert (counts.written, counts.low_score, counts.not_finite) == (3, 1, 1)
    assert [f.name for f in counts.files] == ["detection0", "detection1"]
    shards = [parse("Submission", f.read_bytes(), f) for f in counts.files]
    assert [len(s.inference_results.objects) for s in shards] == [2, 1]  # dealt round-robin
    first = shards[0]
    assert (first.task, first.account_name, first.unique_method_name, first.sensor_type) == (2, "me@example.com",
                                                                                             "pc3d-test", 2)
    assert list(first.object_types) == [1, 2, 4] and list(first.authors) == ["A. Author"]
    assert first.number_past_frames_exclude_current == 1 and shards[1].account_name == "me@example.com"
    kept = [o for s in shards for o in s.inference_results.objects]
    assert sorted(round(o.score, 3) for o in kept) == [0.031, 0.5, 0.9]
    assert min(o.object.box.length for o in kept) == pytest.approx(1e-6)
    with pytest.raises(ConfigError, match="account_name"):
        write_box_submission([path], tmp_path / "x", SubmissionInfo("", "m"))
    with pytest.raises(ConfigError, match="at most 25"):
        write_box_submission([path], tmp_path / "x", SubmissionInfo("a@b", "m" * 26))


def test_segmentation_submission_wraps_the_frames(tmp_path):
    from pc3d.eval.waymo_segmentation import read_segmentation_frames, write_segmentation_frames

    labels = np.zeros((4, 6), np.int64)
    labels[1, 2:5] = 18
    frames = [{"context_name": "seg", "timestamp": 7, "returns": {1: labels, 2: np.zeros_like(labels)}}]
    source = write_segmentation_frames(tmp_path / "segmentation.bin", frames)
    counts = write_segmentation_submission(source, tmp_path / "submission.bin", INFO)
    submission = parse("SemanticSegmentationSubmission", counts.files[0].read_bytes(), counts.files[0])
    assert submission.account_name == "me@example.com" and submission.sensor_type == 2
    inner = tmp_path / "inner.bin"
    inner.write_bytes(submission.inference_results.SerializeToString())
    assert inner.read_bytes() == source.read_bytes()
    np.testing.assert_array_equal(read_segmentation_frames(inner)[("seg", 7)][1], labels)


def test_the_tool_writes_the_shards(objects_file, tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "tools"))
    import waymo_submission

    path, frame = objects_file
    write_objects(path, [frame | {"boxes": np.nan_to_num(frame["boxes"], nan=0.1)}])
    assert waymo_submission.main(["tracking", str(path), "--out", str(tmp_path / "t" / "tracks"), "--account-name",
                                  "me@example.com", "--method-name", "pc3d"]) == 0
    assert "4 objects (1 below score 0.03" in capsys.readouterr().out
    assert parse("Submission", (tmp_path / "t" / "tracks0").read_bytes(), "shard").task == 4
