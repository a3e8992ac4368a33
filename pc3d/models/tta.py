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
  fusion, clusters by BEV IoU around the best remaining box (3D IoU for an axis-aligned detector: indoor objects
  stand on top of each other); a cluster's score is the mean over the views of each view's best score in it, so
  a box that one view of four found keeps a quarter of its score).
- **Moving-object segmentation**: as segmentation, over every point of the scan window (the past scans are in
  the current frame, so one view moves the whole window): the (static, moving) probabilities are averaged and
  a point is moving where the average says so. A MOS model offers ``moving_probabilities(batch) ->
  {"probabilities" [sum N, 2], "mapped" [sum N] (, "detections": its boxes per sample)}`` and
  ``predictions(batch, scores, mapped (, detections))``: MosNet and InsMOS do (InsMOS's boxes are fused as a
  detector's).
- **Scene flow**: any flow model; both clouds are seen in the same view, and each view's flow vectors are taken
  back to the scan's frame (p -> matrix @ p, so flow -> matrix^-1 @ flow) and averaged.

    python tools/test.py run_dir=... tta=flips                          # the scan, its x, y and xy mirror images
    python tools/test.py run_dir=... tta=d4 'tta_scales=[0.95,1,1.05]'  # 8 symmetries of the square x 3 scales
    python tools/test.py run_dir=<KITTI detector> tta=mirror            # y -> -y only: KITTI's range is x >= 0
    python tools/test.py run_dir=<mos run> tta=flips dataset_root=...   # moving probabilities over 4 views

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

from pc3d.data.batch import CLOUDS
from pc3d.data.transforms.global_ops import affine_boxes
from pc3d.errors import ConfigError
from pc3d.geometry import iou_3d, iou_bev, wrap_angle


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

    def apply(self, points: torch.Tensor, normal_columns: Sequence[int] = ()) -> torch.Tensor:
        """A copy of `points` [N, 3 + C] seen in this view: x, y, z, and the normals in `normal_columns` (three per
        normal) turned without the scale; the other feature columns unchanged."""
        out = points.clone()
        out[:, :3] = points[:, :3] @ torch.as_tensor(self.matrix.T, dtype=points.dtype, device=points.device)
        turn = torch.as_tensor(self.matrix.T / self.scale, dtype=points.dtype, device=points.device)
        for i in range(0, len(normal_columns), 3):
            cols = list(normal_columns[i:i + 3])
            out[:, cols] = points[:, cols] @ turn
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
    """The batch with its clouds (``points``, and ``points2`` of a scene-flow pair) seen in `view` and voxelized
    afresh by `voxelizer` (each sample seeded with its own seed, as Collate does); every other key (labels,
    offsets, metadata) as it is."""
    out = dict(batch)
    for cloud, suffix in CLOUDS.items():
        if cloud not in batch:
            continue
        points = view.apply(batch[cloud], batch.get("normal_columns", ()))
        offsets = batch["point_offsets" + suffix].tolist()
        clouds = [points[offsets[b]:offsets[b + 1]].cpu().numpy() for b in range(batch["batch_size"])]
        voxels = voxelizer.voxelize(clouds, seeds=[int(s) for s in batch["seed"]], frames=list(batch["frame_id"]))
        out[cloud] = points
        out.update({k + suffix: v.to(points.device) if isinstance(v, torch.Tensor) else v for k, v in voxels.items()})
    return out


def fuse_boxes(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, view_of: np.ndarray, n_views: int,
               iou_threshold: float = 0.55, overlap: str = "bev") -> dict:
    """Weighted box fusion of the detections of `n_views` views of one scan (all in the scan's frame).

    Greedily by score: the best box not yet taken and every untaken box of its class with IoU >= iou_threshold
    with it form a cluster; overlap: "bev" (rotated BEV IoU: outdoor objects do not stack) or "3d" (rotated 3D
    IoU: a wall cabinet above a base cabinet is another object). The fused box is the score-weighted mean of the
    cluster's centres, sizes (and velocities), its heading the direction of the score-weighted sum of heading
    vectors, each first turned to point within 90 degrees of the best box's (IoU clusters a box with its
    half-turned twin); its score is the mean over all views of each view's best score in the cluster (a view that
    found nothing there adds 0).
    Returns {"boxes" float32 [C, 7 (+2)], "scores" float32 [C], "labels" int64 [C]}, best first.
    """
    boxes = np.asarray(boxes, np.float32)
    boxes = boxes.reshape(-1, boxes.shape[-1] if boxes.ndim == 2 else 7)
    scores, labels = np.asarray(scores, np.float32), np.asarray(labels, np.int64)
    view_of = np.asarray(view_of, np.int64)
    if not len(boxes):
        return {"boxes": boxes, "scores": scores, "labels": labels}
    if overlap not in ("bev", "3d"):
        raise ConfigError(f"fuse_boxes: overlap must be 'bev' or '3d', got {overlap!r}")
    overlap = (iou_bev if overlap == "bev" else iou_3d)(boxes, boxes) >= iou_threshold
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
        heading[np.cos(heading - boxes[i, 6]) < 0] += np.pi  # BEV IoU cannot tell front from back: the best's
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
    """`model` (a segmentor, detector, MOS or scene-flow model, see above) evaluated over `views` of every scan
    (built in eval mode, and only predicts); `voxelizer`: the dataset's (its Collate's); box_iou: fuse_boxes'
    iou_threshold."""

    __test__ = False  # not a pytest class

    # task -> what the model must offer beyond forward; forward calls the method named for the task
    NEEDS = {"segmentation": ("class_probabilities", "predictions"), "detection": (),
             "mos": ("moving_probabilities", "predictions"), "flow": ()}

    def __init__(self, model: nn.Module, voxelizer, views: Sequence[View], box_iou: float = 0.55):
        super().__init__()
        self.task = getattr(model, "task", None)
        if self.task not in self.NEEDS:
            raise ConfigError(f"test-time augmentation combines {', '.join(self.NEEDS)} answers; "
                              f"{type(model).__name__} has task {self.task!r}")
        missing = [m for m in self.NEEDS[self.task] if not callable(getattr(model, m, None))]
        if missing:
            raise ConfigError(f"test-time augmentation of a {self.task} model averages its probabilities over the "
                              f"views; {type(model).__name__} has no {missing}")
        if voxelizer is None or not callable(getattr(voxelizer, "voxelize", None)):
            raise ConfigError("test-time augmentation voxelizes every view: the dataset has no voxelizer")
        if not views:
            raise ConfigError("test-time augmentation needs at least one view")
        self.model, self.voxelizer, self.views, self.box_iou = model, voxelizer, list(views), box_iou
        self.eval()

    def start_sequence(self, name: str | None = None) -> None:
        """Passed on to a stateful model (the model contract's ``start_sequence``)."""
        hook = getattr(self.model, "start_sequence", None)
        if callable(hook):
            hook(name)

    def seen(self, batch: dict, view: View) -> dict:
        return batch if view.identity else view_batch(batch, view, self.voxelizer)

    def forward(self, batch: dict) -> list[dict]:
        if self.training:
            raise ConfigError("test-time augmentation only predicts: train the model itself")
        return getattr(self, self.task)(batch)

    @staticmethod
    def averaged(answers: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        """(probabilities [sum N, K], mapped [sum N]) per view -> (the mean over the views that map each point,
        of the points some view maps [M, K]; that mask)."""
        total = sum(probabilities for probabilities, _ in answers)
        count = sum(mapped.long() for _, mapped in answers)
        mapped = count > 0
        return total[mapped] / count[mapped, None], mapped

    def segmentation(self, batch: dict) -> list[dict]:
        answers = [self.model.class_probabilities(self.seen(batch, view)) for view in self.views]
        return self.model.predictions(batch, *self.averaged(answers))

    def mos(self, batch: dict) -> list[dict]:
        answers = [self.model.moving_probabilities(self.seen(batch, view)) for view in self.views]
        scores, mapped = self.averaged([(a["probabilities"], a["mapped"]) for a in answers])
        if "detections" not in answers[0]:
            return self.model.predictions(batch, scores, mapped)
        return self.model.predictions(batch, scores, mapped, self.fused([a["detections"] for a in answers]))

    def restored(self, boxes: np.ndarray, view: View) -> np.ndarray:
        """A view's boxes in the scan's frame; an axis-aligned detector's (``axis_aligned``) as the axis-aligned
        boxes they cover, heading 0 (a quarter turn swaps their x and y sizes)."""
        out = view.boxes(boxes, inverse=True)
        if getattr(self.model, "axis_aligned", False):
            cos, sin = np.abs(np.cos(out[:, 6])), np.abs(np.sin(out[:, 6]))
            out[:, 3], out[:, 4] = cos * out[:, 3] + sin * out[:, 4], sin * out[:, 3] + cos * out[:, 4]
            out[:, 6] = 0.0
        return out

    def fused(self, per_view: Sequence[Sequence[dict]]) -> list[dict]:
        """Each view's detections (a list per sample, as a detector returns them) -> per sample the boxes, scores
        and labels fused in the scan's frame (every other key from the first view's)."""
        if len(self.views) == 1:  # nothing to fuse: the boxes taken back to the scan's frame
            return [dict(a) | {"boxes": self.restored(a["boxes"], self.views[0])} for a in per_view[0]]
        out = []
        for answers in zip(*per_view, strict=True):
            boxes = np.concatenate([self.restored(a["boxes"], view) for view, a in zip(self.views, answers,
                                                                                         strict=True)])
            scores = np.concatenate([np.asarray(a["scores"], np.float32) for a in answers])
            labels = np.concatenate([np.asarray(a["labels"], np.int64) for a in answers])
            view_of = np.concatenate([np.full(len(a["scores"]), v) for v, a in enumerate(answers)])
            out.append(dict(answers[0]) | fuse_boxes(boxes, scores, labels, view_of, len(self.views), self.box_iou,
                                                     "3d" if getattr(self.model, "axis_aligned", False) else "bev"))
        return out

    def detection(self, batch: dict) -> list[dict]:
        return self.fused([self.model(self.seen(batch, view)) for view in self.views])

    def flow(self, batch: dict) -> list[dict]:
        """Each view's flow of the first cloud's points taken back to the scan's frame and averaged (the other keys
        from the first view's answer: the ground truth a flow model echoes is the batch's, which no view moves;
        echoed ``points`` are the batch's own, which a view does move)."""
        per_view = [self.model(self.seen(batch, view)) for view in self.views]
        back = [np.linalg.inv(view.matrix).T for view in self.views]
        cut = batch["point_offsets"].tolist()
        out = []
        for b, answers in enumerate(zip(*per_view, strict=True)):
            flow = sum(np.asarray(a["flow"], np.float64) @ m for a, m in zip(answers, back, strict=True))
            answer = dict(answers[0]) | {"flow": (flow / len(answers)).astype(np.float32)}
            if "points" in answer:
                answer["points"] = batch["points"][cut[b]:cut[b + 1], :3].cpu().numpy()
            out.append(answer)
        return out
