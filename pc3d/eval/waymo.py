"""Waymo Open Dataset 3D detection AP and APH at LEVEL_1 and LEVEL_2, without TensorFlow.

What is computed, following ``waymo_open_dataset/metrics`` (detection_metrics.cc, matcher.cc,
metrics_utils.cc) with the configuration OpenPCDet and the leaderboard tools use:

- breakdown by object type; a prediction is only matched to ground truth of its own type;
- score cutoffs 0.00, 0.01, ..., 0.99, 1.00; at each cutoff the predictions with score >= cutoff (both
  compared as float32, the protos' type)
  are matched per frame by a Hungarian assignment maximising the sum of 3D IoUs over the pairs
  whose IoU >= the class threshold (vehicle 0.7, pedestrian 0.5, cyclist 0.5);
- every matched prediction is a TP (also at LEVEL_1 when its ground truth is LEVEL_2, as in the
  official code), every unmatched one an FP unless it is flagged ``overlap_with_nlz`` (then it is
  neither, metrics_utils.cc's IsFP); an unmatched ground truth is an FN only at a level >= its own;
  heading accuracy of a TP = 1 - |wrapped heading difference| / pi;
- precision = TP / (TP + FP) (0 when empty, 1 when recall is 0), APH precision = sum of heading
  accuracies / (TP + FP), recall = TP / (TP + FN) for both; AP is the official
  ``ComputeMeanAveragePrecision``: precision envelope, gaps in recall filled every 0.05, trapezoids.

Difficulty: the level the box's ``difficulty`` field sets, and where it is unset (0) LEVEL_2 when the box holds
<= 5 LiDAR points, else LEVEL_1;
boxes with 0 points are not evaluated (the dataset's rule); ``levels`` set them instead (gt_levels).
IoUs are compared with the thresholds as float32 (the matcher's ``IoU()`` is a float, its thresholds proto floats:
an IoU of 0.7 in float32 meets 0.7 though its float64 value may lie below). Deviations: the official matcher
quantises the IoU weights of its assignment to integers, which can only change ties; Waymo's polygon intersection
returns 0 for about 1 in 100 boxes that coincide exactly with a box turned by pi (pc3d.eval.waymo_breakdown).
Whether a prediction overlaps a no-label zone is the caller's flag,
as in the official tools (the leaderboard computes it from zone polygons the public data does not hold).
"""
from __future__ import annotations

import numba as nb
import numpy as np
import pc3d_ops.numba_cache  # noqa: F401  (process-safe on-disk kernel cache)

from pc3d.errors import ConfigError, DataFormatError
from pc3d.geometry import iou_3d

WAYMO_CLASSES = ("vehicle", "pedestrian", "cyclist")
IOU_THRESHOLDS = {"vehicle": 0.7, "pedestrian": 0.5, "cyclist": 0.5, "sign": 0.5}  # Waymo's Config: sign 0.5 too
# Waymo label type ids (label.proto): 1 vehicle, 2 pedestrian, 3 sign, 4 cyclist
TYPE_IDS = {1: "vehicle", 2: "pedestrian", 3: "sign", 4: "cyclist"}
DEFAULT_SCORE_CUTOFFS = tuple([i * 0.01 for i in range(100)] + [1.0])
LEVELS = ("LEVEL_1", "LEVEL_2")
_SERIAL = {"cache": True, "nogil": True}


@nb.njit(**_SERIAL)
def hungarian_max(w):
    """Row -> column assignment [n] maximising the sum of w [n, m] (n <= m), O(n^2 m)."""
    n, m = w.shape
    u = np.zeros(n + 1)
    v = np.zeros(m + 1)
    p = np.zeros(m + 1, np.int64)
    way = np.zeros(m + 1, np.int64)
    for i in range(1, n + 1):
        p[0] = i
        j0 = 0
        minv = np.full(m + 1, np.inf)
        used = np.zeros(m + 1, np.bool_)
        while True:
            used[j0] = True
            i0 = p[j0]
            delta = np.inf
            j1 = 0
            for j in range(1, m + 1):
                if not used[j]:
                    cur = -w[i0 - 1, j - 1] - u[i0] - v[j]
                    if cur < minv[j]:
                        minv[j] = cur
                        way[j] = j0
                    if minv[j] < delta:
                        delta = minv[j]
                        j1 = j
            for j in range(m + 1):
                if used[j]:
                    u[p[j]] += delta
                    v[j] -= delta
                else:
                    minv[j] -= delta
            j0 = j1
            if p[j0] == 0:
                break
        while True:
            j1 = way[j0]
            p[j0] = p[j1]
            j0 = j1
            if j0 == 0:
                break
    rows = np.full(n, -1, np.int64)
    for j in range(1, m + 1):
        if p[j] != 0:
            rows[p[j] - 1] = j - 1
    return rows


