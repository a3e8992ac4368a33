"""Waymo leaderboard submissions without TensorFlow or a C++ build: the ``Submission`` protobuf of detection and
tracking (what waymo_open_dataset's ``create_submission`` makes of Objects files and a submission.txtpb) and the
``SemanticSegmentationSubmission`` of 3D semantic segmentation (what Waymo's segmentation tutorial builds around a
SegmentationFrameList). Upload: tar and gzip the written files.

create_submission's rules, kept: account_name and unique_method_name must be set; objects scoring below 0.03 and
boxes with a NaN field are left out; box sizes are raised to at least 1e-6; the objects are dealt round-robin to
``num_shards`` files named ``<out>0``, ``<out>1``, ... (the same metadata in each).
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pc3d.errors import ConfigError
from pc3d.eval.waymo_protos import message_class, parse

TASKS = {"detection": 2, "tracking": 4}  # Submission.Task: DETECTION_3D, TRACKING_3D
SENSOR_TYPES = {"LIDAR_ALL": 1, "LIDAR_TOP": 2, "CAMERA_ALL": 3, "CAMERA_LIDAR_TOP": 4, "CAMERA_LIDAR_ALL": 5}
OBJECT_TYPES = {"vehicle": 1, "pedestrian": 2, "sign": 3, "cyclist": 4}  # Label.Type
MIN_SCORE, MIN_SIZE = 0.03, 1e-6


@dataclass
class SubmissionInfo:
    """The metadata of a submission (submission.txtpb's fields): account_name is the e-mail registered at
    waymo.com/open, unique_method_name at most 25 characters."""

    account_name: str
    unique_method_name: str
    authors: Sequence[str] = ()
    affiliation: str = ""
    description: str = ""
    method_link: str = ""
    sensor_type: str = "LIDAR_ALL"
    past_frames: int = 0
    future_frames: int = 0

    def check(self) -> None:
        if not self.account_name or not self.unique_method_name:
            raise ConfigError("a Waymo submission needs account_name and unique_method_name")
        if len(self.unique_method_name) > 25:
            raise ConfigError(f"unique_method_name has {len(self.unique_method_name)} characters, at most 25")
        if self.sensor_type not in SENSOR_TYPES:
            raise ConfigError(f"sensor_type must be one of {sorted(SENSOR_TYPES)}, got {self.sensor_type!r}")
        if min(self.past_frames, self.future_frames) < 0:
            raise ConfigError("past_frames and future_frames must be >= 0")

    def fill(self, message) -> None:
        """Set the metadata fields of a Submission or SemanticSegmentationSubmission (the same names)."""
        self.check()
        message.account_name, message.unique_method_name = self.account_name, self.unique_method_name
        message.authors.extend(self.authors)
        message.affiliation, message.description, message.method_link = (self.affiliation, self.description,
                                                                         self.method_link)
        message.sensor_type = SENSOR_TYPES[self.sensor_type]
        message.number_past_frames_exclude_current = int(self.past_frames)
        message.number_future_frames_exclude_current = int(self.future_frames)


@dataclass
class SubmissionCounts:
    written: int = 0
    low_score: int = 0
    not_finite: int = 0
    files: list[Path] = field(default_factory=list)


def write_box_submission(objects_files: Sequence[str | os.PathLike], out: str | os.PathLike, info: SubmissionInfo,
                         task: str = "detection", object_types: Sequence[str] = ("vehicle", "pedestrian", "cyclist"),
                         num_shards: int = 4, latency_second: float = -1.0) -> SubmissionCounts:
    """Submission files ``<out>0 .. <out>{num_shards - 1}`` of the objects of Objects files (tools/test.py's
    objects.bin, tools/track.py's for tracking), by create_submission's rules."""
    if task not in TASKS:
        raise ConfigError(f"task must be one of {sorted(TASKS)}, got {task!r}")
    unknown = sorted(set(object_types) - set(OBJECT_TYPES))
    if unknown or num_shards < 1:
        raise ConfigError(f"object types must be among {sorted(OBJECT_TYPES)} (got {unknown}) and num_shards >= 1")
    info.check()
    submission = message_class("Submission")
    shards = [submission() for _ in range(num_shards)]
    for shard in shards:
        info.fill(shard)
        shard.task = TASKS[task]
        shard.object_types.extend(OBJECT_TYPES[t] for t in object_types)
        shard.latency_second = latency_second
    counts, k = SubmissionCounts(), 0
    for path in objects_files:
        for o in parse("Objects", Path(path).read_bytes(), path).objects:
            box = o.object.box
            if o.score < MIN_SCORE:
                counts.low_score += 1
                continue
            if any(math.isnan(getattr(box, f)) for f in ("center_x", "center_y", "center_z", "length", "width",
                                                        "height", "heading")):
                counts.not_finite += 1
                continue
            kept = shards[k % num_shards].inference_results.objects.add()
            kept.CopyFrom(o)
            for f in ("length", "width", "height"):
                setattr(kept.object.box, f, max(getattr(box, f), MIN_SIZE))
            k += 1
    counts.written = k
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for i, shard in enumerate(shards):
        counts.files.append(out.with_name(f"{out.name}{i}"))
        counts.files[-1].write_bytes(shard.SerializeToString())
    return counts


def write_segmentation_submission(frames_file: str | os.PathLike, out: str | os.PathLike,
                                  info: SubmissionInfo) -> SubmissionCounts:
    """A SemanticSegmentationSubmission file of a SegmentationFrameList (tools/test.py's segmentation.bin)."""
    submission = message_class("SemanticSegmentationSubmission")()
    info.fill(submission)
    frames = parse("SegmentationFrameList", Path(frames_file).read_bytes(), frames_file)
    submission.inference_results.CopyFrom(frames)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(submission.SerializeToString())
    return SubmissionCounts(written=len(frames.frames), files=[out])
