"""The evaluator hook of detection runs on KITTI-format data: LiDAR-frame predictions -> KITTI
camera-frame annotations (boxes_lidar_to_camera, 2D boxes through the calibration, alpha) -> kitti_eval.

Config: ``evaluator: {_target_: pc3d.models.detectors.kitti_evaluator.KittiEvaluator}``; the engine
calls ``evaluator(dataset, predictions)`` with predictions in dataset order (pc3d.models.postprocess).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from pc3d.eval import format_kitti_table, kitti_eval
from pc3d.eval.kitti_io import empty_anno
from pc3d.geometry import KittiCalib, alpha_from_rotation_y, boxes_lidar_to_camera, boxes_to_image_2d

log = logging.getLogger(__name__)


def to_kitti_anno(prediction: dict, calib: KittiCalib, image_shape: tuple[int, int] | None,
                  class_names: Sequence[str]) -> dict:
    """One frame's prediction -> a KITTI annotation dict (pc3d.eval.kitti_io layout, with score).

    Boxes whose centre is behind the camera or whose 2D box falls outside the image are dropped (they
    cannot be KITTI labels), as OpenPCDet does."""
    boxes = np.asarray(prediction["boxes"], np.float32).reshape(-1, 7)
    anno = empty_anno(with_score=True)
    if len(boxes) == 0:
        return anno
    cam = np.asarray(boxes_lidar_to_camera(boxes, calib), np.float64)
    keep = cam[:, 2] > 0.1
    bbox = np.asarray(boxes_to_image_2d(boxes[keep], calib), np.float64) if keep.any() else np.zeros((0, 4))
    full = np.zeros((len(boxes), 4))
    full[keep] = bbox
    if image_shape is not None:
        h, w = image_shape[:2]
        keep &= (full[:, 0] < w) & (full[:, 1] < h) & (full[:, 2] >= 0) & (full[:, 3] >= 0)
        full[:, 0::2] = np.clip(full[:, 0::2], 0, w - 1)
        full[:, 1::2] = np.clip(full[:, 1::2], 0, h - 1)
    cam, full = cam[keep], full[keep]
    labels = np.asarray(prediction["labels"], np.int64)[keep]
    return {"name": np.asarray([class_names[k - 1] for k in labels], dtype="<U16"),
            "truncated": np.zeros(len(cam)), "occluded": np.zeros(len(cam), np.int64),
            "alpha": np.asarray(alpha_from_rotation_y(cam[:, 6], cam[:, 0], cam[:, 2]), np.float64),
            "bbox": full, "dimensions": cam[:, [5, 3, 4]],  # l, h, w
            "location": cam[:, :3], "rotation_y": cam[:, 6],
            "score": np.asarray(prediction["scores"], np.float64)[keep]}


def gt_anno(annos: dict) -> dict:
    """A KittiDataset frame's metadata["annos"] (dimensions h, w, l) -> the evaluation layout (l, h, w)."""
    out = {k: annos[k] for k in ("name", "truncated", "occluded", "alpha", "bbox", "location", "rotation_y")}
    out["dimensions"] = np.asarray(annos["dimensions"]).reshape(-1, 3)[:, [2, 0, 1]]
    return out


class KittiEvaluator:
    """evaluator(dataset, predictions) -> OpenPCDet-style flat 3D and BEV AP keys (``Car_3d/moderate_R40``;
    no suffix: R11) of the first overlap set ("strict": the official thresholds; "loose": Car 0.7 / 0.5 /
    0.5, others 0.5 / 0.25 / 0.25); prints the KITTI AP table and keeps it in ``self.last_table``."""

    def __init__(self, classes: Sequence[str] | None = None, overlap_sets: Sequence[str] = ("strict",)):
        self.classes = None if classes is None else tuple(classes)
        self.overlap_sets = tuple(overlap_sets)
        self.last_table = ""

    def __call__(self, dataset, predictions: list[dict]) -> dict:
        class_names = list(dataset.class_names)
        gts, dts = [], []
        for i, pred in enumerate(predictions):
            meta = dataset.load(i)["metadata"]
            gts.append(gt_anno(meta["annos"]))
            dts.append(to_kitti_anno(pred, meta["calib"], meta.get("image_shape"), class_names))
        classes = self.classes or tuple(class_names)
        result = kitti_eval(gts, dts, classes, self.overlap_sets)
        self.last_table = format_kitti_table(result, self.overlap_sets[0])
        log.info("KITTI AP over %d frames (R40 / R11):\n%s", len(predictions), self.last_table)
        print(self.last_table, flush=True)
        overlap = self.overlap_sets[0]
        out = {}
        for cls in classes:
            for metric in ("3d", "bev"):
                for difficulty in ("easy", "moderate", "hard"):
                    for recall, suffix in (("R40", "_R40"), ("R11", "")):
                        ap = result.ap(cls, metric, difficulty, recall, overlap)
                        if np.isfinite(ap):
                            out[f"{cls}_{metric}/{difficulty}{suffix}"] = ap
        return out
