"""Waymo Open Dataset 3D tracking metrics (MOTA, MOTP, miss, mismatch, false positives) at LEVEL_1 and LEVEL_2,
without TensorFlow.

What is computed, following ``waymo_open_dataset/metrics`` (mot.cc, tracking_metrics.cc, metrics_utils.cc):

- per object type, per segment (frames in time order), per score cutoff (0.00, 0.01, ..., 1.00, as the
  detection metrics here), the CLEAR MOT mapping procedure (Bernardin and Stiefelhagen 2006) over the predictions
  scoring >= the cutoff (both as float32, the protos' type) and the ground truth with LiDAR points: (1) each
  (object, hypothesis) pair of the mapping kept so far stays matched when both are in the frame and their 3D IoU
  reaches the class threshold (vehicle 0.7,
  pedestrian 0.5, cyclist 0.5, as detection); (2) the rest are matched by a Hungarian assignment maximising the
  sum of IoUs over the pairs at or above the threshold; a new pair that contradicts the object's earlier
  hypothesis is a mismatch, and so is one that takes the hypothesis of an object gone from the frame (an
  eviction, mot.cc's rule: an object still in the frame but unmatched is a miss, not also a mismatch);
  (3) unmatched predictions are false positives (but those flagged ``overlap_with_nlz``, which are neither,
  mot.cc), unmatched objects misses at a level >= their own;
- an object's level: LEVEL_2 when it holds <= 5 points or its tracking difficulty says 2; at LEVEL_1 a matched
  LEVEL_2 object counts as an object (the official num_objects_gt: all objects less the unmatched ones above the
  level);
- per class and level, the counts of all segments summed at each cutoff; MOTA = 1 - (misses + false positives +
  mismatches) / objects, and the reported cutoff is the one with the highest MOTA, the lowest on ties; MOTP =
  mean (1 - IoU) over the matches there; miss, mismatch and fp are those counts over the objects. As the
  official code, a class whose MOTA stays <= 0 at every cutoff reports zeros.

Boxes are x, y, z, dx, dy, dz, heading in each frame's own (vehicle) frame: IoUs do not need poses. Ids are any
hashable values (Waymo: ``key.laser_object_id`` strings); one id twice in a frame is a DataFormatError.
IoUs are float32 as the official matcher's (compared with float32 thresholds); its assignment's integer weights
(quantised IoUs) are not copied, which can only change ties.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pc3d.errors import ConfigError, DataFormatError
from pc3d.eval.waymo import (
    DEFAULT_SCORE_CUTOFFS,
    IOU_THRESHOLDS,
    LEVELS,
    WAYMO_CLASSES,
    _frame,
    float32_values,
    gt_levels,
    hungarian_max,
)
from pc3d.geometry import iou_3d

# per cutoff: misses L1, misses L2, objects L1, objects L2, false positives, mismatches, matches, matching cost
_MISS, _OBJECTS, _FP, _MISMATCH, _MATCHES, _COST = 0, 2, 4, 5, 6, 7


def _class_frames(frames_gt: Sequence[dict], frames_dt: Sequence[dict], cls: str, where: str,
                  duplicate_ids: str = "error") -> list[tuple]:
    """Per frame of a segment: (gt ids, gt levels, dt ids sorted by descending score, their scores, their
    overlap_with_nlz flags, IoU [P, G], their positions in the frame (duplicate_ids "first") or None)."""
    out = []
    for f, (g, d) in enumerate(zip(frames_gt, frames_dt, strict=True)):
        gsel, level = gt_levels(g, cls)
        dsel = np.flatnonzero(d["types"] == cls)
        dsel = dsel[np.argsort(-d["scores"][dsel], kind="stable")]
        gt_ids, dt_ids = g["ids"][gsel].tolist(), d["ids"][dsel].tolist()
        checked = [(gt_ids, "ground-truth")] + ([(dt_ids, "predicted")] if duplicate_ids == "error" else [])
        for ids, who in checked:
            if len(set(ids)) < len(ids):
                twice = next(i for i in ids if ids.count(i) > 1)
                raise DataFormatError(where, f"frame {f}: {who} {cls} id {twice!r} appears twice")
        iou = (float32_values(iou_3d(d["boxes"][dsel], g["boxes"][gsel])).reshape(len(dsel), -1)
               if len(dsel) and gsel.any() else np.zeros((len(dsel), int(gsel.sum()))))
        out.append((gt_ids, level, dt_ids, float32_values(d["scores"][dsel]), d["overlap_with_nlz"][dsel], iou,
                    None if duplicate_ids == "error" else dsel))
    return out


def _mot_counts(frames: list[tuple], threshold: float, cutoff: float) -> np.ndarray:
    """The CLEAR MOT counts [8] (the _MISS .. _COST layout) of one segment at one score cutoff."""
    counts = np.zeros(8)
    mapping: dict = {}   # object id -> hypothesis id, M_t (kept for objects out of sight)
    for gt_ids, level, dt_ids, scores, in_zone, iou, positions in frames:
        n = int(np.sum(scores >= cutoff))
        rows = list(range(n))
        if positions is not None:  # an id twice: its first box in the frame above the cutoff stands, the rest go
            first: dict = {}
            for i in rows:
                if dt_ids[i] not in first or positions[i] < positions[first[dt_ids[i]]]:
                    first[dt_ids[i]] = i
            rows = sorted(first.values())
        pd_index = {dt_ids[i]: i for i in rows}
        gt_index = {g: j for j, g in enumerate(gt_ids)}
        new: dict = {}
        for g, p in mapping.items():  # step 1: the pairs still valid
            i, j = pd_index.get(p), gt_index.get(g)
            if i is not None and j is not None and iou[i, j] >= threshold:
                new[g] = p
                counts[_COST] += 1.0 - iou[i, j]
        taken = set(new.values())
        rest_pd = [i for i in rows if dt_ids[i] not in taken]
        rest_gt = [j for j, g in enumerate(gt_ids) if g not in new]
        matched_gt, matched_pd = set(), set()
        if rest_pd and rest_gt:  # step 2: a Hungarian assignment of the rest
            w = iou[np.ix_(rest_pd, rest_gt)]
            w = np.where(w >= threshold, w, 0.0)
            pairs = (enumerate(hungarian_max(w)) if len(rest_pd) <= len(rest_gt) else
                     ((r, c) for c, r in enumerate(hungarian_max(np.ascontiguousarray(w.T)))))
            for r, c in pairs:
                if c >= 0 and r >= 0 and w[r, c] > 0:
                    new[gt_ids[rest_gt[c]]] = dt_ids[rest_pd[r]]
                    matched_gt.add(rest_gt[c])
                    matched_pd.add(rest_pd[r])
                    counts[_COST] += 1.0 - w[r, c]
        counts[_FP] += sum(1 for i in rest_pd if i not in matched_pd and not in_zone[i])
        unmatched_levels = np.array([level[j] for j in rest_gt if j not in matched_gt], np.int64)
        for lv in (0, 1):
            counts[_MISS + lv] += np.sum(unmatched_levels <= lv + 1)
            counts[_OBJECTS + lv] += len(gt_ids) - np.sum(unmatched_levels > lv + 1)
        counts[_MATCHES] += len(new)
        # mismatches: an object now on another hypothesis, or a hypothesis taken from an object gone from the frame
        owner = {p: g for g, p in mapping.items()}
        for g, p in new.items():
            old = owner.get(p)
            counts[_MISMATCH] += g in mapping and mapping[g] != p
            counts[_MISMATCH] += old is not None and old not in gt_index and old not in new
            if old is not None and old not in new:
                del mapping[old]  # evicted: the hypothesis now belongs to g
            mapping[g] = p
    return counts


def _metrics(counts: np.ndarray, cutoffs: np.ndarray, lv: int) -> dict:
    """The best-MOTA cutoff's metrics of a class at level lv from its per-cutoff counts [K, 8]."""
    best = {"MOTA": 0.0, "MOTP": 0.0, "miss": 0.0, "mismatch": 0.0, "fp": 0.0, "score_cutoff": 0.0,
            "num_gt": int(counts[0, _OBJECTS + lv]) if len(counts) else 0}
    for c, cutoff in zip(counts, cutoffs, strict=True):
        objects = c[_OBJECTS + lv]
        if objects == 0:
            continue
        miss, fp, mismatch = c[_MISS + lv] / objects, c[_FP] / objects, c[_MISMATCH] / objects
        mota = 1.0 - (miss + fp + mismatch)
        if best["MOTA"] < mota:
            best.update(MOTA=float(mota), MOTP=float(c[_COST] / c[_MATCHES]) if c[_MATCHES] else 0.0,
                        miss=float(miss), mismatch=float(mismatch), fp=float(fp), score_cutoff=float(cutoff),
                        num_gt=int(objects))
    return best


