"""Waymo's command-line evaluators over Objects files, without TensorFlow or a C++ build: the frames, boxes, levels
and breakdowns of ``compute_detection_metrics_main`` and ``compute_tracking_metrics_main`` (waymo_open_dataset/
metrics/tools), computed by pc3d.eval.waymo and pc3d.eval.waymo_tracking.

What the two tools do, and so what is done here:

- a frame is (context_name, frame_timestamp_micros); every frame of either file counts, a frame missing from one
  file has no boxes there. Tracking takes each context's frames in timestamp order as one sequence;
- detection drops the ground truth without LiDAR points; a box whose ``detection_difficulty_level`` is unset is
  LEVEL_2 at <= 5 points, else LEVEL_1; a set level stands. Tracking keeps every box at its
  ``tracking_difficulty_level`` (unset counts as LEVEL_1);
- breakdowns OBJECT_TYPE (vehicle, pedestrian, sign, cyclist; IoU 0.7, 0.5, 0.5, 0.5) and RANGE (the same types
  in bands of the box centre's 3D distance from the origin: [0, 30), [30, 50), [50, +inf) m; predictions and
  ground truth each by their own centre), each at LEVEL_1 and LEVEL_2; score cutoffs 0.00, 0.01, ..., 1.00;
- tracking: of two predictions with one id in a frame, the first in the file above each cutoff stands and the
  other is ignored (mot.cc; pc3d.eval.waymo_tracking's duplicate_ids="first");
- lines as the tools print them: ``OBJECT_TYPE_TYPE_VEHICLE_LEVEL_1: [mAP 0.208277] [mAPH 0.162823]`` (six
  significant digits; fractions, not percent).

Checked against the output the tools' headers document for Waymo's example files (fake_predictions.bin and
fake_ground_truths.bin beside them): the 32 tracking lines agree digit for digit (on the 2019 files, which that
output comes from); the 32 detection lines agree to the printed digits (two last-digit float roundings) but the
four vehicle lines that hold one prediction identical to a ground-truth box turned by pi. For that pair the
official polygon intersection returns IoU 0 (it does so for about 1 in 100 such exact twins, never once a
coordinate moves by 1e-12), pc3d's exact IoU 1; with the official IoU put in, those lines agree too.
A prediction's ``overlap_with_nlz`` flag is read from the file, as the tools do: an unmatched prediction so flagged is
not a false positive (metrics_utils.cc's IsFP, mot.cc). The leaderboard sets the flag itself; local files carry
whatever their writer set (pc3d's writers: false).
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from pc3d.eval.waymo import LEVELS, TYPE_IDS, waymo_eval
from pc3d.eval.waymo_tracking import waymo_tracking_eval

TYPES = tuple(TYPE_IDS[i] for i in sorted(TYPE_IDS))  # the tools' order: label.proto's type ids 1..4
RANGE_BANDS = ((0.0, 30.0, "[0, 30)"), (30.0, 50.0, "[30, 50)"), (50.0, np.inf, "[50, +inf)"))

Frames = Mapping[tuple[str, int], dict]  # pc3d.eval.waymo_objects.read_objects' result


def _empty() -> dict:
    return {"boxes": np.zeros((0, 7)), "types": np.zeros(0, "<U10"), "scores": np.zeros(0), "ids": np.zeros(0, str),
            "num_points": np.zeros(0, np.int64), "levels": np.zeros(0, np.int64)}


def _pick(frame: dict, keep: np.ndarray | slice = slice(None)) -> dict:
    """The `keep` boxes of a frame, boxes cut to their 7 columns (speeds are not scored)."""
    return {k: (v[keep] if k != "boxes" else v[keep, :7]) for k, v in frame.items()}


def detection_levels(gt: dict) -> dict:
    """The detection tool's ground truth of a frame: boxes with points, with "levels" (its difficulty rule)."""
    frame = _pick(gt, gt["num_points"] > 0)
    by_points = np.where(frame["num_points"] <= 5, 2, 1)
    frame["levels"] = np.where(frame["difficulty"] > 0, frame["difficulty"], by_points)
    return frame


