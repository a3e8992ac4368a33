"""Segmentation evaluator hook for pc3d.engine: ``SegmentationEvaluator(...)(dataset, predictions) -> metrics``.

Reports two conventions on the same confusion matrix (the ignored train id left out):
- ``mIoU``: mean IoU over the classes present in the ground truth of the split, in percent;
- ``mIoU_union``: mean over the classes in the ground truth or the predictions (ScanNet's script,
  absent="nan"), in percent;
- ``mIoU_official``: mean over every scored class with IoU 0 for absent ones (semantic-kitti-api,
  absent="zero"), in percent;
plus ``oAcc``, ``mAcc`` and ``iou/<class>`` (classes present in the ground truth) and ``num_classes_present``.
Predictions are the SparseSegmentor's eval output; the ground truth is taken from each prediction's
``point_labels`` or, when absent, from ``dataset[i]["point_labels"]``.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pc3d.eval import confusion_matrix, segmentation_metrics


class SegmentationEvaluator:
    """num_classes: train ids 0..num_classes-1 (including an ignored one, e.g. SemanticKITTI's 0);
    ignore_index: the train id (or -1) left out; class_names: default the dataset's `class_names`."""

    def __init__(self, num_classes: int, ignore_index: int = -1, class_names: Sequence[str] | None = None):
        self.num_classes, self.ignore_index, self.class_names = num_classes, ignore_index, class_names

    def confusion(self, dataset, predictions: list[dict]) -> np.ndarray:
        """int64 [K, K] over the scored classes (the ignored train id's row and column removed)."""
        conf = np.zeros((self.num_classes, self.num_classes), np.int64)
        for i, pred in enumerate(predictions):
            gt = pred["point_labels"] if "point_labels" in pred else dataset[i]["point_labels"]
            conf += confusion_matrix(pred["pred_labels"], gt, self.num_classes, self.ignore_index)
        scored = self.scored()
        return conf[np.ix_(scored, scored)]

    def scored(self) -> list[int]:
        return [c for c in range(self.num_classes) if c != self.ignore_index]

    def __call__(self, dataset, predictions: list[dict]) -> dict:
        names = list(self.class_names or getattr(dataset, "class_names", None) or map(str, range(self.num_classes)))
        if len(names) == self.num_classes:
            names = [names[c] for c in self.scored()]
        conf = self.confusion(dataset, predictions)
        union = segmentation_metrics(conf, names, absent="nan")
        official = segmentation_metrics(conf, names, absent="zero")
        in_gt = conf.sum(1) > 0
        iou = {name: 100 * union["iou"][name] for name, present in zip(names, in_gt, strict=True) if present}
        acc = [union["acc"][name] for name, present in zip(names, in_gt, strict=True) if present]
        return {"mIoU": float(np.mean(list(iou.values()))) if iou else float("nan"),
                "mIoU_union": 100 * union["mIoU"], "mIoU_official": 100 * official["mIoU"],
                "oAcc": 100 * union["oAcc"], "mAcc": 100 * float(np.mean(acc)) if acc else float("nan"),
                "num_classes_present": int(in_gt.sum()), "iou": iou}
