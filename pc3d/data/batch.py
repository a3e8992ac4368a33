"""The batch contract: what a dataset returns per sample, and what `Collate` makes of a list of them.

Every dataset, transform, model and metric in pc3d reads and writes these keys, with these shapes
and dtypes, in the LiDAR frame (x forward, y left, z up; metres, radians). A key that a dataset has
no data for is absent (never None, never an empty stand-in).

Sample (one frame, numpy; what ``dataset[i]`` returns after its transforms)
----------------------------------------------------------------------------
frame_id       str                   unique name of the frame ("000008", "08/000123", "<segment>/<ts>")
points         float32 [N, 3 + C]    x, y, z, then the dataset's feature columns (``dataset.feature_names``,
                                     e.g. intensity; r, g, b in 0..1; time in seconds, <= 0 for past scans)
gt_boxes       float32 [M, 7 (+2)]   x, y, z (centre), dx, dy, dz, heading in [-pi, pi) (, vx, vy in m/s, NaN
                                     where unknown)
gt_labels      int64 [M]             class id of each box, 1..K: ``class_names[id - 1]`` (0 is never used;
                                     datasets whose class_names name point classes, MOS: ``box_class_names``)
other_boxes    float32 [K, 7 (+2)]   real objects that are no training target (KITTI's Van, Truck, Tram, Misc,
                                     Person_sitting; Waymo's signs and boxes under min_box_points): moved with
                                     the scene; objects pasted or moved by augmentation keep clear of them
                                     (OpenPCDet keeps them among its gt_boxes until after augmentation); never
                                     collated
point_labels   int64 [N]             per-point train id (semantic: 0..K-1 with ``ignore_index`` for
                                     unlabelled; MOS: 0 unlabelled, 1 static, 2 moving)
instance_ids   int64 [N]             per-point instance id (0 = stuff / none)
moving_labels  int64 [N]             MOS: 1 moving, 0 static, -1 unlabelled (ignored by losses and metrics)
point_time     float32 [N]           multi-scan: seconds relative to the current scan (0 current, < 0 past);
                                     the values of the ``time`` feature column when the dataset has one
point_frame    int64 [N]             multi-scan: 0 for the current scan, k for the k-th scan before it
num_current_points  int              multi-scan: rows 0 .. num_current_points - 1 of every point-wise key
                                     are the current scan, the past scans follow (transforms keep this)
points2        float32 [N2, 3 + C]   scene flow: the second cloud (same frame convention as points)
flow           float32 [N, 3]        scene flow: motion of each point of `points` (pc2 - pc1 in the source)
flow_mask      bool [N]              scene flow: True where the flow is valid (not occluded)
label          int                   shape classification: the sample's class id 0..K-1 (``class_names[label]``)
seed           int                   the seed of this sample's augmentation (reproducible: (seed, epoch, index))
normal_columns tuple[int, ...]       the feature columns of every cloud holding unit surface normals, three per
                                     normal (nx, ny, nz; ModelNet40, ScanNet with normals): geometric transforms
                                     turn them as directions
metadata       dict                  anything for evaluation and visualisation, never collated: e.g.
                                     ``annos`` (the frame's full, un-augmented labels incl. DontCare and
                                     difficulty), ``calib``, ``pose``, ``source`` (the file read)

Clouds. A sample holds one cloud (``points``) or two (``points2``, scene flow); ``CLOUDS`` maps each
to the suffix of its own keys. The point-wise keys of ``points`` are ``POINT_FIELDS`` (point_labels,
instance_ids, moving_labels, point_time, point_frame, flow, flow_mask); those of ``points2`` are the
same names with the suffix 2 (point_labels2, ..., flow2 = the backward flow), where a dataset has
them. ``point_keys(cloud)`` lists a cloud's keys; they always have that cloud's row count and are
cropped, shuffled and dropped together by ``select_points(sample, index, cloud)``. Geometric
transforms move every cloud and turn the vector keys (``VECTOR_FIELDS``: flow, flow2) with them.
Box-wise keys (``BOX_KEYS``) always have M rows. ``POINT_KEYS`` lists the point-wise keys of all clouds.

Batch (``Collate()(samples)``, torch tensors on the CPU; B = len(samples))
---------------------------------------------------------------------------
batch_size        int
frame_id          list[str] [B]
metadata          list[dict] [B]
seed              int64 [B]
points            float32 [sum N, 3 + C]  the clouds concatenated in sample order
point_offsets     int64 [B + 1]           sample b owns rows point_offsets[b]:point_offsets[b + 1]
point_batch       int64 [sum N]           sample index of every point
point_labels      [sum N]                 every point-wise key the samples have, concatenated like points
                                          (instance_ids, moving_labels, point_time, point_frame, flow [sum N, 3], ...)
num_current_points int64 [B]              (multi-scan) the first num_current_points[b] rows of sample b are its
                                          current scan
points2           float32 [sum N2, 3 + C] (scene flow) with point_offsets2, point_batch2 and the keys of points2
gt_boxes          float32 [B, Mmax, 7 (+2) + 1]  each sample's boxes, class id (1..K) in the last
                                          column, zero rows after its num_gt[b] boxes (OpenPCDet's
                                          layout); Mmax = max(1, max M)
num_gt            int64 [B]
label             int64 [B]               (shape classification) each sample's class id
normal_columns    tuple[int, ...]         the samples' normal columns, where they name them (the first sample's)

With a voxelizer (``Collate(voxelizer=...)``, voxelization runs in the DataLoader workers), for every cloud
(the keys of points2 carry the suffix 2: voxel_coords2, point_to_voxel2, ..., from the same voxelizer):
voxel_coords      int32 [V, 1 + D]        (batch, z, y, x); (batch, z, phi, rho) cylindrical; (batch, t, z, y, x)
                                          spatio-temporal (TemporalVoxelizer, t from the time column)
voxel_num_points  int32 [V]               points in each voxel (hard: at most max_points_per_voxel)
point_to_voxel    int64 [sum N]           voxel of every point of the cloud, -1 outside the range / dropped
spatial_shape     tuple[int, ...]         the grid, slowest axis first (SparseTensor order): (Z, Y, X), (T, Z, Y, X)
voxels            float32 [V, P, 3 + C]   hard voxelizers only: the first P points of each voxel, zero padded

A voxelizer is any object with ``voxelize(clouds, seeds=None, frames=None) -> dict`` returning these
keys for a list of clouds (sample b gets batch index b; seeds seed a shuffling voxelizer, one per
cloud: the sample's seed; frames name the samples in errors): every pc3d.voxel voxelizer.
``sparse_input(batch, cloud=...)`` turns a cloud's voxel keys into the ``pc3d.sparse.SparseTensor`` a
backbone takes (mean of each voxel's point features); ``pc3d.engine.data.to_device`` moves a batch.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch

from pc3d.errors import DataFormatError

CLOUDS = {"points": "", "points2": "2"}
POINT_FIELDS = ("point_labels", "instance_ids", "moving_labels", "point_time", "point_frame", "flow", "flow_mask")
VECTOR_FIELDS = ("flow",)
BOX_KEYS = ("gt_boxes", "gt_labels")
# dtype kind ("i" integer, "f" float, "b" bool) and trailing shape of each point-wise field
_FIELD_FORMAT = {"point_labels": ("i", ()), "instance_ids": ("i", ()), "moving_labels": ("i", ()),
                 "point_time": ("f", ()), "point_frame": ("i", ()), "flow": ("f", (3,)), "flow_mask": ("b", ())}


def point_keys(cloud: str = "points") -> tuple[str, ...]:
    """The cloud key and its point-wise keys: ("points", "point_labels", ...) or ("points2", "point_labels2", ...)."""
    return (cloud, *(field + CLOUDS[cloud] for field in POINT_FIELDS))


def vector_keys(cloud: str = "points") -> tuple[str, ...]:
    """The cloud's point-wise 3-vectors that turn with the points but never translate (flow)."""
    return tuple(field + CLOUDS[cloud] for field in VECTOR_FIELDS)


