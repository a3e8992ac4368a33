"""Semantic segmentation and moving-object segmentation metrics from a confusion matrix.

Conventions (stated because the benchmarks differ):

- ``absent="zero"`` (SemanticKITTI, the official semantic-kitti-api): IoU = TP / (TP + FP + FN + 1e-15),
  so a class absent from both prediction and ground truth counts as IoU 0 in the mean over all
  19 classes; ``absent="nan"`` (ScanNet's benchmark script): such a class has IoU NaN and is left
  out of the mean. Mean class accuracy follows the same choice.
- Points whose ground truth is ``ignore_index`` are dropped. A labelled point *predicted* as ``ignore_index``
  (no class: a point without a voxel under ``unmapped="ignore"``, say) is a miss: a false negative of its class
  and nobody's false positive. The semantic-kitti-api zeroes only the ignored ground truth's column of its
  confusion matrix (auxiliary/np_ioueval.py), and ScanNet's evaluate_semantic_label.py scores an invalid
  prediction as a miss. ``confusion_matrix`` leaves those points out and ``missed_counts`` counts them;
  ``segmentation_metrics(missed=...)`` and ``SegmentationAccumulator`` add them to the false negatives. Overall
  accuracy leaves them out of its denominator, as the api's getacc does.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pc3d.errors import ConfigError, DataFormatError

_EPS = 1e-15


def confusion_matrix(pred: np.ndarray, gt: np.ndarray, num_classes: int, ignore_index: int | None = None) -> np.ndarray:
    """int64 [C, C] counts, rows = ground truth, columns = prediction, of labels in [0, C); points whose label or
    prediction is ignore_index are left out (missed_counts counts the labelled ones predicted so).

    pred, gt: integer arrays of the same shape (any). Raises DataFormatError on shape mismatch or
    on a label outside [0, C) that is not ignore_index.
    """
    pred = np.asarray(pred).reshape(-1)
    gt = np.asarray(gt).reshape(-1)
    if pred.shape != gt.shape:
        raise DataFormatError(None, f"{pred.size} predictions for {gt.size} labels")
    keep = np.ones(gt.shape, bool) if ignore_index is None else (gt != ignore_index) & (pred != ignore_index)
    pred, gt = pred[keep].astype(np.int64), gt[keep].astype(np.int64)
    for name, arr in (("prediction", pred), ("label", gt)):
        if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
            raise DataFormatError(None, f"{name} ids must be in [0, {num_classes}) or the ignore index "
                                        f"{ignore_index}, got [{arr.min()}, {arr.max()}]")
    return np.bincount(gt * num_classes + pred, minlength=num_classes**2).reshape(num_classes, num_classes)


def missed_counts(pred: np.ndarray, gt: np.ndarray, num_classes: int, ignore_index: int | None) -> np.ndarray:
    """int64 [C]: the points of each ground-truth class predicted as ignore_index (no class), the misses that
    confusion_matrix leaves out."""
    pred, gt = np.asarray(pred).reshape(-1), np.asarray(gt).reshape(-1)
    if pred.shape != gt.shape:
        raise DataFormatError(None, f"{pred.size} predictions for {gt.size} labels")
    if ignore_index is None:
        return np.zeros(num_classes, np.int64)
    gt = gt[(pred == ignore_index) & (gt != ignore_index)].astype(np.int64)
    return np.bincount(gt[(gt >= 0) & (gt < num_classes)], minlength=num_classes)[:num_classes]


def segmentation_metrics(conf: np.ndarray, class_names: Sequence[str] | None = None, absent: str = "zero",
                         missed: np.ndarray | None = None) -> dict:
    """mIoU, per-class IoU, overall accuracy and mean class accuracy of a [C, C] confusion matrix and the [C]
    points of each class predicted as no class (missed_counts: false negatives, in IoU and class accuracy).

    Returns ``{"mIoU", "oAcc", "mAcc", "iou": {name: float}, "acc": {name: float}}`` (fractions;
    NaN for absent classes when absent="nan").
    """
    if absent not in ("zero", "nan"):
        raise ConfigError(f"absent must be 'zero' (SemanticKITTI) or 'nan' (ScanNet), got {absent!r}")
    conf = np.asarray(conf, np.float64)
    num_classes = conf.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    if conf.shape != (num_classes, num_classes) or len(names) != num_classes:
        raise DataFormatError(None, f"confusion matrix {conf.shape} does not fit {len(names)} class names")
    tp = np.diag(conf)
    gt_count = conf.sum(1) + (0.0 if missed is None else np.asarray(missed, np.float64).reshape(num_classes))
    union = gt_count + conf.sum(0) - tp
    if absent == "zero":
        iou = tp / (union + _EPS)
        acc = tp / (gt_count + _EPS)
        miou, macc = float(iou.mean()), float(acc.mean())
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(union > 0, tp / union, np.nan)
            acc = np.where(gt_count > 0, tp / gt_count, np.nan)
        miou = float(np.nanmean(iou)) if np.any(union > 0) else float("nan")
        macc = float(np.nanmean(acc)) if np.any(gt_count > 0) else float("nan")
    total = conf.sum()
    return {"mIoU": miou, "oAcc": float(tp.sum() / total) if total else float("nan"), "mAcc": macc,
            "iou": dict(zip(names, map(float, iou), strict=True)),
            "acc": dict(zip(names, map(float, acc), strict=True))}


def pseudo_label_quality(conf_all: np.ndarray, conf_hard: np.ndarray, class_names: Sequence[str] | None = None,
                         ignore_index: int | None = None) -> dict:
    """How good a teacher's pseudo labels are, scored against labels it never read (analysis only: no training
    run sees these numbers; tools/pseudo_quality.py).

    conf_all: [C, C] counts, rows ground truth, columns the teacher's label, over every scored point; conf_hard:
    the same over the points given a hard pseudo label (a part of conf_all). ignore_index: a ground-truth class
    left out (its row dropped). Only classes with ground-truth points are scored.

    Returns ``{"mIoU": mean IoU of conf_all over the scored classes, "coverage": share of the scored points with
    a hard label, "accuracy": share of those labels that are right, "per_class": {name: {"points", "iou",
    "coverage" (share of the class's points given a hard label, right or wrong), "precision" (share of the hard
    labels naming the class that are right; NaN where none does)}}}`` (fractions).
    """
    conf_all, conf_hard = np.asarray(conf_all, np.int64), np.asarray(conf_hard, np.int64)
    num_classes = conf_all.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    if conf_all.shape != (num_classes, num_classes) or conf_hard.shape != conf_all.shape or len(names) != num_classes:
        raise DataFormatError(None, f"confusion matrices {conf_all.shape} / {conf_hard.shape} do not fit "
                                    f"{len(names)} class names")
    if np.any(conf_hard > conf_all):
        raise DataFormatError(None, "conf_hard counts more points than conf_all in some cell: it must be a part")
    if ignore_index is not None:
        conf_all, conf_hard = conf_all.copy(), conf_hard.copy()
        conf_all[ignore_index], conf_hard[ignore_index] = 0, 0
    points = conf_all.sum(1)
    tp = np.diag(conf_all)
    iou = tp / np.maximum(points + conf_all.sum(0) - tp, 1)
    given = conf_hard.sum(1)
    named = conf_hard.sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(named > 0, np.diag(conf_hard) / named, np.nan)
    scored = np.flatnonzero(points)
    total, hard = points.sum(), given.sum()
    return {"mIoU": float(iou[scored].mean()) if scored.size else float("nan"),
            "coverage": float(hard / total) if total else float("nan"),
            "accuracy": float(np.trace(conf_hard) / hard) if hard else float("nan"),
            "per_class": {names[c]: {"points": int(points[c]), "iou": float(iou[c]),
                                     "coverage": float(given[c] / points[c]), "precision": float(precision[c])}
                          for c in scored}}


def mos_iou(pred_moving: np.ndarray, gt_moving: np.ndarray, ignore: np.ndarray | None = None) -> float:
    """IoU of the moving class (LiDAR-MOS): bool [N] predictions and labels, optional bool [N] ignore mask."""
    counts = _mos_counts(pred_moving, gt_moving, ignore)
    return float(counts[0] / (counts.sum() + _EPS))


def _mos_counts(pred_moving, gt_moving, ignore) -> np.ndarray:
    pred = np.asarray(pred_moving, bool).reshape(-1)
    gt = np.asarray(gt_moving, bool).reshape(-1)
    if pred.shape != gt.shape:
        raise DataFormatError(None, f"{pred.size} predictions for {gt.size} labels")
    if ignore is not None:
        keep = ~np.asarray(ignore, bool).reshape(-1)
        pred, gt = pred[keep], gt[keep]
    return np.array([np.sum(pred & gt), np.sum(pred & ~gt), np.sum(~pred & gt)], np.int64)  # tp, fp, fn


class SegmentationAccumulator:
    """Sums confusion matrices over frames; ``metrics()`` as segmentation_metrics on the total."""

    def __init__(self, num_classes: int, ignore_index: int | None = None, class_names: Sequence[str] | None = None,
                 absent: str = "zero"):
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.class_names, self.absent = class_names, absent
        self.conf = np.zeros((num_classes, num_classes), np.int64)
        self.missed = np.zeros(num_classes, np.int64)  # labelled points predicted as no class (ignore_index)

    def update(self, pred: np.ndarray, gt: np.ndarray) -> None:
        """Add one frame's predictions and labels (integer arrays of equal shape)."""
        self.conf += confusion_matrix(pred, gt, self.num_classes, self.ignore_index)
        self.missed += missed_counts(pred, gt, self.num_classes, self.ignore_index)

    def metrics(self) -> dict:
        return segmentation_metrics(self.conf, self.class_names, self.absent, self.missed)


class MosAccumulator:
    """Sums moving-class TP / FP / FN over frames; ``iou()`` is the MOS IoU of the whole set."""

    def __init__(self) -> None:
        self.counts = np.zeros(3, np.int64)

    def update(self, pred_moving: np.ndarray, gt_moving: np.ndarray, ignore: np.ndarray | None = None) -> None:
        self.counts += _mos_counts(pred_moving, gt_moving, ignore)

    def iou(self) -> float:
        return float(self.counts[0] / (self.counts.sum() + _EPS))
