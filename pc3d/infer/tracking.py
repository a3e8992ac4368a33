"""tools/infer.py --track: track ids for a detector's boxes over a sequence (pc3d.track.GreedyTracker).

Each frame's boxes are moved into the sequence's fixed frame by the frame's pose (``extra["pose"]``: a Waymo
segment's world_from_vehicle, a SemanticKITTI sequence's LiDAR pose) before they are associated, so the sensor's
own motion is not read as the objects'; velocities (vx, vy) turn with the pose. A frame's time is its Waymo
timestamp, else its scan number times ``scan_period`` (SemanticKITTI: 0.1 s). A new sequence starts a new set of
tracks. Boxes keep their sensor-frame values; the prediction gains ``track_ids`` [K], which the writers put in
the JSON and, for Waymo, in ``key.laser_object_id`` (the tracking submission's convention:
tools/eval_tracking.py scores them).
"""
from __future__ import annotations

import numpy as np

from pc3d.errors import DataFormatError
from pc3d.track import GreedyTracker


class TrackedOutput:
    """Wraps a DetectionOutput: write(frame, pred) adds pred["track_ids"] and hands it on."""

    def __init__(self, inner, tracker: GreedyTracker, use_velocity: bool = True, scan_period: float = 0.1):
        self.inner, self.tracker = inner, tracker
        self.use_velocity, self.scan_period = use_velocity, float(scan_period)
        self.sequence, self.sequences = None, 0
        self.velocity_from = set()

    def time(self, frame) -> float:
        if "timestamp" in frame.extra:
            return float(frame.extra["timestamp"]) * 1e-6
        return float(frame.extra["scan"]) * self.scan_period

    def write(self, frame, pred: dict):
        if "pose" not in frame.extra:
            raise DataFormatError(frame.source, "no pose for this frame: tracking needs the sequence's poses")
        if frame.sequence != self.sequence:
            self.tracker.reset()
            self.sequence, self.sequences = frame.sequence, self.sequences + 1
        boxes = np.asarray(pred["boxes"], np.float64).reshape(len(pred["scores"]), -1)
        pose = np.asarray(frame.extra["pose"], np.float64)
        centres = boxes[:, :3] @ pose[:3, :3].T + pose[:3, 3]
        velocities = (boxes[:, 7:9] @ pose[:2, :2].T if self.use_velocity and boxes.shape[1] >= 9 else None)
        self.velocity_from.add("the detector's velocities" if velocities is not None else "the tracks' own motion")
        ids = self.tracker.update(centres[:, :2], np.asarray(pred["labels"]), np.asarray(pred["scores"]),
                                  self.time(frame), velocities)
        return self.inner.write(frame, {**pred, "track_ids": ids})

    def close(self) -> str:
        how = " and ".join(sorted(self.velocity_from)) or "no frames"
        return (f"{self.inner.close()}\ntrack ids: {self.tracker.next_id} tracks over {self.sequences} sequence(s) "
                f"(greedy centre matching, velocities from {how})")