def clouds_of(sample: dict) -> list[str]:
    """The clouds a sample holds, "points" first."""
    return [cloud for cloud in CLOUDS if cloud in sample]


POINT_KEYS = tuple(key for cloud in CLOUDS for key in point_keys(cloud))


def select_points(sample: dict, index: np.ndarray, cloud: str = "points") -> dict:
    """The sample with every point-wise key of `cloud` indexed by `index` (bool mask or int indices).

    A multi-scan sample keeps its current scan first: the selected rows of the current scan come
    first (in the order of `index`), then those of the past scans, and num_current_points follows.
    """
    if cloud == "points" and "num_current_points" in sample:
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        current = index < sample["num_current_points"]
        index = np.concatenate([index[current], index[~current]])
        sample["num_current_points"] = int(current.sum())
    for key in point_keys(cloud):
        if key in sample:
            sample[key] = sample[key][index]
    return sample


def select_boxes(sample: dict, index: np.ndarray) -> dict:
    """The sample with every box-wise key indexed by `index` (bool mask or int indices)."""
    for key in BOX_KEYS:
        if key in sample:
            sample[key] = sample[key][index]
    return sample


def _check_cloud(sample: dict, cloud: str) -> None:
    frame, points = sample.get("frame_id"), sample[cloud]
    if not isinstance(points, np.ndarray) or points.dtype != np.float32 or points.ndim != 2 or points.shape[1] < 3:
        raise DataFormatError(frame, f"{cloud} must be float32 [N, 3 + C], got {getattr(points, 'dtype', None)} "
                                     f"{getattr(points, 'shape', None)}")
    for field in POINT_FIELDS:
        key = field + CLOUDS[cloud]
        if key not in sample:
            continue
        value, (kind, tail) = np.asarray(sample[key]), _FIELD_FORMAT[field]
        if len(value) != len(points):
            raise DataFormatError(frame, f"{key} has {len(value)} rows for {len(points)} points of {cloud}")
        if value.shape[1:] != tail or value.dtype.kind not in (kind, "u" if kind == "i" else kind):
            raise DataFormatError(frame, f"{key} must be {kind} {tail} per point, got {value.dtype} {value.shape}")


