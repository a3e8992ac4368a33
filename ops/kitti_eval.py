"""KITTI object-evaluation matching: the devkit's per-frame statistics and score thresholds.

One call evaluates one (class, difficulty, metric, overlap threshold) over all frames. Frames are
concatenated: frame f owns gt rows [gt_off[f], gt_off[f+1]), detection rows [dt_off[f],
dt_off[f+1]) and the row-major [D_f, G_f] overlap block at ov_off[f] (detections x ground truth,
as the devkit indexes it). Ignore codes follow the devkit: gt 0 = counted, 1 = ignored (harder
than the level or a neighbouring class), -1 = other class; detection 0 = counted, 1 = ignored
(lower than the minimum 2D height), -1 = other class.
"""
from __future__ import annotations

import numba as nb
import numpy as np

from . import numba_cache  # noqa: F401  (process-safe on-disk kernel cache)

_SERIAL = {"cache": True, "nogil": True, "boundscheck": False}

N_SAMPLE_PTS = 41
_NO_DETECTION = -10000000.0


@nb.njit(**_SERIAL)
def _frame_statistics(ov, n_dt, n_gt, ignored_gt, ignored_dt, scores, gt_alpha, dt_alpha, dc_ov, n_dc,
                      min_overlap, thresh, compute_fp, compute_aos, tp_scores):
    """(tp, fp, fn, similarity, n_tp_scores) of one frame; TP scores are written to tp_scores.

    ov is the flat [n_dt, n_gt] overlap block, dc_ov the flat [n_dt, n_dc] overlap of the
    detections with the DontCare boxes (intersection over detection area).
    """
    assigned = np.zeros(n_dt, np.bool_)
    below = np.zeros(n_dt, np.bool_)
    if compute_fp:
        for j in range(n_dt):
            below[j] = scores[j] < thresh
    tp = 0
    fp = 0
    fn = 0
    n_scores = 0
    similarity = 0.0
    n_delta = 0
    delta = np.empty(n_gt, np.float64)
    for i in range(n_gt):
        if ignored_gt[i] == -1:
            continue
        det_idx = -1
        valid = _NO_DETECTION
        max_overlap = 0.0
        assigned_ignored = False
        for j in range(n_dt):
            if ignored_dt[j] == -1 or assigned[j] or below[j]:
                continue
            o = ov[j * n_gt + i]
            # threshold pass: the highest-scoring candidate; PR pass: the best overlap,
            # falling back to a too-small detection only when nothing else matches
            if not compute_fp and o > min_overlap and scores[j] > valid:
                det_idx = j
                valid = scores[j]
            elif compute_fp and o > min_overlap and (o > max_overlap or assigned_ignored) and ignored_dt[j] == 0:
                max_overlap = o
                det_idx = j
                valid = 1.0
                assigned_ignored = False
            elif compute_fp and o > min_overlap and valid == _NO_DETECTION and ignored_dt[j] == 1:
                det_idx = j
                valid = 1.0
                assigned_ignored = True
        if valid == _NO_DETECTION and ignored_gt[i] == 0:
            fn += 1
        elif valid != _NO_DETECTION and (ignored_gt[i] == 1 or ignored_dt[det_idx] == 1):
            assigned[det_idx] = True
        elif valid != _NO_DETECTION:
            tp += 1
            tp_scores[n_scores] = scores[det_idx]
            n_scores += 1
            if compute_aos:
                delta[n_delta] = gt_alpha[i] - dt_alpha[det_idx]
                n_delta += 1
            assigned[det_idx] = True
    if compute_fp:
        for j in range(n_dt):
            if not (assigned[j] or ignored_dt[j] == -1 or ignored_dt[j] == 1 or below[j]):
                fp += 1
        n_stuff = 0
        for c in range(n_dc):
            for j in range(n_dt):
                if assigned[j] or ignored_dt[j] == -1 or ignored_dt[j] == 1 or below[j]:
                    continue
                if dc_ov[j * n_dc + c] > min_overlap:
                    assigned[j] = True
                    n_stuff += 1
        fp -= n_stuff
        if compute_aos:
            if tp > 0 or fp > 0:
                for k in range(n_delta):
                    similarity += (1.0 + np.cos(delta[k])) / 2.0
            else:
                similarity = -1.0
    return tp, fp, fn, similarity, n_scores


@nb.njit(**_SERIAL)
def score_thresholds(tp_scores, num_gt):
    """The devkit's getThresholds: scores at (about) 41 linearly spaced recall steps."""
    v = np.sort(tp_scores)[::-1]
    out = np.empty(N_SAMPLE_PTS, np.float64)
    n_out = 0
    current = 0.0
    n = v.shape[0]
    for i in range(n):
        l_recall = (i + 1) / num_gt
        r_recall = (i + 2) / num_gt if i < n - 1 else l_recall
        if (r_recall - current) < (current - l_recall) and i < n - 1:
            continue
        if n_out == N_SAMPLE_PTS:
            break
        out[n_out] = v[i]
        n_out += 1
        current += 1.0 / (N_SAMPLE_PTS - 1.0)
    return out[:n_out]


@nb.njit(**_SERIAL)
def kitti_pr(ov, ov_off, gt_off, dt_off, dc_ov, dc_ov_off, dc_num, ignored_gt, ignored_dt, scores,
             gt_alpha, dt_alpha, min_overlap, num_valid_gt, compute_aos):
    """(thresholds [T], pr float64 [T, 4] = tp, fp, fn, orientation similarity, number of ground truths found
    by any detection at min_overlap: the end of the recall curve, whatever the scores) over all frames."""
    n_frames = gt_off.shape[0] - 1
    all_scores = np.empty(max(1, gt_off[n_frames]), np.float64)
    n_all = 0
    buf = np.empty(max(1, gt_off[n_frames]), np.float64)
    for f in range(n_frames):
        g0, g1, d0, d1 = gt_off[f], gt_off[f + 1], dt_off[f], dt_off[f + 1]
        res = _frame_statistics(ov[ov_off[f]:ov_off[f + 1]], d1 - d0, g1 - g0, ignored_gt[g0:g1],
                                ignored_dt[d0:d1], scores[d0:d1], gt_alpha[g0:g1], dt_alpha[d0:d1],
                                dc_ov[dc_ov_off[f]:dc_ov_off[f + 1]], dc_num[f], min_overlap, 0.0,
                                False, False, buf)
        n_tp = res[4]
        all_scores[n_all:n_all + n_tp] = buf[:n_tp]
        n_all += n_tp
    if num_valid_gt == 0 or n_all == 0:
        return np.empty(0, np.float64), np.zeros((0, 4), np.float64), n_all
    thresholds = score_thresholds(all_scores[:n_all], float(num_valid_gt))
    pr = np.zeros((thresholds.shape[0], 4), np.float64)
    for f in range(n_frames):
        g0, g1, d0, d1 = gt_off[f], gt_off[f + 1], dt_off[f], dt_off[f + 1]
        for t in range(thresholds.shape[0]):
            tp, fp, fn, sim, _ = _frame_statistics(
                ov[ov_off[f]:ov_off[f + 1]], d1 - d0, g1 - g0, ignored_gt[g0:g1], ignored_dt[d0:d1],
                scores[d0:d1], gt_alpha[g0:g1], dt_alpha[d0:d1], dc_ov[dc_ov_off[f]:dc_ov_off[f + 1]],
                dc_num[f], min_overlap, thresholds[t], True, compute_aos, buf)
            pr[t, 0] += tp
            pr[t, 1] += fp
            pr[t, 2] += fn
            if sim != -1.0:
                pr[t, 3] += sim
    return thresholds, pr, n_all