@nb.njit(**_SERIAL)
def _waymo_counts(iou, ha, blk_off, pd_off, gt_off, pd_scores, pd_nlz, gt_level, thr, cutoffs):
    """Per cutoff and level (1, 2): TP, FP, FN and heading-accuracy sum, float64 [K, 2, 4].

    Frame f: predictions [pd_off[f], pd_off[f+1]) sorted by descending score (pd_nlz: unmatched, not an FP),
    ground truth [gt_off[f], gt_off[f+1]), row-major [P_f, G_f] blocks of IoU and heading accuracy at blk_off[f].
    """
    n_cut = cutoffs.shape[0]
    out = np.zeros((n_cut, 2, 4))
    for f in range(pd_off.shape[0] - 1):
        p0, p1, g0, g1 = pd_off[f], pd_off[f + 1], gt_off[f], gt_off[f + 1]
        n_p, n_g = p1 - p0, g1 - g0
        w_all = iou[blk_off[f]:blk_off[f + 1]].reshape(n_p, n_g)
        h_all = ha[blk_off[f]:blk_off[f + 1]].reshape(n_p, n_g)
        levels = gt_level[g0:g1]
        prev_n = -1
        tp, fp, sum_ha = 0, 0, 0.0
        fn = np.zeros(2)
        for k in range(n_cut):
            n = 0
            while n < n_p and pd_scores[p0 + n] >= cutoffs[k]:
                n += 1
            if n != prev_n:
                # predictions above a cutoff are a prefix (sorted scores): rematch only when it changes
                prev_n = n
                gt_taken = np.zeros(n_g, np.bool_)
                pd_taken = np.zeros(n_p, np.bool_)
                tp, sum_ha = 0, 0.0
                if n > 0 and n_g > 0:
                    w = np.where(w_all[:n] >= thr, w_all[:n], 0.0)
                    if n <= n_g:
                        rows = hungarian_max(w)
                        for i in range(n):
                            j = rows[i]
                            if j >= 0 and w[i, j] > 0:
                                tp += 1
                                sum_ha += h_all[i, j]
                                gt_taken[j] = True
                                pd_taken[i] = True
                    else:
                        cols = hungarian_max(w.T.copy())
                        for j in range(n_g):
                            i = cols[j]
                            if i >= 0 and w[i, j] > 0:
                                tp += 1
                                sum_ha += h_all[i, j]
                                gt_taken[j] = True
                                pd_taken[i] = True
                fp = 0
                for i in range(n):
                    if not pd_taken[i] and not pd_nlz[p0 + i]:
                        fp += 1
                fn[:] = 0.0
                for j in range(n_g):
                    if not gt_taken[j]:
                        for lv in range(2):
                            if levels[j] <= lv + 1:
                                fn[lv] += 1
            for lv in range(2):
                out[k, lv, 0] += tp
                out[k, lv, 1] += fp
                out[k, lv, 2] += fn[lv]
                out[k, lv, 3] += sum_ha
    return out


def mean_average_precision(precisions: np.ndarray, recalls: np.ndarray, max_recall_delta: float = 0.05) -> float:
    """Waymo's ComputeMeanAveragePrecision over PR points (any order): envelope, gap filling, trapezoids."""
    if len(precisions) == 0:
        return 0.0
    best: dict[float, float] = {0.0: 1.0}
    for p, r in zip(precisions, recalls, strict=True):
        best[float(r)] = max(best.get(float(r), 0.0), float(p))
    keys = sorted(best)
    pairs: list[tuple[float, float]] = []  # (precision, recall), recall descending
    last_recall = keys[0]
    max_precision = 0.0
    for r in reversed(keys):
        while last_recall - r > max_recall_delta + 1e-6:
            last_recall -= max_recall_delta
            pairs.append((max_precision, last_recall))
        max_precision = max(best[r], max_precision)
        pairs.append((max_precision, r))
        last_recall = r
    if len(pairs) >= 2:
        pairs[-1] = (pairs[-2][0], pairs[-1][1])  # the official code overrides the recall-0 entry
    return float(sum(0.5 * (pairs[i - 1][1] - pairs[i][1]) * (pairs[i - 1][0] + pairs[i][0])
                     for i in range(1, len(pairs))))


