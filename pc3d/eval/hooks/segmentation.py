"""Semantic segmentation hook: one confusion matrix over every point of the split, three mIoU conventions.

- ``mIoU``: mean IoU over the classes present in the split's ground truth, in percent (the headline);
- ``mIoU_union``: over the classes in the ground truth or the predictions (ScanNet's script, absent="nan");
- ``mIoU_official``: the benchmark's own rule (``official``): "semantickitti", over every scored class, IoU 0 for
  absent ones (semantic-kitti-api, absent="zero"); "scannet", over the classes with a non-empty union (ScanNet's
  evaluate_semantic_label.py gives the others NaN: ``mIoU_union``); "waymo", Waymo's
  (pc3d.eval.waymo_segmentation: a class with an empty union scores 1, a defined point predicted undefined is a
  miss);
plus ``oAcc``, ``mAcc``, ``iou/<class>`` (classes present in the ground truth), ``num_classes_present`` and
``num_points`` (the labelled points scored).
The dataset's ``ignore_index`` train id is left out (SemanticKITTI 0, ScanNet -1). Ground truth is each
prediction's echoed ``point_labels`` or else ``dataset[i]["point_labels"]``; predictions must cover the
same points (the raw scan: evaluation datasets do not crop).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pc3d.errors import ConfigError, DataFormatError
from pc3d.eval.segmentation import SegmentationAccumulator, segmentation_metrics
from pc3d.eval.waymo_segmentation import NUM_TYPES, waymo_confusion, waymo_segmentation_iou


class SegmentationEvaluator:
    """num_classes / ignore_index / class_names: default the dataset's (``len(class_names)``, ``ignore_index``);
    official: whose rule mIoU_official follows, "semantickitti", "scannet" or "waymo"; None (the default): the
    dataset's ``miou_rule`` (ScanNetDataset: "scannet"), else "semantickitti"."""

    def __init__(self, num_classes: int | None = None, ignore_index: int | None = None,
                 class_names: Sequence[str] | None = None, official: str | None = None):
        if official not in (None, "semantickitti", "scannet", "waymo"):
            raise ConfigError(f"official must be 'semantickitti', 'scannet' or 'waymo', got {official!r}")
        self.num_classes, self.ignore_index, self.class_names = num_classes, ignore_index, class_names
        self.official = official

    def _setup(self, dataset) -> tuple[int, int, list[str]]:
        names = list(self.class_names or getattr(dataset, "class_names", None) or [])
        num_classes = self.num_classes or len(names)
        ignore = self.ignore_index if self.ignore_index is not None else int(getattr(dataset, "ignore_index", -1))
        if len(names) != num_classes:
            names = [str(c) for c in range(num_classes)]
        return num_classes, ignore, names

    def __call__(self, dataset, predictions: list[dict]) -> dict:
        num_classes, ignore, names = self._setup(dataset)
        rule = self.official or getattr(dataset, "miou_rule", "semantickitti")
        acc = SegmentationAccumulator(num_classes, ignore)
        waymo = np.zeros((NUM_TYPES, NUM_TYPES), np.int64) if rule == "waymo" else None
        for i, pred in enumerate(predictions):
            gt = pred["point_labels"] if "point_labels" in pred else dataset[i]["point_labels"]
            if len(gt) != len(pred["pred_labels"]):
                raise DataFormatError(pred.get("frame_id"), f"{len(pred['pred_labels'])} predicted labels for "
                                                            f"{len(gt)} labelled points")
            acc.update(pred["pred_labels"], gt)
            if waymo is not None:
                waymo += waymo_confusion(pred["pred_labels"], gt)
        scored = [c for c in range(num_classes) if c != ignore]
        conf, missed = acc.conf[np.ix_(scored, scored)], acc.missed[scored]
        names = [names[c] for c in scored]
        union = segmentation_metrics(conf, names, absent="nan", missed=missed)
        official = segmentation_metrics(conf, names, absent="zero", missed=missed)
        present = conf.sum(1) + missed > 0
        iou = {n: 100 * union["iou"][n] for n, p in zip(names, present, strict=True) if p}
        class_acc = [union["acc"][n] for n, p in zip(names, present, strict=True) if p]
        return {"mIoU": float(np.mean(list(iou.values()))) if iou else float("nan"),
                "mIoU_union": 100 * union["mIoU"],
                "mIoU_official": 100 * (waymo_segmentation_iou(waymo)["mIoU"] if waymo is not None else
                                        union["mIoU"] if rule == "scannet" else official["mIoU"]),
                "oAcc": 100 * union["oAcc"], "mAcc": 100 * float(np.mean(class_acc)) if class_acc else float("nan"),
                "num_classes_present": int(present.sum()), "num_points": int(conf.sum() + missed.sum()), "iou": iou}
