"""Indoor 3D detection AP over axis-aligned boxes, as the ScanNet / SUN RGB-D detection benchmark evaluates
(VoteNet's eval_det, which mmdetection3d's indoor evaluation follows).

Conventions
- boxes are pc3d boxes [M, 7] (centre x, y, z, size dx, dy, dz, heading); indoor boxes are axis aligned,
  so the heading is not used: IoU is that of the axis-aligned boxes [centre - size / 2, centre + size / 2];
- per class and IoU threshold, the detections of every scene are ranked by score (ties: the earlier scene and
  detection first); a detection is a true positive when its best-overlapping ground truth of that class in its
  scene overlaps it by more than the threshold (eval_det's ``ovmax > ovthresh``: an IoU of exactly 0.25 is not
  a match at 0.25) and was not taken by a higher-scored detection, else a false positive;
- AP = the area under the precision envelope over all recall points: recall padded with 0 and 1, precision
  with 0 and 0, each precision replaced by the maximum at that recall or above, summed over recall steps;
- a class without ground truth in the split (npos = 0) has AP NaN, undefined, never 0: eval_det / mmdetection3d's
  indoor_eval divide the recall by npos = 0 there (0 / 0) and report NaN for such a class when it was predicted;
  pc3d reports NaN for every such class of ``class_names``, predicted or not;
- mAP: the mean over the classes that have ground truth in the split ("the classes present"), the NaN classes
  left out, so a class without ground truth neither pulls the mean to 0 nor turns it NaN (the reference tools'
  plain np.mean over their dict turns NaN when a predicted class has no ground truth); NaN when no class has
  ground truth (np.mean of no AP, as theirs).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pc3d.errors import DataFormatError
from pc3d.geometry.iou import iou_axis_aligned as aligned_iou


def average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the precision envelope (see the module doc); recall / precision in ranking order."""
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    step = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[step + 1] - mrec[step]) * mpre[step + 1]))


def class_ap(detections: Sequence[tuple[np.ndarray, np.ndarray]], truths: Sequence[np.ndarray],
             threshold: float) -> float:
    """AP of one class: detections[s] = (boxes [K, 7], scores [K]) and truths[s] = boxes [M, 7] of scene s;
    NaN when no scene has ground truth (recall 0 / 0: undefined, see the module doc)."""
    positives = sum(len(t) for t in truths)
    if positives == 0:
        return float("nan")
    rows = [(s, k) for s, (boxes, _) in enumerate(detections) for k in range(len(boxes))]
    scores = np.array([detections[s][1][k] for s, k in rows], np.float64)
    order = np.argsort(-scores, kind="stable")
    overlaps = [aligned_iou(boxes, truths[s]) if len(truths[s]) and len(boxes) else None
                for s, (boxes, _) in enumerate(detections)]
    taken = [np.zeros(len(t), bool) for t in truths]
    tp = np.zeros(len(rows))
    for rank, i in enumerate(order):
        s, k = rows[i]
        if overlaps[s] is None:
            continue
        best = int(np.argmax(overlaps[s][k]))
        if overlaps[s][k, best] > threshold and not taken[s][best]:
            taken[s][best] = True
            tp[rank] = 1
    cum_tp = np.cumsum(tp)
    ranks = np.arange(1, len(rows) + 1)
    return average_precision(cum_tp / positives, cum_tp / np.maximum(ranks, 1))


def indoor_map(predictions: Sequence[dict], truths: Sequence[dict], class_names: Sequence[str],
               thresholds: Sequence[float] = (0.25, 0.5)) -> dict:
    """{"mAP_0.25", "mAP_0.50", "AP_0.25/<class>", ...} in percent over scenes in the same order.

    predictions[s]: {"boxes" [K, 7], "scores" [K], "labels" [K] (1..C)}; truths[s]: {"gt_boxes" [M, 7],
    "gt_labels" [M] (1..C)}; class_names[c - 1] names class id c. A class without ground truth in the split has AP
    NaN and is left out of the mAP, the mean over the classes present; the mAP is NaN when no class is present."""
    if len(predictions) != len(truths):
        raise DataFormatError(None, f"{len(predictions)} predictions for {len(truths)} scenes")
    metrics: dict[str, float] = {}
    for threshold in thresholds:
        tag = f"{threshold:.2f}"
        aps = []
        for c, name in enumerate(class_names, 1):
            dets = [(np.asarray(p["boxes"])[np.asarray(p["labels"]) == c],
                     np.asarray(p["scores"])[np.asarray(p["labels"]) == c]) for p in predictions]
            gts = [np.asarray(t["gt_boxes"])[np.asarray(t["gt_labels"]) == c] for t in truths]
            ap = class_ap(dets, gts, threshold)
            metrics[f"AP_{tag}/{name}"] = 100 * ap
            if not np.isnan(ap):  # the classes present
                aps.append(ap)
        metrics[f"mAP_{tag}"] = 100 * float(np.mean(aps)) if aps else float("nan")
    return metrics
