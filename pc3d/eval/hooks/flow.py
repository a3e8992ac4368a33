"""Scene-flow hook: EPE3D, AccS, AccR, Outliers on non-occluded points, averaged per sample (HPLFlowNet / FLOT),
and PointPWC's EPE2D / Acc2D when the dataset gives a camera for its samples.

Ground truth: each prediction's echoed ``flow_gt`` / ``flow_mask``, else ``dataset[i]["flow"]`` and
``["flow_mask"]`` (every point when the sample has no mask). EPE3D in metres, EPE2D in pixels; the others in
percent. Cameras: ``dataset.projection(i)`` (pc3d.data.SceneFlowDataset: FlyingThings3D always, KITTI with
``calib_dir``), projecting the prediction's echoed ``points`` (else ``dataset[i]["points"]``).
"""
from __future__ import annotations

import numpy as np

from pc3d.eval.sceneflow import SceneFlowAccumulator


class FlowEvaluator:
    """mode: "sample" (mean of per-sample metrics, the authors') or "point" (pooled over all points)."""

    def __init__(self, mode: str = "sample"):
        self.mode = mode

    def __call__(self, dataset, predictions: list[dict]) -> dict:
        acc = SceneFlowAccumulator(self.mode)
        camera = getattr(dataset, "projection", None)
        for i, pred in enumerate(predictions):
            projection = camera(i) if camera is not None else None
            sample = None
            if "flow_gt" not in pred or (projection is not None and "points" not in pred):
                sample = dataset[i]
            gt, mask = (pred["flow_gt"], pred.get("flow_mask")) if "flow_gt" in pred else (
                sample["flow"], sample.get("flow_mask"))
            points = None
            if projection is not None:
                points = np.asarray(pred["points"] if "points" in pred else sample["points"])
            acc.update(np.asarray(pred["flow"]), np.asarray(gt), None if mask is None else np.asarray(mask),
                       points, projection)
        m = acc.metrics()
        return {k: m[k] if k.startswith("EPE") else 100 * m[k] for k in m}
