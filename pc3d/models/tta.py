"""Test-time augmentation: a model's answer for each scan combined over views of it.

A view mirrors the scan (y -> -y) when asked, then turns it by whole quarter turns about the sensor's
vertical axis, then scales x, y, z (exact in float32 for scale 1: mirrors and quarter turns only negate and
swap columns). Its points are voxelized afresh by the run's own voxelizer, so any grid works (Cartesian,
cylindrical, a range not centred on the sensor); a view that moves points out of the range simply sees fewer.
Only x, y, z move: feature columns (intensity, colour, time) are left as they are, so a dataset whose features
are directions (normals) is not one to augment this way.

- **Segmentation**: the points keep their order in every view, so a view's per-point class probabilities need
  no mapping back; each point takes the argmax of its probabilities averaged over the views in which it has a
  voxel (Pointcept's tester sums the softmax over its views too). A segmentor takes part by offering
  ``class_probabilities(batch) -> (probabilities [sum N, K] float32, mapped bool [sum N])`` (zero rows where a
  point has no voxel in that view) and ``predictions(batch, scores, mapped)`` (the per-sample prediction dicts
  from the scores of the mapped points): SparseSegmentor and MeanTeacherSegmentor do.
- **Detection**: any detector; each view's boxes are taken back to the scan's frame (centres, headings and
  velocities un-mirrored, un-turned, sizes un-scaled) and fused per class (``fuse_boxes``: weighted box
  fusion, clusters by BEV IoU around the best remaining box; a cluster's score is the mean over the views of
  each view's best score in it, so a box that one view of four found keeps a quarter of its score).

    python tools/test.py run_dir=... tta=flips                          # the scan, its x, y and xy mirror images
    python tools/test.py run_dir=... tta=d4 'tta_scales=[0.95,1,1.05]'  # 8 symmetries of the square x 3 scales
    python tools/test.py run_dir=<KITTI detector> tta=mirror            # y -> -y only: KITTI's range is x >= 0

Presets (``VIEWS``): ``mirror`` (2 views: identity, y -> -y), ``flips`` (4: identity, y -> -y, x -> -x, both),
``turns`` (4 quarter turns), ``d4`` (the 8 symmetries of the square: 4 quarter turns, each with and without
the mirror).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from pc3d.data.transforms.global_ops import affine_boxes
from pc3d.errors import ConfigError
from pc3d.geometry import iou_bev, wrap_angle


@dataclass(frozen=True)
class View:
    """mirror (y -> -y) first, then `quarters` quarter turns counter-clockwise about z, then x, y, z * scale."""

    quarters: int = 0
    mirror: bool = False
    scale: float = 1.0

    @property
    def identity(self) -> bool:
        return self.quarters % 4 == 0 and not self.mirror and self.scale == 1.0

    @property
    def matrix(self) -> np.ndarray:
        """The view as p -> matrix @ p (float64 [3, 3]; entries 0 and +-1 times the scale, so exact)."""
        mirror = np.diag([1.0, -1.0 if self.mirror else 1.0, 1.0])
        quarter = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
        return self.scale * np.linalg.matrix_power(quarter, self.quarters % 4) @ mirror

    def apply(self, points: torch.Tensor) -> torch.Tensor:
        """A copy of `points` [N, 3 + C] seen in this view (feature columns unchanged)."""
        out = points.clone()
        out[:, :3] = points[:, :3] @ torch.as_tensor(self.matrix.T, dtype=points.dtype, device=points.device)
        return out

    def boxes(self, boxes: np.ndarray, inverse: bool = False) -> np.ndarray:
        """Boxes [K, 7 (+2)] (x, y, z, dx, dy, dz, heading (, vx, vy)) seen in this view, or with `inverse` the
        boxes of this view taken back to the scan's frame (pc3d.data.transforms.global_ops.affine_boxes)."""
        boxes = np.asarray(boxes, np.float32)
        boxes = boxes.reshape(-1, boxes.shape[-1] if boxes.ndim == 2 else 7)
        return affine_boxes(boxes, np.linalg.inv(self.matrix) if inverse else self.matrix)


