"""Tracking boxes given in a moving sensor's frame: each frame's boxes moved into the world frame by the frame's
pose before the tracker (pc3d.track.greedy) associates them, so the sensor's own motion is not read as the
objects'."""
from __future__ import annotations

import numpy as np

from pc3d.track.greedy import GreedyTracker


def update_in_world(tracker: GreedyTracker, boxes: np.ndarray, labels: np.ndarray, scores: np.ndarray,
                    pose: np.ndarray, time: float) -> tuple[np.ndarray, str]:
    """(track ids [K], where the tracker's velocities came from: GreedyTracker.describe) of one frame's boxes
    [K, 7 (+2)] in the sensor frame whose world_from_sensor pose [4, 4] is given: centres move by the pose,
    velocities (vx, vy, columns 7-8, when present) turn with it."""
    scores = np.asarray(scores, np.float64).reshape(-1)
    boxes = np.asarray(boxes, np.float64)
    if boxes.size:
        boxes = boxes.reshape(len(scores), -1)
    else:  # an empty [0] or [0, 7 (+2)]: no detections this frame
        boxes = boxes.reshape(0, boxes.shape[-1] if boxes.ndim == 2 else 7)
    pose = np.asarray(pose, np.float64)
    centres = boxes[:, :3] @ pose[:3, :3].T + pose[:3, 3]
    velocities = boxes[:, 7:9] @ pose[:2, :2].T if boxes.shape[1] >= 9 else None
    ids = tracker.update(centres[:, :2], np.asarray(labels), scores, time, velocities)
    return ids, tracker.describe(velocities is not None)
