"""Shape classification hook: overall and mean class accuracy (percent), as PointNet / PointNet++ report them.

Ground truth: ``dataset.labels[i]`` when the dataset keeps its labels in memory, else ``dataset[i]["label"]``.
"""
from __future__ import annotations

import numpy as np

from pc3d.errors import DataFormatError
from pc3d.eval.classification import classification_metrics


class ClassificationEvaluator:
    """hook(dataset, predictions) -> {"accuracy", "mean_class_accuracy"} over classes 0..num_classes-1."""

    def __init__(self, num_classes: int | None = None):
        self.num_classes = num_classes

    def __call__(self, dataset, predictions: list[dict]) -> dict:
        labels = getattr(dataset, "labels", None)
        gt = np.asarray(labels if labels is not None else [dataset[i]["label"] for i in range(len(dataset))])
        if len(gt) != len(predictions):
            raise DataFormatError(None, f"{len(predictions)} predictions for {len(gt)} samples")
        pred = np.array([int(p["label"]) for p in predictions], np.int64)
        num_classes = self.num_classes or len(getattr(dataset, "class_names", ())) or int(gt.max()) + 1
        m = classification_metrics(pred, gt, num_classes)
        return {"accuracy": 100 * m["oAcc"], "mean_class_accuracy": 100 * m["mAcc"]}