def _names(types: np.ndarray, where: str) -> np.ndarray:
    types = np.asarray(types)
    if types.dtype.kind in "iu":
        unknown = set(np.unique(types).tolist()) - set(TYPE_IDS)
        if unknown:
            raise DataFormatError(where, f"unknown Waymo type ids {sorted(unknown)} (1 vehicle, 2 pedestrian, "
                                         "3 sign, 4 cyclist)")
        return np.array([TYPE_IDS[int(t)] for t in types], dtype="<U10")
    return np.char.lower(types.astype(str))


def _frame(d: dict, keys: tuple[str, ...], where: str) -> dict:
    missing = [k for k in keys if k not in d]
    if missing:
        raise DataFormatError(where, f"lacks {missing}")
    boxes = np.asarray(d["boxes"], np.float64)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 7)
    if boxes.ndim != 2 or boxes.shape[1] < 7:
        raise DataFormatError(where, f"boxes must be [M, 7+], got {boxes.shape}")
    out = {"boxes": boxes[:, :7], "types": _names(d["types"], where)}
    for k in keys[2:]:
        out[k] = np.asarray(d[k]).reshape(-1)
    for k in ("difficulty", "levels"):
        if k in d:
            out[k] = np.asarray(d[k]).reshape(-1)
    out["overlap_with_nlz"] = np.asarray(d.get("overlap_with_nlz", np.zeros(len(boxes))), bool).reshape(-1)
    for k, v in out.items():
        if k != "boxes" and len(v) != len(boxes):
            raise DataFormatError(where, f"'{k}' has {len(v)} entries for {len(boxes)} boxes")
    return out


def float32_values(x) -> np.ndarray:
    """float64 [N] holding x rounded to float32: scores and score cutoffs are proto floats in the official tools,
    so a score of 0.57 meets the cutoff 0.57 (in float64 the float32 score 0.57 lies below 0.57)."""
    return np.asarray(x, np.float32).astype(np.float64)


def gt_levels(g: dict, cls: str) -> tuple[np.ndarray, np.ndarray]:
    """(bool [M]: the ground-truth boxes of class `cls` that are scored, int64: their levels, 1 or 2). By default
    the boxes with LiDAR points at the level their ``difficulty`` sets (1 or 2), or where it is unset (0, or no
    such field) LEVEL_2 at <= 5 points, else LEVEL_1 (compute_detection_metrics_main, OpenPCDet's waymo_eval, and
    waymo_breakdown.detection_levels for files); with ``levels`` (1 or 2 per
    box, set by the caller, as the official tools do for Objects files) every box of the class at its given level."""
    if "levels" in g:
        sel = g["types"] == cls
        return sel, np.where(g["levels"][sel] == 2, 2, 1).astype(np.int64)
    sel = (g["types"] == cls) & (g["num_points"] > 0)
    level = np.where(g["num_points"][sel] <= 5, 2, 1)
    if "difficulty" in g:  # a level the label sets stands; the points decide only where it is unset (0)
        level = np.where(g["difficulty"][sel] > 0, g["difficulty"][sel], level)
    return sel, level.astype(np.int64)


def _heading_accuracy(pd_heading: np.ndarray, gt_heading: np.ndarray) -> np.ndarray:
    diff = np.abs(np.mod(pd_heading[:, None] + np.pi, 2 * np.pi) - np.mod(gt_heading[None, :] + np.pi, 2 * np.pi))
    diff = np.where(diff > np.pi, 2 * np.pi - diff, diff)
    return np.clip(1.0 - diff / np.pi, 0.0, 1.0)


