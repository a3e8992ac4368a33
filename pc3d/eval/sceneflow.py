"""Scene-flow metrics on non-occluded points, as HPLFlowNet / FLOT evaluate them.

Per point: error e = ||pred - gt||, relative error e / (||gt|| + 1e-4). EPE3D = mean e;
AccS = share with e < 0.05 m or relative < 5 %; AccR = e < 0.1 m or relative < 10 %;
Outliers = e > 0.3 m or relative > 10 %. Over a dataset, HPLFlowNet and FLOT evaluate one sample
at a time and average the per-sample values (``SceneFlowAccumulator(mode="sample")``, the
default); ``mode="point"`` pools all points instead (equal when every sample has the same number
of valid points, e.g. 8,192 sampled points without an occlusion mask).
"""
from __future__ import annotations

import numpy as np

from pc3d.errors import ConfigError, DataFormatError

KEYS = ("EPE3D", "AccS", "AccR", "Outliers")


def _errors(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, np.float64)
    gt = np.asarray(gt, np.float64)
    if pred.shape != gt.shape or pred.ndim != 2 or pred.shape[1] != 3:
        raise DataFormatError(None, f"flows must both be [N, 3], got {pred.shape} and {gt.shape}")
    if mask is not None:
        mask = np.asarray(mask, bool).reshape(-1)
        if mask.shape[0] != pred.shape[0]:
            raise DataFormatError(None, f"mask has {mask.shape[0]} entries for {pred.shape[0]} points")
        pred, gt = pred[mask], gt[mask]
    err = np.linalg.norm(pred - gt, axis=1)
    return err, err / (np.linalg.norm(gt, axis=1) + 1e-4)


def _sums(err: np.ndarray, rel: np.ndarray) -> np.ndarray:
    return np.array([err.sum(), np.sum((err < 0.05) | (rel < 0.05)), np.sum((err < 0.1) | (rel < 0.1)),
                     np.sum((err > 0.3) | (rel > 0.1))], np.float64)


def scene_flow_metrics(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> dict:
    """EPE3D (m), AccS, AccR, Outliers (fractions) of pred [N, 3] vs gt [N, 3].

    mask: optional bool [N], True = non-occluded (evaluated) point.
    """
    err, rel = _errors(pred, gt, mask)
    if err.size == 0:
        return {k: float("nan") for k in KEYS}
    return dict(zip(KEYS, map(float, _sums(err, rel) / err.size), strict=True))


class SceneFlowAccumulator:
    """Averages the metrics over samples ("sample", HPLFlowNet / FLOT) or over all points ("point")."""

    def __init__(self, mode: str = "sample"):
        if mode not in ("sample", "point"):
            raise ConfigError(f"mode must be 'sample' or 'point', got {mode!r}")
        self.mode = mode
        self.total = np.zeros(4)
        self.count = 0

    def update(self, pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> None:
        """Add one sample; a sample without valid points is skipped."""
        err, rel = _errors(pred, gt, mask)
        if err.size == 0:
            return
        sums = _sums(err, rel)
        if self.mode == "sample":
            self.total += sums / err.size
            self.count += 1
        else:
            self.total += sums
            self.count += err.size

    def metrics(self) -> dict:
        if self.count == 0:
            return {k: float("nan") for k in KEYS}
        return dict(zip(KEYS, map(float, self.total / self.count), strict=True))
