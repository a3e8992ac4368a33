"""Scene flow between consecutive scans of a LiDAR sequence (SemanticKITTI layout), with the ego motion as
ground truth for static points.

    pair (seq, t):  points = scan t, points2 = scan t + 1, each in its own LiDAR frame (as a stream sees them)
    flow            the motion of each point of scan t into the frame of scan t + 1 if the world stood still:
                    inv(P_{t+1}) P_t p - p  (P: ``lidar_poses``, P_lidar = Tr^-1 P0^-1 Pi Tr)
    flow_mask       True on static points (MOS train id 1); moving and unlabelled points have no known flow
                    (False). Unlabelled sequences: every point counts as static.

Clouds are prepared as HPLFlowNet prepares KITTI scene flow, in LiDAR axes: ground removed (raw SemanticKITTI
ground classes when the sequence is labelled, else z < ``min_z``), depth x < ``max_depth`` (35 m), and the
camera's horizontal field of view (|azimuth| < ``fov`` / 2, 90 degrees by default; 360 keeps everything). Then
``num_points`` points per cloud are sampled (SamplePoints, seeded as every pc3d transform).

This is the check that a flow model's static points move with the poses (the ego motion), and the dataset a
LiDAR-only flow model is evaluated on without scene-flow labels. Pairs never cross a sequence; the last scan of
a sequence has no pair.
"""
from __future__ import annotations

from collections.abc import Mapping
from os import PathLike
from pathlib import Path

import numpy as np

from pc3d.errors import DataFormatError

from .dataset import PointCloudDataset
from .io import read_label
from .sceneflow import sample_points_per_mode
from .semantickitti import SemanticKittiDataset, relative_pose, transform_points

# raw SemanticKITTI ids of the ground: road, parking, sidewalk, other-ground, lane-marking, terrain
GROUND_IDS = (40, 44, 48, 49, 60, 72)


def scene_flow_crop(points: np.ndarray, max_depth: float = 35.0, fov: float = 90.0,
                    min_z: float | None = -1.4) -> np.ndarray:
    """bool [N]: the points HPLFlowNet keeps of a KITTI scan, in LiDAR axes: depth x < max_depth, |azimuth| <=
    fov / 2 degrees and, unless min_z is None, z >= min_z (the ground cut of unlabelled scans). A field of view
    wider than 180 degrees (360: all around) looks behind the sensor, where depth along x bounds nothing: there
    the horizontal range sqrt(x^2 + y^2) < max_depth."""
    xyz = np.asarray(points)[:, :3]
    azimuth = np.degrees(np.abs(np.arctan2(xyz[:, 1], xyz[:, 0])))
    depth = xyz[:, 0] if fov <= 180 else np.hypot(xyz[:, 0], xyz[:, 1])
    keep = (depth < max_depth) & (azimuth <= fov / 2)
    return keep if min_z is None else keep & (xyz[:, 2] >= min_z)


class SequenceFlowDataset(PointCloudDataset):
    """Consecutive-scan pairs of SemanticKITTI-layout sequences; see the module docstring.

    root: the folder holding sequences/. split / sequences: as SemanticKittiDataset (mode "mos": its learning
    map's splits). num_points: points per cloud after the filters (None: all; or {train: n, test: m}). min_z,
    max_depth, fov: the filters (metres, metres, degrees).
    """

    feature_names = ()

    def __init__(self, root: str | PathLike, split: str = "valid", sequences=None,
                 num_points: int | Mapping[str, int] | None = 8192,
                 min_z: float = -1.4, max_depth: float = 35.0, fov: float = 90.0,
                 transforms=None, augmentations=None, voxelizer=None, point_cloud_range=None, voxel_size=None,
                 seed: int | None = None, skip_bad_frames: bool = False, training: bool | None = None):
        transforms = sample_points_per_mode(num_points, training, split) + list(transforms or [])
        super().__init__(transforms, augmentations, voxelizer, point_cloud_range, voxel_size, seed, skip_bad_frames,
                         training)
        self.scans = SemanticKittiDataset(root, split, mode="mos", sequences=sequences, scan_period=0.1)
        self.root = Path(root)
        self.min_z, self.max_depth, self.fov = float(min_z), float(max_depth), float(fov)
        names = set(self.scans.frames)
        self.frames = [(s, n) for s, n in self.scans.frames
                       if n.isdigit() and (s, f"{int(n) + 1:0{len(n)}d}") in names]
        if not self.frames:
            raise DataFormatError(self.root / "sequences", f"no pair of consecutive scans in sequences "
                                                           f"{self.scans.sequences}")

    def frame_id(self, index: int) -> str:
        return "/".join(self.frames[index])

    def _keep(self, seq: str, name: str, points: np.ndarray, labelled: bool) -> np.ndarray:
        if not labelled:
            return scene_flow_crop(points, self.max_depth, self.fov, self.min_z)
        raw = read_label(self.root / "sequences" / seq / "labels" / f"{name}.label", len(points)) & 0xFFFF
        return scene_flow_crop(points, self.max_depth, self.fov, None) & ~np.isin(raw, GROUND_IDS)

    def load(self, index: int) -> dict:
        seq, name = self.frames[index]
        following = f"{int(name) + 1:0{len(name)}d}"
        poses, _ = self.scans.sequence_poses(seq)
        if int(following) >= len(poses):
            raise DataFormatError(self.root / "sequences" / seq / "poses.txt",
                                  f"{len(poses)} poses, no pose for scan {following}")
        p1, mos, _ = self.scans.read_scan(seq, name)
        p2, _, _ = self.scans.read_scan(seq, following)
        labelled = mos is not None
        keep1, keep2 = self._keep(seq, name, p1, labelled), self._keep(seq, following, p2, labelled)
        if not keep1.any() or not keep2.any():
            scan = following if keep1.any() else name
            raise DataFormatError(self.root / "sequences" / seq / "velodyne" / f"{scan}.bin",
                                  f"no point left after the scene-flow filters (ground removed, depth < "
                                  f"{self.max_depth:g} m, field of view {self.fov:g} degrees)")
        xyz1 = np.ascontiguousarray(p1[keep1, :3])
        moved = transform_points(xyz1, relative_pose(poses[int(following)], poses[int(name)]))
        static = (mos[keep1] == 1) if labelled else np.ones(len(xyz1), bool)
        source = self.root / "sequences" / seq / "velodyne" / f"{name}.bin"
        return {"frame_id": f"{seq}/{name}", "points": xyz1, "points2": np.ascontiguousarray(p2[keep2, :3]),
                "flow": (moved - xyz1).astype(np.float32), "flow_mask": static,
                "metadata": {"sequence": seq, "source": str(source)}}