VIEWS = {
    "mirror": ((0, False), (0, True)),  # identity, y -> -y
    "flips": ((0, False), (0, True), (2, True), (2, False)),  # identity, y -> -y, x -> -x, both
    "turns": tuple((k, False) for k in range(4)),
    "d4": tuple((k, mirror) for mirror in (False, True) for k in range(4)),
}


def views(preset: str, scales: Sequence[float] = (1.0,)) -> list[View]:
    """The views of a preset (``VIEWS``), each at every scale (repeats dropped), the identity first when it is
    among them."""
    if preset not in VIEWS:
        raise ConfigError(f"tta: unknown views {preset!r}; choose one of {sorted(VIEWS)}")
    try:
        factors = [float(s) for s in scales]
    except (TypeError, ValueError):
        factors = []
    if not factors or any(not f > 0 for f in factors):
        raise ConfigError(f"tta_scales: expected a non-empty list of positive numbers, got {scales!r}")
    out = [View(k, mirror, f) for f in dict.fromkeys(factors) for k, mirror in VIEWS[preset]]
    return sorted(out, key=lambda v: not v.identity)


def view_batch(batch: dict, view: View, voxelizer) -> dict:
    """The batch with its points seen in `view` and voxelized afresh by `voxelizer` (each sample seeded with its
    own seed, as Collate does); every other key (labels, offsets, metadata) as it is."""
    points = view.apply(batch["points"])
    offsets = batch["point_offsets"].tolist()
    clouds = [points[offsets[b]:offsets[b + 1]].cpu().numpy() for b in range(batch["batch_size"])]
    voxels = voxelizer.voxelize(clouds, seeds=[int(s) for s in batch["seed"]], frames=list(batch["frame_id"]))
    moved = {k: v.to(points.device) if isinstance(v, torch.Tensor) else v for k, v in voxels.items()}
    return dict(batch) | {"points": points} | moved


def fuse_boxes(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, view_of: np.ndarray, n_views: int,
               iou_threshold: float = 0.55) -> dict:
    """Weighted box fusion of the detections of `n_views` views of one scan (all in the scan's frame).

    Greedily by score: the best box not yet taken and every untaken box of its class with BEV IoU >= iou_threshold
    with it form a cluster. The fused box is the score-weighted mean of the cluster's centres, sizes (and
    velocities), its heading the direction of the score-weighted sum of heading vectors; its score is the mean
    over all views of each view's best score in the cluster (a view that found nothing there adds 0).
    Returns {"boxes" float32 [C, 7 (+2)], "scores" float32 [C], "labels" int64 [C]}, best first.
    """
    boxes = np.asarray(boxes, np.float32)
    boxes = boxes.reshape(-1, boxes.shape[-1] if boxes.ndim == 2 else 7)
    scores, labels = np.asarray(scores, np.float32), np.asarray(labels, np.int64)
    view_of = np.asarray(view_of, np.int64)
    if not len(boxes):
        return {"boxes": boxes, "scores": scores, "labels": labels}
    overlap = iou_bev(boxes, boxes) >= iou_threshold
    taken = np.zeros(len(boxes), bool)
    fused, fused_scores, fused_labels = [], [], []
    for i in np.argsort(-scores, kind="stable"):
        if taken[i]:
            continue
        members = np.flatnonzero(~taken & overlap[i] & (labels == labels[i]))
        members = np.union1d(members, [i])
        taken[members] = True
        w = scores[members].astype(np.float64)
        box = (boxes[members].astype(np.float64) * w[:, None]).sum(0) / w.sum()
        heading = boxes[members, 6].astype(np.float64)
        box[6] = np.arctan2((w * np.sin(heading)).sum(), (w * np.cos(heading)).sum())
        best = np.zeros(n_views)
        np.maximum.at(best, view_of[members], scores[members])
        fused.append(box)
        fused_scores.append(best.sum() / n_views)
        fused_labels.append(labels[i])
    order = np.argsort(-np.asarray(fused_scores), kind="stable")
    out = np.asarray(fused, np.float32)[order]
    out[:, 6] = wrap_angle(out[:, 6])
    return {"boxes": out, "scores": np.asarray(fused_scores, np.float32)[order],
            "labels": np.asarray(fused_labels, np.int64)[order]}


