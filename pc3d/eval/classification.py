"""Shape classification accuracy (ModelNet40): overall accuracy and mean class accuracy.

Mean class accuracy averages the per-class recall over the classes present in the labels, as the
PointNet / PointNet++ evaluation does.
"""
from __future__ import annotations

import numpy as np

from pc3d.errors import DataFormatError


def classification_metrics(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> dict:
    """``{"oAcc", "mAcc", "acc": [C] per-class accuracy (NaN for classes without samples)}`` of int labels [N]."""
    pred = np.asarray(pred).reshape(-1).astype(np.int64)
    gt = np.asarray(gt).reshape(-1).astype(np.int64)
    if pred.shape != gt.shape:
        raise DataFormatError(None, f"{pred.size} predictions for {gt.size} labels")
    if gt.size and (gt.min() < 0 or gt.max() >= num_classes):
        raise DataFormatError(None, f"labels must be in [0, {num_classes}), got [{gt.min()}, {gt.max()}]")
    correct = pred == gt
    total = np.bincount(gt, minlength=num_classes)
    hits = np.bincount(gt[correct], minlength=num_classes)
    with np.errstate(divide="ignore", invalid="ignore"):
        acc = np.where(total > 0, hits / total, np.nan)
    return {"oAcc": float(correct.mean()) if gt.size else float("nan"),
            "mAcc": float(np.nanmean(acc)) if np.any(total > 0) else float("nan"), "acc": acc.tolist()}


def overall_accuracy(pred: np.ndarray, gt: np.ndarray) -> float:
    """Share of correct predictions."""
    pred, gt = np.asarray(pred).reshape(-1), np.asarray(gt).reshape(-1)
    if pred.shape != gt.shape:
        raise DataFormatError(None, f"{pred.size} predictions for {gt.size} labels")
    return float(np.mean(pred == gt)) if gt.size else float("nan")


def mean_class_accuracy(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> float:
    """Mean over present classes of the per-class accuracy."""
    return classification_metrics(pred, gt, num_classes)["mAcc"]
