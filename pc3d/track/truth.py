"""Ground-truth boxes as detections, with noise: a tracker scored apart from any detector.

A tracking metric mixes what the detector missed or placed wrongly with what the tracker associated wrongly. Fed
the ground truth, a tracker's mismatches are its own; with centre and velocity noise and dropped boxes of a
chosen size, one can ask how association holds up as detections worsen (AB3DMOT and the nuScenes tracking
baselines study trackers so). tools/truth_detections.py writes such files for a Waymo v2 dataset; tools/track.py
and tools/eval_tracking.py then run as on a detector's files.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pc3d.errors import ConfigError


def truth_detections(gt: dict, class_names: Sequence[str], rng: np.random.Generator, centre: float = 0.0,
                     velocity: float = 0.0, drop: float = 0.0) -> dict[str, np.ndarray]:
    """One frame's detections {"boxes" float64 [K, 9], "scores" [K], "labels" int64 [K] (1-based in class_names)}
    from its ground truth `gt` (``WaymoDataset.read_boxes``: "box" [M, 9], "name" [M], "num_points" [M]).

    Kept: the boxes of the named classes with at least one LiDAR point (those a detector could see and the
    tracking metrics score), each then dropped with probability `drop`. The kept boxes' centres move by N(0,
    centre^2) metres along x and y, their velocities (vx, vy; an unknown one is taken as 0) by N(0, velocity^2)
    m/s along each axis; sizes, z and heading stay. Scores are uniform in [0.5, 1): an order in which the tracker
    takes the boxes, unrelated to their noise. The draws come from `rng` in a fixed order, so a seeded generator
    gives the same detections again.
    """
    if centre < 0 or velocity < 0 or not 0 <= drop < 1:
        raise ConfigError(f"noise must be centre >= 0, velocity >= 0 and 0 <= drop < 1; got centre={centre}, "
                          f"velocity={velocity}, drop={drop}")
    names = list(class_names)
    box = np.asarray(gt["box"], np.float64).reshape(-1, 9)
    seen = np.isin(gt["name"], names) & (np.asarray(gt["num_points"]) > 0)
    keep = seen & (rng.random(len(box)) >= drop)
    boxes = box[keep].copy()
    boxes[:, 7:9] = np.nan_to_num(boxes[:, 7:9])
    boxes[:, :2] += rng.normal(0.0, centre, (len(boxes), 2))
    boxes[:, 7:9] += rng.normal(0.0, velocity, (len(boxes), 2))
    labels = np.asarray([names.index(n) + 1 for n in np.asarray(gt["name"])[keep]], np.int64)
    return {"boxes": boxes, "scores": rng.uniform(0.5, 1.0, len(boxes)), "labels": labels}