def waymo_eval(gt: list[dict], dt: list[dict], classes: tuple[str, ...] = WAYMO_CLASSES,
               score_cutoffs: tuple[float, ...] = DEFAULT_SCORE_CUTOFFS) -> dict:
    """Waymo AP / APH per class at LEVEL_1 and LEVEL_2 (fractions 0..1).

    gt: per frame ``boxes`` float [M, 7] (x, y, z, dx, dy, dz, heading, vehicle frame),
    ``types`` [M] (names or Waymo ids 1 / 2 / 4), ``num_points`` int [M], optional ``difficulty`` [M]
    (1 or 2; 0 means unset) or ``levels`` [M] (gt_levels). dt: per frame ``boxes``, ``types``, ``scores`` [K],
    optional ``overlap_with_nlz`` bool [K] (an unmatched prediction so flagged is not a false positive).
    Returns ``{cls: {"LEVEL_1": {"AP", "APH", "num_gt"}, "LEVEL_2": {...}}, "mean": {level: {"AP", "APH"}}}``;
    the mean is over the requested classes.
    """
    if len(gt) != len(dt):
        raise DataFormatError(None, f"{len(gt)} ground-truth frames but {len(dt)} prediction frames")
    for cls in classes:
        if cls not in IOU_THRESHOLDS:
            raise ConfigError(f"Waymo class {cls!r} is not evaluated; use {list(IOU_THRESHOLDS)}")
    gts = [_frame(g, ("boxes", "types", "num_points"), f"ground truth frame {i}") for i, g in enumerate(gt)]
    dts = [_frame(d, ("boxes", "types", "scores"), f"predictions frame {i}") for i, d in enumerate(dt)]
    cutoffs = float32_values(sorted(score_cutoffs))
    result: dict = {}
    for cls in classes:
        iou_blocks, ha_blocks, scores, in_zone, levels, pd_n, gt_n = [], [], [], [], [], [], []
        for g, d in zip(gts, dts, strict=True):
            gsel, lvl = gt_levels(g, cls)
            dsel = d["types"] == cls
            order = np.argsort(-d["scores"][dsel], kind="stable")
            pb, gb = d["boxes"][dsel][order], g["boxes"][gsel]
            scores.append(float32_values(d["scores"][dsel][order]))
            in_zone.append(d["overlap_with_nlz"][dsel][order])
            levels.append(lvl.astype(np.int64))
            pd_n.append(len(pb))
            gt_n.append(len(gb))
            if len(pb) and len(gb):
                iou_blocks.append(float32_values(iou_3d(pb, gb)).ravel())
                ha_blocks.append(_heading_accuracy(pb[:, 6], gb[:, 6]).ravel())
            else:
                iou_blocks.append(np.zeros(0))
                ha_blocks.append(np.zeros(0))
        blk_off = np.concatenate([[0], np.cumsum([b.size for b in iou_blocks])]).astype(np.int64)
        counts = _waymo_counts(np.concatenate(iou_blocks) if iou_blocks else np.zeros(0),
                               np.concatenate(ha_blocks) if ha_blocks else np.zeros(0), blk_off,
                               np.concatenate([[0], np.cumsum(pd_n)]).astype(np.int64),
                               np.concatenate([[0], np.cumsum(gt_n)]).astype(np.int64),
                               np.concatenate(scores) if scores else np.zeros(0),
                               np.concatenate(in_zone) if in_zone else np.zeros(0, bool),
                               np.concatenate(levels) if levels else np.zeros(0, np.int64),
                               float(float32_values(IOU_THRESHOLDS[cls])), cutoffs)
        all_levels = np.concatenate(levels) if levels else np.zeros(0, np.int64)
        result[cls] = {}
        for lv, name in enumerate(LEVELS):
            ap, aph = _ap_aph(counts[:, lv])
            result[cls][name] = {"AP": ap, "APH": aph, "num_gt": int(np.sum(all_levels <= lv + 1))}
    result["mean"] = {name: {m: float(np.mean([result[c][name][m] for c in classes])) if classes else 0.0
                             for m in ("AP", "APH")} for name in LEVELS}
    return result


def _ap_aph(counts: np.ndarray) -> tuple[float, float]:
    """AP and APH from per-cutoff [K, 4] (TP, FP, FN, heading-accuracy sum), as ToDetectionMetrics."""
    tp, fp, fn, sum_ha = counts.T
    det = tp + fp
    pos = tp + fn
    safe_det = np.where(det > 0, det, 1.0)
    prec = np.where(det > 0, tp / safe_det, 0.0)
    prec_h = np.where(det > 0, sum_ha / safe_det, 0.0)
    recall = np.where(pos > 0, tp / np.where(pos > 0, pos, 1.0), 0.0)
    prec = np.where(recall == 0, 1.0, prec)
    prec_h = np.where(recall == 0, 1.0, prec_h)
    return mean_average_precision(prec, recall), mean_average_precision(prec_h, recall)
