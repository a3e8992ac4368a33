"""The batch contract: what a dataset returns per sample, and what `Collate` makes of a list of them.

Every dataset, transform, model and metric in pc3d reads and writes these keys, with these shapes
and dtypes, in the LiDAR frame (x forward, y left, z up; metres, radians). A key that a dataset has
no data for is absent (never None, never an empty stand-in).

Sample (one frame, numpy; what ``dataset[i]`` returns after its transforms)
----------------------------------------------------------------------------
frame_id       str                   unique name of the frame ("000008", "08/000123", "<segment>/<ts>")
points         float32 [N, 3 + C]    x, y, z, then the dataset's feature columns (``dataset.feature_names``,
                                     e.g. intensity; r, g, b in 0..1; time in seconds, <= 0 for past scans)
gt_boxes       float32 [M, 7 (+2)]   x, y, z (centre), dx, dy, dz, heading in [-pi, pi) (, vx, vy)
gt_labels      int64 [M]             class id of each box, 1..K: ``class_names[id - 1]`` (0 is never used)
point_labels   int64 [N]             per-point train id (semantic: 0..K-1 with ``ignore_index`` for
                                     unlabelled; MOS: 0 unlabelled, 1 static, 2 moving)
instance_ids   int64 [N]             per-point instance id (0 = stuff / none)
points2        float32 [N2, 3 + C]   scene flow: the second cloud (same frame convention as points)
flow           float32 [N, 3]        scene flow: motion of each point of `points` (pc2 - pc1 in the source)
flow_mask      bool [N]              scene flow: True where the flow is valid (not occluded)
seed           int                   the seed of this sample's augmentation (reproducible: (seed, epoch, index))
metadata       dict                  anything for evaluation and visualisation, never collated: e.g.
                                     ``annos`` (the frame's full, un-augmented labels incl. DontCare and
                                     difficulty), ``calib``, ``pose``, ``source`` (the file read)

Point-wise keys (``POINT_KEYS``) always have N rows and are cropped, shuffled and dropped together;
box-wise keys (``BOX_KEYS``) always have M rows. Transforms keep both invariants.

Batch (``Collate()(samples)``, torch tensors on the CPU; B = len(samples))
---------------------------------------------------------------------------
batch_size        int
frame_id          list[str] [B]
metadata          list[dict] [B]
seed              int64 [B]
points            float32 [sum N, 3 + C]  the clouds concatenated in sample order
point_offsets     int64 [B + 1]           sample b owns rows point_offsets[b]:point_offsets[b + 1]
point_batch       int64 [sum N]           sample index of every point
point_labels      int64 [sum N]           (when the samples have them) likewise instance_ids, flow [sum N, 3],
                                          flow_mask [sum N]
points2           float32 [sum N2, 3 + C] with points2_offsets int64 [B + 1]
gt_boxes          float32 [B, Mmax, 7 (+2) + 1]  each sample's boxes, class id (1..K) in the last
                                          column, zero rows after its num_gt[b] boxes (OpenPCDet's
                                          layout); Mmax = max(1, max M)
num_gt            int64 [B]

With a voxelizer (``Collate(voxelizer=...)``, voxelization runs in the DataLoader workers):
voxel_coords      int32 [V, 1 + D]        (batch, z, y, x) (D = 3; (batch, t, z, y, x) for a 4D grid)
voxel_num_points  int32 [V]               points in each voxel (hard: at most max_points_per_voxel)
point_to_voxel    int64 [sum N]           voxel of every point of ``points``, -1 outside the range / dropped
spatial_shape     tuple[int, ...]         the grid, slowest axis first (SparseTensor order)
voxels            float32 [V, P, 3 + C]   hard voxelizers only: the first P points of each voxel, zero padded

``sparse_input(batch)`` turns the voxel keys into the ``pc3d.sparse.SparseTensor`` a backbone takes
(mean of each voxel's point features); ``pc3d.engine.data.to_device`` moves a batch.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from pc3d.errors import DataFormatError

POINT_KEYS = ("points", "point_labels", "instance_ids", "flow", "flow_mask")
BOX_KEYS = ("gt_boxes", "gt_labels")
_CONCAT = ("point_labels", "instance_ids", "flow", "flow_mask")


def select_points(sample: dict, index: np.ndarray) -> dict:
    """The sample with every point-wise key indexed by `index` (bool mask or int indices)."""
    for key in POINT_KEYS:
        if key in sample:
            sample[key] = sample[key][index]
    return sample


def select_boxes(sample: dict, index: np.ndarray) -> dict:
    """The sample with every box-wise key indexed by `index` (bool mask or int indices)."""
    for key in BOX_KEYS:
        if key in sample:
            sample[key] = sample[key][index]
    return sample


def check_sample(sample: dict) -> None:
    """DataFormatError naming the frame when a sample breaks the contract (shapes, dtypes, row counts)."""
    frame = sample.get("frame_id")
    points = sample.get("points")
    if not isinstance(points, np.ndarray) or points.dtype != np.float32 or points.ndim != 2 or points.shape[1] < 3:
        raise DataFormatError(frame, f"points must be float32 [N, 3 + C], got {getattr(points, 'dtype', None)} "
                                     f"{getattr(points, 'shape', None)}")
    for key in POINT_KEYS[1:]:
        if key in sample and len(sample[key]) != len(points):
            raise DataFormatError(frame, f"{key} has {len(sample[key])} rows for {len(points)} points")
    if "gt_boxes" in sample:
        boxes = sample["gt_boxes"]
        if boxes.dtype != np.float32 or boxes.ndim != 2 or boxes.shape[1] not in (7, 9):
            raise DataFormatError(frame, f"gt_boxes must be float32 [M, 7 or 9], got {boxes.dtype} {boxes.shape}")
        if len(sample.get("gt_labels", ())) != len(boxes):
            raise DataFormatError(frame, "gt_labels must have one class id per box")


def _offsets(arrays: Sequence[np.ndarray]) -> np.ndarray:
    return np.cumsum([0] + [len(a) for a in arrays]).astype(np.int64)


def pad_boxes(boxes: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> np.ndarray:
    """float32 [B, Mmax, C + 1]: boxes [M_b, C] with their class ids appended, zero padded, Mmax >= 1."""
    width = max((b.shape[1] for b in boxes), default=7)
    m_max = max(1, max((len(b) for b in boxes), default=0))
    out = np.zeros((len(boxes), m_max, width + 1), np.float32)
    for i, (b, lab) in enumerate(zip(boxes, labels, strict=True)):
        out[i, :len(b), :b.shape[1]] = b
        out[i, :len(b), width] = lab
    return out


class Collate:
    """DataLoader ``collate_fn``: samples -> the batch above; voxelizes in the worker when given a voxelizer.

    voxelizer: a ``pc3d.voxel`` HardVoxelizer (SECOND / PointPillars inputs) or DynamicVoxelizer /
    TemporalVoxelizer (sparse segmentation / MOS inputs), or None for point-based models. A
    shuffling HardVoxelizer is seeded with each sample's seed, so batches are reproducible.
    """

    def __init__(self, voxelizer: Any = None):
        self.voxelizer = voxelizer

    def __call__(self, samples: Sequence[dict]) -> dict:
        if not samples:
            raise DataFormatError(None, "cannot collate an empty list of samples")
        batch: dict[str, Any] = {
            "batch_size": len(samples),
            "frame_id": [s.get("frame_id", "") for s in samples],
            "metadata": [s.get("metadata", {}) for s in samples],
            "seed": torch.as_tensor([int(s.get("seed", 0)) for s in samples], dtype=torch.int64),
        }
        clouds = [s["points"] for s in samples]
        offsets = _offsets(clouds)
        batch["points"] = torch.from_numpy(np.concatenate(clouds).astype(np.float32, copy=False))
        batch["point_offsets"] = torch.from_numpy(offsets)
        batch["point_batch"] = torch.from_numpy(np.repeat(np.arange(len(samples), dtype=np.int64), np.diff(offsets)))
        for key in _CONCAT:
            if all(key in s for s in samples):
                batch[key] = torch.from_numpy(np.concatenate([s[key] for s in samples]))
        if all("points2" in s for s in samples):
            batch["points2"] = torch.from_numpy(np.concatenate([s["points2"] for s in samples]))
            batch["points2_offsets"] = torch.from_numpy(_offsets([s["points2"] for s in samples]))
        if all("gt_boxes" in s for s in samples):
            batch["gt_boxes"] = torch.from_numpy(pad_boxes([s["gt_boxes"] for s in samples],
                                                           [s["gt_labels"] for s in samples]))
            batch["num_gt"] = torch.as_tensor([len(s["gt_boxes"]) for s in samples], dtype=torch.int64)
        if self.voxelizer is not None:
            batch.update(self.voxelize(samples))
        return batch

    def voxelize(self, samples: Sequence[dict]) -> dict:
        from pc3d.voxel import HardVoxelizer

        frames = [s.get("frame_id") for s in samples]
        if isinstance(self.voxelizer, HardVoxelizer):
            parts = [self.voxelizer(s["points"], seed=int(s.get("seed", 0)), frame=f, batch_index=b)
                     for b, (s, f) in enumerate(zip(samples, frames, strict=True))]
            hv = type(parts[0]).concat(parts)
            return {"voxels": torch.from_numpy(hv.voxels), "voxel_num_points": torch.from_numpy(hv.num_points),
                    "voxel_coords": torch.from_numpy(hv.coords), "point_to_voxel": torch.from_numpy(hv.point_to_voxel),
                    "spatial_shape": tuple(hv.spatial_shape)}
        dv = self.voxelizer.voxelize_batch([s["points"] for s in samples], frames=frames)
        point_to_voxel = np.full(len(dv.keep), -1, np.int64)
        point_to_voxel[dv.keep] = dv.point_to_voxel
        return {"voxel_coords": torch.from_numpy(dv.coords), "voxel_num_points": torch.from_numpy(dv.voxel_counts),
                "point_to_voxel": torch.from_numpy(point_to_voxel), "spatial_shape": tuple(dv.spatial_shape)}


def sparse_input(batch: dict, device: torch.device | str | None = None):
    """SparseTensor of a voxelized batch: each voxel's feature is the mean of its points' columns [3 + C]."""
    from pc3d.voxel import scatter_mean, to_sparse_tensor

    if "voxel_coords" not in batch:
        raise DataFormatError(None, "the batch has no voxels: build the DataLoader with Collate(voxelizer=...)")
    if "voxels" in batch:
        counts = batch["voxel_num_points"].clamp(min=1).to(batch["voxels"].dtype)
        feats = batch["voxels"].sum(1) / counts[:, None]
    else:
        keep = batch["point_to_voxel"] >= 0
        feats = scatter_mean(batch["points"][keep], batch["point_to_voxel"][keep], len(batch["voxel_coords"]))
    return to_sparse_tensor(feats, batch["voxel_coords"], batch["spatial_shape"], batch["batch_size"], device)