class TestTimeAugmented(nn.Module):
    """`model` (a segmentor or a detector, see above) evaluated over `views` of every scan (built in eval mode,
    and only predicts); `voxelizer`: the dataset's (its Collate's); box_iou: fuse_boxes' iou_threshold."""

    __test__ = False  # not a pytest class

    def __init__(self, model: nn.Module, voxelizer, views: Sequence[View], box_iou: float = 0.55):
        super().__init__()
        self.task = getattr(model, "task", None)
        if self.task not in ("segmentation", "detection"):
            raise ConfigError(f"test-time augmentation combines segmentation or detection answers; "
                              f"{type(model).__name__} has task {self.task!r}")
        missing = [m for m in ("class_probabilities", "predictions") if not callable(getattr(model, m, None))]
        if self.task == "segmentation" and missing:
            raise ConfigError(f"test-time augmentation averages a segmentor's class probabilities; "
                              f"{type(model).__name__} has no {missing}")
        if voxelizer is None or not callable(getattr(voxelizer, "voxelize", None)):
            raise ConfigError("test-time augmentation voxelizes every view: the dataset has no voxelizer")
        if not views:
            raise ConfigError("test-time augmentation needs at least one view")
        self.model, self.voxelizer, self.views, self.box_iou = model, voxelizer, list(views), box_iou
        self.eval()

    def seen(self, batch: dict, view: View) -> dict:
        return batch if view.identity else view_batch(batch, view, self.voxelizer)

    def forward(self, batch: dict) -> list[dict]:
        if self.training:
            raise ConfigError("test-time augmentation only predicts: train the model itself")
        return self.segment(batch) if self.task == "segmentation" else self.detect(batch)

    def segment(self, batch: dict) -> list[dict]:
        total, count = None, None  # summed probabilities, views that gave each point a voxel
        for view in self.views:
            probabilities, mapped = self.model.class_probabilities(self.seen(batch, view))
            total = probabilities if total is None else total + probabilities
            count = mapped.long() if count is None else count + mapped.long()
        mapped = count > 0
        return self.model.predictions(batch, total[mapped] / count[mapped, None], mapped)

    def restored(self, boxes: np.ndarray, view: View) -> np.ndarray:
        """A view's boxes in the scan's frame; an axis-aligned detector's (``axis_aligned``) as the axis-aligned
        boxes they cover, heading 0 (a quarter turn swaps their x and y sizes)."""
        out = view.boxes(boxes, inverse=True)
        if getattr(self.model, "axis_aligned", False):
            cos, sin = np.abs(np.cos(out[:, 6])), np.abs(np.sin(out[:, 6]))
            out[:, 3], out[:, 4] = cos * out[:, 3] + sin * out[:, 4], sin * out[:, 3] + cos * out[:, 4]
            out[:, 6] = 0.0
        return out

    def detect(self, batch: dict) -> list[dict]:
        per_view = [self.model(self.seen(batch, view)) for view in self.views]
        if len(self.views) == 1:  # nothing to fuse: the boxes taken back to the scan's frame
            return [dict(a) | {"boxes": self.restored(a["boxes"], self.views[0])} for a in per_view[0]]
        out = []
        for answers in zip(*per_view, strict=True):
            boxes = np.concatenate([self.restored(a["boxes"], view) for view, a in zip(self.views, answers,
                                                                                         strict=True)])
            scores = np.concatenate([np.asarray(a["scores"], np.float32) for a in answers])
            labels = np.concatenate([np.asarray(a["labels"], np.int64) for a in answers])
            view_of = np.concatenate([np.full(len(a["scores"]), v) for v, a in enumerate(answers)])
            out.append(dict(answers[0]) | fuse_boxes(boxes, scores, labels, view_of, len(self.views), self.box_iou))
        return out