def waymo_tracking_eval(gt: Sequence[Sequence[dict]], dt: Sequence[Sequence[dict]],
                        classes: tuple[str, ...] = WAYMO_CLASSES,
                        score_cutoffs: tuple[float, ...] = DEFAULT_SCORE_CUTOFFS, duplicate_ids: str = "error") -> dict:
    """Waymo tracking metrics per class at LEVEL_1 and LEVEL_2 (fractions 0..1).

    gt, dt: per segment, per frame in time order (the same frames in both): gt ``boxes`` [M, 7+], ``types``
    (names or Waymo ids), ``num_points`` [M], ``ids`` [M], optional ``difficulty`` [M] (tracking level, 1 / 2)
    or ``levels`` [M] (pc3d.eval.waymo.gt_levels);
    dt ``boxes`` [K, 7+], ``types``, ``scores`` [K], ``ids`` [K] (track ids), optional ``overlap_with_nlz`` bool
    [K] (an unmatched prediction so flagged is not a false positive).
    Returns ``{cls: {"LEVEL_1": {"MOTA", "MOTP", "miss", "mismatch", "fp", "score_cutoff", "num_gt"}, ...},
    "mean": {level: {"MOTA", "MOTP"}}}``; the mean is over the requested classes.
    duplicate_ids: a predicted id twice in a frame is a DataFormatError ("error"), or, as the official tools
    (mot.cc) do, its first box in the frame among those above each cutoff stands and the others are ignored, not
    even false positives ("first").
    """
    if duplicate_ids not in ("error", "first"):
        raise ConfigError(f"duplicate_ids must be 'error' or 'first', got {duplicate_ids!r}")
    if len(gt) != len(dt):
        raise DataFormatError(None, f"{len(gt)} ground-truth segments but {len(dt)} prediction segments")
    for cls in classes:
        if cls not in IOU_THRESHOLDS:
            raise ConfigError(f"Waymo class {cls!r} is not evaluated; use {list(IOU_THRESHOLDS)}")
    segments = []
    for s, (sg, sd) in enumerate(zip(gt, dt, strict=True)):
        if len(sg) != len(sd):
            raise DataFormatError(f"segment {s}", f"{len(sg)} ground-truth frames but {len(sd)} prediction frames")
        segments.append(([_frame(g, ("boxes", "types", "num_points", "ids"), f"segment {s} ground truth frame {i}")
                          for i, g in enumerate(sg)],
                         [_frame(d, ("boxes", "types", "scores", "ids"), f"segment {s} predictions frame {i}")
                          for i, d in enumerate(sd)]))
    cutoffs = np.asarray(sorted(score_cutoffs), np.float64)
    result: dict = {}
    for cls in classes:
        counts = np.zeros((len(cutoffs), 8))
        for s, (sg, sd) in enumerate(segments):
            frames = _class_frames(sg, sd, cls, f"segment {s}", duplicate_ids)
            for k, cutoff in enumerate(float32_values(cutoffs)):  # scores and cutoffs compared as float32 (protos)
                counts[k] += _mot_counts(frames, float(float32_values(IOU_THRESHOLDS[cls])), cutoff)
        result[cls] = {name: _metrics(counts, cutoffs, lv) for lv, name in enumerate(LEVELS)}
    result["mean"] = {name: {m: float(np.mean([result[c][name][m] for c in classes])) if classes else 0.0
                             for m in ("MOTA", "MOTP")} for name in LEVELS}
    return result


