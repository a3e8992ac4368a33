"""Scene-flow metrics on non-occluded points, as HPLFlowNet / FLOT evaluate them.

Per point: error e = ||pred - gt||, relative error e / (||gt|| + 1e-4). EPE3D = mean e;
AccS = share with e < 0.05 m or relative < 5 %; AccR = e < 0.1 m or relative < 10 %;
Outliers = e > 0.3 m or relative > 10 %. Over a dataset, HPLFlowNet and FLOT evaluate one sample
at a time and average the per-sample values (``SceneFlowAccumulator(mode="sample")``, the
default); ``mode="point"`` pools all points instead (equal when every sample has the same number
of valid points, e.g. 8,192 sampled points without an occlusion mask).

With a camera (a [3, 4] projection of homogeneous pc3d-frame points to homogeneous pixels), the 2D metrics
of PointPWC's evaluation are added: each point and its two moved positions (point + gt, point + pred) are
projected, and the optical flows compared. Per point: error e = ||pred_2d - gt_2d|| (pixels), relative
e / (||gt_2d|| + 1e-5). EPE2D = mean e; Acc2D = share with e < 3 px or relative < 5 %. PointPWC projects
with FlyingThings3D's camera (f = 1050, centre (479.5, 269.5)) and with KITTI's P_rect_02 of each pair;
the datasets give those cameras (pc3d.data.SceneFlowDataset.projection). The same points are evaluated as
in 3D (the mask applies).
"""
from __future__ import annotations

import numpy as np

from pc3d.errors import ConfigError, DataFormatError

KEYS = ("EPE3D", "AccS", "AccR", "Outliers")
KEYS_2D = ("EPE2D", "Acc2D")


def _checked(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """pred, gt as float64 [N, 3] and the bool [N] of points evaluated."""
    pred = np.asarray(pred, np.float64)
    gt = np.asarray(gt, np.float64)
    if pred.shape != gt.shape or pred.ndim != 2 or pred.shape[1] != 3:
        raise DataFormatError(None, f"flows must both be [N, 3], got {pred.shape} and {gt.shape}")
    if mask is None:
        return pred, gt, np.ones(len(pred), bool)
    mask = np.asarray(mask, bool).reshape(-1)
    if mask.shape[0] != pred.shape[0]:
        raise DataFormatError(None, f"mask has {mask.shape[0]} entries for {pred.shape[0]} points")
    return pred, gt, mask


def _sums(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Sums over the points of e, AccS, AccR and Outliers (the module docstring's rules)."""
    err = np.linalg.norm(pred - gt, axis=1)
    rel = err / (np.linalg.norm(gt, axis=1) + 1e-4)
    return np.array([err.sum(), np.sum((err < 0.05) | (rel < 0.05)), np.sum((err < 0.1) | (rel < 0.1)),
                     np.sum((err > 0.3) | (rel > 0.1))], np.float64)


def project(points: np.ndarray, projection: np.ndarray, in_front: bool = True) -> np.ndarray:
    """float64 [N, 2] pixels of points [N, 3] under a [3, 4] projection. in_front: DataFormatError when a point
    is not in front of the camera (homogeneous w not positive); False divides as it is (a predicted position
    may lie anywhere: PointPWC's projection, inf at w = 0)."""
    projection = np.asarray(projection, np.float64)
    if projection.shape != (3, 4):
        raise DataFormatError(None, f"a camera projection must be [3, 4], got {projection.shape}")
    h = np.asarray(points, np.float64) @ projection[:, :3].T + projection[:, 3]
    if not in_front:
        with np.errstate(divide="ignore", invalid="ignore"):
            return h[:, :2] / h[:, 2:3]
    if h.size and not (h[:, 2] > 0).all():
        raise DataFormatError(None, f"{int(np.sum(~(h[:, 2] > 0)))} of {len(h)} points are not in front of the "
                                    "camera; the 2D flow metrics cannot project them")
    return h[:, :2] / h[:, 2:3]


def _sums_2d(points: np.ndarray, pred: np.ndarray, gt: np.ndarray, projection: np.ndarray) -> np.ndarray:
    """Sums over the points of the 2D error and of Acc2D (PointPWC's rules)."""
    start = project(points[:, :3], projection)
    flow_pred = project(points[:, :3] + pred, projection, in_front=False) - start
    flow_gt = project(points[:, :3] + gt, projection) - start
    err = np.linalg.norm(flow_pred - flow_gt, axis=1)
    rel = err / (np.linalg.norm(flow_gt, axis=1) + 1e-5)
    return np.array([err.sum(), np.sum((err < 3.0) | (rel < 0.05))], np.float64)


def scene_flow_metrics(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None,
                       points: np.ndarray | None = None, projection: np.ndarray | None = None) -> dict:
    """EPE3D (m), AccS, AccR, Outliers (fractions) of pred [N, 3] vs gt [N, 3]; with points [N, 3] (the first
    cloud) and a camera projection [3, 4] also EPE2D (pixels) and Acc2D (fraction).

    mask: optional bool [N], True = non-occluded (evaluated) point.
    """
    acc = SceneFlowAccumulator("point")
    acc.update(pred, gt, mask, points, projection)
    keys = KEYS + KEYS_2D if projection is not None else KEYS
    return acc.metrics() if acc.count else {k: float("nan") for k in keys}


class SceneFlowAccumulator:
    """Averages the metrics over samples ("sample", HPLFlowNet / FLOT / PointPWC) or over all points ("point").

    The 2D metrics are reported when every sample came with a camera; a camera for some samples only is an
    error (the 2D figures would cover another set of samples than the 3D ones).
    """

    def __init__(self, mode: str = "sample"):
        if mode not in ("sample", "point"):
            raise ConfigError(f"mode must be 'sample' or 'point', got {mode!r}")
        self.mode = mode
        self.total = np.zeros(len(KEYS) + len(KEYS_2D))
        self.count = 0
        self.with_camera: bool | None = None  # unknown until the first sample

    def update(self, pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None,
               points: np.ndarray | None = None, projection: np.ndarray | None = None) -> None:
        """Add one sample (points and projection: see scene_flow_metrics); a sample without valid points is
        skipped."""
        pred, gt, mask = _checked(pred, gt, mask)
        camera = projection is not None
        if camera:
            if points is None:
                raise ConfigError("the 2D flow metrics need the sample's points beside its camera projection")
            points = np.asarray(points, np.float64)
            if points.ndim != 2 or points.shape[1] < 3 or len(points) != len(pred):
                raise DataFormatError(None, f"points must be [{len(pred)}, 3+] beside the flows, got {points.shape}")
        if self.with_camera is not None and camera != self.with_camera:
            raise DataFormatError(None, "a camera projection was given for some samples only; the 2D metrics need "
                                        "one for every sample")
        self.with_camera = camera
        n = int(mask.sum())
        if n == 0:
            return
        sums = np.zeros(len(self.total))
        sums[:len(KEYS)] = _sums(pred[mask], gt[mask])
        if camera:
            sums[len(KEYS):] = _sums_2d(points[mask], pred[mask], gt[mask], projection)
        if self.mode == "sample":
            self.total += sums / n
            self.count += 1
        else:
            self.total += sums
            self.count += n

    def metrics(self) -> dict:
        """{EPE3D, AccS, AccR, Outliers} and, when the samples had cameras, {EPE2D, Acc2D}; NaN without samples."""
        keys = KEYS + KEYS_2D if self.with_camera else KEYS
        if self.count == 0:
            return {k: float("nan") for k in keys}
        return dict(zip(keys, map(float, self.total[:len(keys)] / self.count), strict=True))
