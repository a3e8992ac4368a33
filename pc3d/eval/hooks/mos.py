"""Moving-object segmentation hook (LiDAR-MOS): IoU of the moving class over the current scans of a split.

Ground truth: MOS train ids per point of the current scan (0 unlabelled -> ignored, 1 static, 2 moving),
from each prediction's echoed ``point_labels`` or else the first ``num_current_points`` rows of
``dataset[i]["point_labels"]`` (the batch contract puts the current scan first). Prediction: ``moving``
[N] 0 / 1 per point of the current scan.
"""
from __future__ import annotations

import numpy as np

from pc3d.errors import DataFormatError
from pc3d.eval.segmentation import MosAccumulator

UNLABELLED, STATIC, MOVING = 0, 1, 2


def current_scan_labels(sample: dict) -> np.ndarray:
    """MOS train ids of the current scan of a sample (points of past scans follow the current ones)."""
    n = int(sample.get("num_current_points", len(sample["point_labels"])))
    return np.asarray(sample["point_labels"][:n])


class MosEvaluator:
    """hook(dataset, predictions) -> {"moving_IoU" (percent), "num_points", "num_moving"}."""

    def __call__(self, dataset, predictions: list[dict]) -> dict:
        acc = MosAccumulator()
        points = moving = 0
        for i, pred in enumerate(predictions):
            gt = np.asarray(pred["point_labels"]) if "point_labels" in pred else current_scan_labels(dataset[i])
            if len(gt) != len(pred["moving"]):
                raise DataFormatError(pred.get("frame_id"), f"{len(pred['moving'])} moving flags for {len(gt)} points "
                                                            "of the current scan")
            acc.update(np.asarray(pred["moving"]) > 0, gt == MOVING, gt == UNLABELLED)
            points += len(gt)
            moving += int(np.sum(gt == MOVING))
        return {"moving_IoU": 100 * acc.iou(), "num_points": points, "num_moving": moving}
