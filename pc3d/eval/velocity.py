"""Velocity error of 3D detections: nuScenes' AVE (average velocity error, m/s), without the devkit.

Per class, as ``nuscenes-devkit`` eval/detection/algo.py (``accumulate``, ``calc_tp``) computes it with its
detection configuration (``dist_th_tp`` 2 m, ``min_recall`` 0.1):

- the predictions of all frames in descending score (equal scores: the later one first, as the devkit's sort);
  each takes the nearest not yet taken ground truth of its class in its frame by BEV centre distance when that
  distance is below 2 m (a TP), else it is a FP;
- a TP's error is the L2 norm of the (vx, vy) difference; NaN when the ground truth's velocity is unknown, which
  the running means skip;
- precision, recall and score are resampled at recall 0, 0.01, ..., 1 (score 0 beyond the highest recall
  reached); the running mean of the TP errors is read at each resampled score; AVE is its mean from recall 0.11
  to the highest recall reached, and 1.0 when that is below 0.11 (so a class without TPs counts as poor).

Ground truth without LiDAR points (``num_points`` 0) is not scored, as in nuScenes and Waymo. Boxes are
x, y, z, dx, dy, dz, heading, vx, vy in one frame for ground truth and predictions (Waymo: the vehicle frame,
velocities over ground, not relative to the ego vehicle).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pc3d.errors import DataFormatError

DIST_THRESHOLD = 2.0  # metres, nuScenes' dist_th_tp
MIN_RECALL = 0.1
RECALL_STEPS = 101


def running_mean(x: np.ndarray) -> np.ndarray:
    """Mean of x[:i + 1] for every i, NaNs skipped (0 before the first number; all ones when x is all NaN, the
    devkit's cummean)."""
    x = np.asarray(x, np.float64)
    if np.isnan(x).all():
        return np.ones(len(x))
    counts = np.cumsum(~np.isnan(x))
    return np.divide(np.nancumsum(x), counts, out=np.zeros(len(x)), where=counts != 0)


def _frame(d: dict, keys: tuple[str, ...], where: str) -> dict:
    missing = [k for k in keys if k not in d]
    if missing:
        raise DataFormatError(where, f"lacks {missing}")
    boxes = np.asarray(d["boxes"], np.float64)
    boxes = boxes.reshape(0, 9) if boxes.size == 0 else boxes
    if boxes.ndim != 2 or boxes.shape[1] < 9:
        raise DataFormatError(where, f"boxes must be [M, 9] (x, y, z, dx, dy, dz, heading, vx, vy), got "
                                     f"{list(boxes.shape)}")
    out = {"boxes": boxes, **{k: np.asarray(d[k]).reshape(-1) for k in keys[1:]}}
    for k in keys[1:]:
        if len(out[k]) != len(boxes):
            raise DataFormatError(where, f"'{k}' has {len(out[k])} entries for {len(boxes)} boxes")
    return out


def class_velocity_error(gt: Sequence[dict], dt: Sequence[dict], cls, dist_threshold: float = DIST_THRESHOLD,
                         min_recall: float = MIN_RECALL) -> dict:
    """AVE of one class over frames already checked by ``velocity_error``: {"AVE", "num_tp", "num_gt"}; AVE is
    NaN when the class has no ground truth."""
    gt_sel = [(g["types"] == cls) & (g["num_points"] > 0) for g in gt]
    npos = int(sum(s.sum() for s in gt_sel))
    if npos == 0:
        return {"AVE": float("nan"), "num_tp": 0, "num_gt": 0}
    gt_boxes = [g["boxes"][s] for g, s in zip(gt, gt_sel, strict=True)]
    dt_rows = [np.flatnonzero(d["types"] == cls) for d in dt]
    frame_of = np.concatenate([np.full(len(r), f) for f, r in enumerate(dt_rows)]).astype(np.int64)
    row_of = np.concatenate(dt_rows).astype(np.int64)
    scores = np.concatenate([dt[f]["scores"][r] for f, r in enumerate(dt_rows)]).astype(np.float64)
    order = np.lexsort((np.arange(len(scores)), scores))[::-1]
    taken = [np.zeros(len(b), bool) for b in gt_boxes]
    is_tp = np.zeros(len(order), bool)
    errors, match_scores = [], []
    for rank, j in enumerate(order):
        f, box = frame_of[j], dt[frame_of[j]]["boxes"][row_of[j]]
        if not len(gt_boxes[f]):
            continue
        dist = np.hypot(gt_boxes[f][:, 0] - box[0], gt_boxes[f][:, 1] - box[1])
        dist[taken[f]] = np.inf
        k = int(np.argmin(dist))
        if dist[k] < dist_threshold:
            taken[f][k] = is_tp[rank] = True
            errors.append(float(np.hypot(*(box[7:9] - gt_boxes[f][k, 7:9]))))
            match_scores.append(scores[j])
    if not errors:
        return {"AVE": 1.0, "num_tp": 0, "num_gt": npos}
    recall = np.cumsum(is_tp) / npos
    steps = np.linspace(0.0, 1.0, RECALL_STEPS)
    score_at = np.interp(steps, recall, scores[order], right=0.0)
    match_scores = np.asarray(match_scores)
    error_at = np.interp(score_at[::-1], match_scores[::-1], running_mean(np.asarray(errors))[::-1])[::-1]
    reached = np.flatnonzero(score_at)
    first, last = round((RECALL_STEPS - 1) * min_recall) + 1, int(reached[-1]) if len(reached) else 0
    ave = 1.0 if last < first else float(np.mean(error_at[first:last + 1]))
    return {"AVE": ave, "num_tp": len(errors), "num_gt": npos}


def velocity_error(gt: Sequence[dict], dt: Sequence[dict], classes: Sequence[str],
                   dist_threshold: float = DIST_THRESHOLD, min_recall: float = MIN_RECALL) -> dict:
    """AVE (m/s) per class and their mean over the classes with ground truth.

    gt: per frame ``boxes`` [M, 9], ``types`` [M] (class names), ``num_points`` [M]; dt: per frame ``boxes``
    [K, 9], ``types`` [K], ``scores`` [K]. Returns ``{cls: {"AVE", "num_tp", "num_gt"}, "mean": {"AVE"}}``.
    """
    if len(gt) != len(dt):
        raise DataFormatError(None, f"{len(gt)} ground-truth frames but {len(dt)} prediction frames")
    gts = [_frame(g, ("boxes", "types", "num_points"), f"ground truth frame {i}") for i, g in enumerate(gt)]
    dts = [_frame(d, ("boxes", "types", "scores"), f"predictions frame {i}") for i, d in enumerate(dt)]
    result: dict = {cls: class_velocity_error(gts, dts, cls, dist_threshold, min_recall) for cls in classes}
    scored = [result[c]["AVE"] for c in classes if result[c]["num_gt"]]
    result["mean"] = {"AVE": float(np.mean(scored)) if scored else float("nan")}
    return result