def _check_current_first(sample: dict) -> None:
    frame, n, count = sample.get("frame_id"), len(sample["points"]), sample["num_current_points"]
    if isinstance(count, bool) or not isinstance(count, int | np.integer) or not 0 <= count <= n:
        raise DataFormatError(frame, f"num_current_points must be an int in [0, {n}], got {count!r}")
    if "point_frame" in sample and not ((sample["point_frame"][:count] == 0).all()
                                        and (sample["point_frame"][count:] > 0).all()):
        raise DataFormatError(frame, f"point_frame must be 0 on the first {count} points (the current scan) "
                                     "and > 0 after them")


def check_sample(sample: dict) -> None:
    """DataFormatError naming the frame when a sample breaks the contract (shapes, dtypes, row counts)."""
    frame = sample.get("frame_id")
    if "points" not in sample:
        raise DataFormatError(frame, "a sample needs points float32 [N, 3 + C]")
    for cloud in clouds_of(sample):
        _check_cloud(sample, cloud)
    orphans = [key for cloud, suffix in CLOUDS.items() if cloud not in sample
               for key in (field + suffix for field in POINT_FIELDS) if key in sample]
    if orphans:
        raise DataFormatError(frame, f"{orphans} without their cloud")
    if "num_current_points" in sample:
        _check_current_first(sample)
    if "normal_columns" in sample:
        columns, width = list(sample["normal_columns"]), sample["points"].shape[1]
        if len(columns) % 3 or not all(isinstance(c, int | np.integer) and 3 <= c < width for c in columns):
            raise DataFormatError(frame, f"normal_columns must name feature columns of points (3 .. {width - 1}), "
                                         f"three per normal; got {columns}")
    if "gt_boxes" in sample:
        boxes = sample["gt_boxes"]
        if boxes.dtype != np.float32 or boxes.ndim != 2 or boxes.shape[1] not in (7, 9):
            raise DataFormatError(frame, f"gt_boxes must be float32 [M, 7 or 9], got {boxes.dtype} {boxes.shape}")
        if len(sample.get("gt_labels", ())) != len(boxes):
            raise DataFormatError(frame, "gt_labels must have one class id per box")
    if "other_boxes" in sample:
        other = sample["other_boxes"]
        if other.dtype != np.float32 or other.ndim != 2 or other.shape[1] not in (7, 9):
            raise DataFormatError(frame, f"other_boxes must be float32 [K, 7 or 9], got {other.dtype} {other.shape}")


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


class Voxelizer(Protocol):
    """What Collate needs of a voxelizer (every pc3d.voxel voxelizer has it)."""

    def voxelize(self, clouds: Sequence[np.ndarray], seeds: Sequence[int | None] | None = None,
                 frames: Sequence[str | None] | None = None) -> dict:
        """The voxel keys above for clouds [N_b, 3 + C] (sample b gets batch index b)."""


MIX_STREAM = 0x4D6978  # the stream of a batch's Mix3D draw, apart from the samples' own augmentation draws