def tracking_levels(gt: dict) -> dict:
    """The tracking tool's ground truth of a frame: every box, "levels" its tracking difficulty (unset: 1)."""
    frame = _pick(gt)
    frame["levels"] = np.maximum(frame["tracking_difficulty"], 1)
    return frame


def _band(frame: dict, low: float, high: float) -> dict:
    distance = np.linalg.norm(frame["boxes"][:, :3], axis=1)
    return _pick(frame, (distance >= low) & (distance < high))


def _breakdowns(evaluate, gt, dt) -> list[tuple[str, dict]]:
    """[(breakdown name without level, {level: metrics})] of OBJECT_TYPE then RANGE; evaluate(gt, dt, cls)."""
    lines = [(f"OBJECT_TYPE_TYPE_{cls.upper()}", evaluate(gt, dt, cls)) for cls in TYPES]
    for cls in TYPES:
        for low, high, name in RANGE_BANDS:
            lines.append((f"RANGE_TYPE_{cls.upper()}_{name}", evaluate(_banded(gt, low, high), _banded(dt, low, high),
                                                                       cls)))
    return lines


def _banded(frames, low: float, high: float):
    """`frames` (a list of frames, or of sequences of frames) with only the boxes in the band."""
    return [_band(f, low, high) if isinstance(f, dict) else [_band(x, low, high) for x in f] for f in frames]


def detection_breakdowns(predictions: Frames, ground_truth: Frames) -> list[tuple[str, dict]]:
    """compute_detection_metrics_main's breakdowns: [(name, {"LEVEL_1": {"AP", "APH", "num_gt"}, "LEVEL_2": ...})]."""
    keys = sorted(set(predictions) | set(ground_truth))
    gt = [detection_levels(ground_truth[k]) if k in ground_truth else _empty() for k in keys]
    dt = [_pick(predictions[k]) if k in predictions else _empty() for k in keys]
    return _breakdowns(lambda g, d, cls: waymo_eval(g, d, (cls,))[cls], gt, dt)


def tracking_breakdowns(predictions: Frames, ground_truth: Frames) -> list[tuple[str, dict]]:
    """compute_tracking_metrics_main's breakdowns: [(name, {"LEVEL_1": {"MOTA", "MOTP", "miss", "mismatch", "fp",
    ...}, "LEVEL_2": ...})]; frames grouped by context_name, in timestamp order."""
    stamps: dict[str, set[int]] = {}
    for context, timestamp in (*predictions, *ground_truth):
        stamps.setdefault(context, set()).add(timestamp)
    gt, dt = [], []
    for context in sorted(stamps):
        keys = [(context, t) for t in sorted(stamps[context])]
        gt.append([tracking_levels(ground_truth[k]) if k in ground_truth else _empty() for k in keys])
        dt.append([_pick(predictions[k]) if k in predictions else _empty() for k in keys])
    return _breakdowns(lambda g, d, cls: waymo_tracking_eval(g, d, (cls,), duplicate_ids="first")[cls], gt, dt)


def format_detection(lines: list[tuple[str, dict]]) -> str:
    return "\n".join(f"{name}_{level}: [mAP {r[level]['AP']:.6g}] [mAPH {r[level]['APH']:.6g}]"
                     for name, r in lines for level in LEVELS)


def format_tracking(lines: list[tuple[str, dict]]) -> str:
    return "\n".join(f"{name}_{level}: [MOTA {m['MOTA']:.6g}] [MOTP {m['MOTP']:.6g}] [Miss {m['miss']:.6g}] "
                     f"[Mismatch {m['mismatch']:.6g}] [FP {m['fp']:.6g}]"
                     for name, r in lines for level in LEVELS for m in [r[level]])
