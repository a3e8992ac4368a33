"""Scene-flow hook: EPE3D, AccS, AccR, Outliers on non-occluded points, averaged per sample (HPLFlowNet / FLOT).

Ground truth: each prediction's echoed ``flow_gt`` / ``flow_mask``, else ``dataset[i]["flow"]`` and
``["flow_mask"]`` (every point when the sample has no mask). EPE3D in metres; the others in percent.
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
        for i, pred in enumerate(predictions):
            if "flow_gt" in pred:
                gt, mask = pred["flow_gt"], pred.get("flow_mask")
            else:
                sample = dataset[i]
                gt, mask = sample["flow"], sample.get("flow_mask")
            acc.update(np.asarray(pred["flow"]), np.asarray(gt), None if mask is None else np.asarray(mask))
        m = acc.metrics()
        return {"EPE3D": m["EPE3D"], **{k: 100 * m[k] for k in ("AccS", "AccR", "Outliers")}}