def merge_samples(a: dict, b: dict) -> dict:
    """One scene of two (Mix3D, Nekrasov et al. 2021, as Pointcept's collate mixes): every cloud and its point-wise
    keys concatenated, a's rows first; boxes and their labels concatenated; b's instance ids moved past a's; frame
    id "a+b"; a's seed and metadata. Multi-scan windows (`num_current_points`) and classification samples
    (`label`) cannot be mixed: a DataFormatError names the frames."""
    frames = f"{a.get('frame_id')}+{b.get('frame_id')}"
    if any(key in s for key in ("num_current_points", "label") for s in (a, b)):
        raise DataFormatError(frames, "Mix3D mixes single scans with point-wise labels, not multi-scan windows "
                                      "(num_current_points) or shapes with one label")
    out = {**a, "frame_id": frames}
    for cloud in CLOUDS:
        keys = [key for key in point_keys(cloud) if key in a or key in b]
        if cloud not in a and cloud not in b:
            continue
        missing = [key for key in keys if key not in a or key not in b]
        if missing:
            raise DataFormatError(frames, f"Mix3D needs the same point-wise keys in both samples; {missing} in one")
        for key in keys:
            second = b[key]
            if key.startswith("instance_ids"):
                second = np.where(second > 0, second + int(a[key].max(initial=0)), second)
            out[key] = np.concatenate([a[key], second])
    for key in (*BOX_KEYS, "other_boxes"):
        if key in a and key in b:
            out[key] = np.concatenate([a[key], b[key]])
        elif key in a or key in b:
            raise DataFormatError(frames, f"Mix3D needs {key} in both samples or in neither")
    return out


def mix_pairs(samples: Sequence[dict]) -> list[dict]:
    """Samples 0 and 1, 2 and 3, ... merged into one scene each (`merge_samples`); an odd last one stays alone."""
    pairs = [merge_samples(samples[i], samples[i + 1]) for i in range(0, len(samples) - 1, 2)]
    return pairs + ([samples[-1]] if len(samples) % 2 else [])


class Collate:
    """DataLoader ``collate_fn``: samples -> the batch above; voxelizes every cloud in the worker when
    given a voxelizer (a ``pc3d.voxel`` voxelizer, or None for point-based models). A shuffling
    hard voxelizer is seeded with each sample's seed, so batches are reproducible.

    mix_prob: with this probability a batch's samples are mixed in pairs first (`mix_pairs`: Mix3D; Pointcept's
    segmentation recipes use 0.8), so it holds about half as many scenes. The draw is seeded by the first sample's
    seed: reproducible, whatever the worker count. Training only (the dataset config's `mix_prob`, which
    pc3d.engine.runner.build_dataset gives the training set's Collate).
    """

    def __init__(self, voxelizer: Voxelizer | None = None, mix_prob: float = 0.0):
        self.voxelizer = voxelizer
        self.mix_prob = float(mix_prob)

    def __call__(self, samples: Sequence[dict]) -> dict:
        if not samples:
            raise DataFormatError(None, "cannot collate an empty list of samples")
        if self.mix_prob > 0 and len(samples) > 1:
            draw = np.random.default_rng([int(samples[0].get("seed", 0)) % 2**63, MIX_STREAM]).random()
            if draw < self.mix_prob:
                samples = mix_pairs(samples)
        batch: dict[str, Any] = {
            "batch_size": len(samples),
            "frame_id": [s.get("frame_id", "") for s in samples],
            "metadata": [s.get("metadata", {}) for s in samples],
            "seed": torch.as_tensor([int(s.get("seed", 0)) for s in samples], dtype=torch.int64),
        }
        for cloud in CLOUDS:
            if all(cloud in s for s in samples):
                batch.update(self.collate_cloud(samples, cloud))
        if "normal_columns" in samples[0]:
            batch["normal_columns"] = tuple(int(c) for c in samples[0]["normal_columns"])
        if all("num_current_points" in s for s in samples):
            batch["num_current_points"] = torch.as_tensor([s["num_current_points"] for s in samples],
                                                          dtype=torch.int64)
        if all("gt_boxes" in s for s in samples):
            batch["gt_boxes"] = torch.from_numpy(pad_boxes([s["gt_boxes"] for s in samples],
                                                           [s["gt_labels"] for s in samples]))
            batch["num_gt"] = torch.as_tensor([len(s["gt_boxes"]) for s in samples], dtype=torch.int64)
        if all("label" in s for s in samples):
            batch["label"] = torch.as_tensor([int(s["label"]) for s in samples], dtype=torch.int64)
        return batch

    def collate_cloud(self, samples: Sequence[dict], cloud: str = "points") -> dict:
        """The batch keys of one cloud: the cloud, its offsets, batch indices, point-wise keys and voxels."""
        suffix = CLOUDS[cloud]
        clouds = [s[cloud] for s in samples]
        offsets = _offsets(clouds)
        out: dict[str, Any] = {
            cloud: torch.from_numpy(np.concatenate(clouds).astype(np.float32, copy=False)),
            "point_offsets" + suffix: torch.from_numpy(offsets),
            "point_batch" + suffix: torch.from_numpy(np.repeat(np.arange(len(samples), dtype=np.int64),
                                                               np.diff(offsets))),
        }
        for key in point_keys(cloud)[1:]:
            if all(key in s for s in samples):
                out[key] = torch.from_numpy(np.concatenate([s[key] for s in samples]))
        if self.voxelizer is not None:
            voxels = self.voxelizer.voxelize(clouds, seeds=[int(s.get("seed", 0)) for s in samples],
                                             frames=[s.get("frame_id") for s in samples])
            out.update({key + suffix: value for key, value in voxels.items()})
        return out