def tracking_table(result: dict, classes: Sequence[str], title: str) -> str:
    """Markdown table of a waymo_tracking_eval result (percent; MOTP as 1 - IoU, lower is better)."""
    lines = [title, "", "| class | level | MOTA | MOTP | miss | mismatch | FP | score cutoff | objects |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for cls in classes:
        for level in LEVELS:
            r = result[cls.lower()][level]
            lines.append(f"| {cls} | {level[-1]} | {100 * r['MOTA']:.2f} | {100 * r['MOTP']:.2f} | "
                         f"{100 * r['miss']:.2f} | {100 * r['mismatch']:.2f} | {100 * r['fp']:.2f} | "
                         f"{r['score_cutoff']:.2f} | {r['num_gt']} |")
    m = result["mean"]
    lines.append(f"| mean | 1 / 2 | {100 * m['LEVEL_1']['MOTA']:.2f} / {100 * m['LEVEL_2']['MOTA']:.2f} | "
                 f"{100 * m['LEVEL_1']['MOTP']:.2f} / {100 * m['LEVEL_2']['MOTP']:.2f} | | | | | |")
    zero = [f"{cls} {level}" for cls in classes for level in LEVELS
            if result[cls.lower()][level]["num_gt"] and result[cls.lower()][level]["MOTA"] <= 0]
    if zero:
        lines += ["", f"No score cutoff gives {', '.join(zero)} a MOTA above 0: as in the official metrics, those "
                      "rows report zeros (miss 0 does not mean that nothing was missed)."]
    return "\n".join(lines)
