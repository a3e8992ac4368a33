"""tools/infer.py --track: track ids for a detector's boxes over a sequence (pc3d.track.GreedyTracker).

Each frame's boxes are moved into the sequence's fixed frame by the frame's pose (``extra["pose"]``: a Waymo
segment's world_from_vehicle, a SemanticKITTI sequence's LiDAR pose; pc3d.track.update_in_world) before they are
associated, so the sensor's own motion is not read as the objects'; velocities turn with it. A frame's time is its Waymo
timestamp, else its scan number times ``scan_period`` (SemanticKITTI: 0.1 s). A new sequence starts a new set of
tracks. Boxes keep their sensor-frame values; the prediction gains ``track_ids`` [K], which the writers put in
the JSON and, for Waymo, in ``key.laser_object_id`` (the tracking submission's convention:
tools/eval_tracking.py scores them).
"""
from __future__ import annotations

from pc3d.errors import DataFormatError
from pc3d.track import GreedyTracker, update_in_world


class TrackedOutput:
    """Wraps a DetectionOutput: write(frame, pred) adds pred["track_ids"] and hands it on."""

    def __init__(self, inner, tracker: GreedyTracker, scan_period: float = 0.1):
        self.inner, self.tracker, self.scan_period = inner, tracker, float(scan_period)
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
        ids, how = update_in_world(self.tracker, pred["boxes"], pred["labels"], pred["scores"], frame.extra["pose"],
                                   self.time(frame))
        self.velocity_from.add(how)
        return self.inner.write(frame, {**pred, "track_ids": ids})

    def close(self) -> str:
        how = " and ".join(sorted(self.velocity_from)) or "no frames"
        return (f"{self.inner.close()}\ntrack ids: {self.tracker.next_id} tracks over {self.sequences} sequence(s) "
                f"(greedy centre matching, velocities from {how})")