VOXEL_KEYS = ("voxel_coords", "voxel_num_points", "point_to_voxel", "spatial_shape", "voxels")


def cloud_view(batch: dict, cloud: str) -> dict:
    """The batch as a model of one cloud sees it: `cloud`'s keys (its points, offsets, point-wise and voxel
    keys) under the first cloud's names, every other key as it is (a mean teacher's student reads points2)."""
    suffix = CLOUDS[cloud]
    if cloud not in batch:
        raise DataFormatError(None, f"the batch has no {cloud}")
    names = ("points", "point_offsets", "point_batch", *point_keys("points")[1:], *VOXEL_KEYS)
    view = {key: value for key, value in batch.items() if key not in names}
    view.update({name: batch[name + suffix] for name in names if name + suffix in batch})
    return view


def mirrored(batch: dict, axes: Sequence[int]) -> dict:
    """The batch with its first cloud mirrored through the sensor across the horizontal `axes` (0: x -> -x, 1:
    y -> -y): those point columns negated and the voxel coordinates (batch, z, y, x) reflected in their grid, so
    every voxel holds the same points (on a Cartesian grid whose range is symmetric about the sensor, the voxels
    of voxelizing the mirrored points). Point rows keep their order, so a model's per-point answer on it is
    another view of the same scan (test-time augmentation)."""
    if len(batch["spatial_shape"]) != 3 or any(a not in (0, 1) for a in axes):
        raise DataFormatError(None, f"mirroring needs a (z, y, x) grid and axes 0 / 1, got spatial_shape "
                                    f"{tuple(batch['spatial_shape'])} and axes {list(axes)}")
    out = dict(batch)
    points, coords = batch["points"].clone(), batch["voxel_coords"].clone()
    voxels = batch["voxels"].clone() if "voxels" in batch else None
    for axis in axes:
        points[:, axis] = -points[:, axis]
        coords[:, 3 - axis] = batch["spatial_shape"][2 - axis] - 1 - coords[:, 3 - axis]
        if voxels is not None:
            voxels[..., axis] = -voxels[..., axis]
    out |= {"points": points, "voxel_coords": coords}
    return out if voxels is None else out | {"voxels": voxels}


def sparse_input(batch: dict, device: torch.device | str | None = None, cloud: str = "points",
                 occupancy: bool = False):
    """SparseTensor of a voxelized cloud of the batch: each voxel's feature is the mean of its points'
    columns [3 + C], or with `occupancy` a 1 [1] (4DMOS's input: the points are not read)."""
    from pc3d.voxel import scatter_mean, to_sparse_tensor

    s = CLOUDS[cloud]
    if "voxel_coords" + s not in batch:
        raise DataFormatError(None, f"the batch has no voxels of {cloud}: build the DataLoader with "
                                    "Collate(voxelizer=...)")
    coords, counts = batch["voxel_coords" + s], batch["voxel_num_points" + s]
    if occupancy:
        feats = torch.ones((len(coords), 1), dtype=batch[cloud].dtype, device=coords.device)
    elif "voxels" + s in batch:
        voxels = batch["voxels" + s]
        feats = voxels.sum(1) / counts.clamp(min=1).to(voxels.dtype)[:, None]
    else:
        keep = batch["point_to_voxel" + s] >= 0
        feats = scatter_mean(batch[cloud][keep], batch["point_to_voxel" + s][keep], len(coords))
    return to_sparse_tensor(feats, coords, batch["spatial_shape" + s], batch["batch_size"], device)
