"""KITTI object detection hook: LiDAR-frame predictions -> KITTI camera-frame annotations -> kitti_eval.

Ground truth comes from ``dataset.annotations(i)`` (label_2 and calibration; no point cloud read).
Keys are OpenPCDet's: ``Car_3d/moderate_R40`` (R40) and ``Car_3d/moderate`` (R11), 3D and BEV, and the
recall where each curve ends, ``Car_3d/moderate_recall`` (``pc3d.eval.kitti.KittiResult.recall``), of the
first overlap set ("strict": the official thresholds; "loose": Car 0.7 / 0.5 / 0.5, others 0.5 / 0.25 / 0.25).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from pc3d.eval.kitti import format_kitti_table, kitti_eval
from pc3d.eval.kitti_io import to_kitti_anno

log = logging.getLogger(__name__)


def gt_anno(annos: dict) -> dict:
    """A KittiDataset frame's annos (dimensions h, w, l) -> the evaluation layout (dimensions l, h, w)."""
    out = {k: annos[k] for k in ("name", "truncated", "occluded", "alpha", "bbox", "location", "rotation_y")}
    out["dimensions"] = np.asarray(annos["dimensions"]).reshape(-1, 3)[:, [2, 0, 1]]
    return out


class KittiEvaluator:
    """hook(dataset, predictions) -> flat 3D and BEV AP keys; keeps the KITTI AP table in ``last_table``."""

    def __init__(self, classes: Sequence[str] | None = None, overlap_sets: Sequence[str] = ("strict",)):
        self.classes = None if classes is None else tuple(classes)
        self.overlap_sets = tuple(overlap_sets)
        self.last_table = ""

    def __call__(self, dataset, predictions: list[dict]) -> dict:
        class_names = list(dataset.class_names)
        gts, dts = [], []
        for i, pred in enumerate(predictions):
            truth = dataset.annotations(i)
            gts.append(gt_anno(truth["annos"]))
            dts.append(to_kitti_anno(pred, truth["calib"], truth.get("image_shape"), class_names))
        classes = self.classes or tuple(class_names)
        result = kitti_eval(gts, dts, classes, self.overlap_sets)
        overlap = self.overlap_sets[0]
        self.last_table = format_kitti_table(result, overlap)
        log.info("KITTI AP over %d frames (R40 / R11):\n%s", len(predictions), self.last_table)
        out = {}
        for cls in classes:
            for metric in ("3d", "bev"):
                for difficulty in ("easy", "moderate", "hard"):
                    for recall, suffix in (("R40", "_R40"), ("R11", "")):
                        ap = result.ap(cls, metric, difficulty, recall, overlap)
                        if np.isfinite(ap):
                            out[f"{cls}_{metric}/{difficulty}{suffix}"] = ap
                    out[f"{cls}_{metric}/{difficulty}_recall"] = result.max_recall(cls, metric, difficulty, overlap)
        return out
