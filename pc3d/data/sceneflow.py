"""Scene flow: FlyingThings3D and KITTI in HPLFlowNet's preprocessing (one folder per sample, pc1.npy
and pc2.npy, float32 [N, 3], same index = same point, flow = pc2 - pc1):

    KITTI_processed_occ_final/NNNNNN/                         x left, y up, z forward (camera)
    FlyingThings3D_subset_processed_35m/{train,val}/NNNNNNN/  x right, y up, z = -depth

Clouds are converted at the edge to pc3d's LiDAR axes (x forward, y left, z up), after HPLFlowNet's
own filters (KITTI: ground y < -1.4 in both clouds removed, depth < 35 m; FlyingThings3D: depth < 35 m).
An optional ``mask.npy`` (bool [N], True = not occluded, FlowNet3D's valid mask) becomes flow_mask;
without it every point is valid (HPLFlowNet keeps only points visible in both frames). Masks are all or
nothing: when a pair of the folder has one, a pair without it is a DataFormatError (its occluded points
would silently count as valid). Every sample
is sampled to `num_points` points per cloud (8,192) by a seeded SamplePoints transform run first;
`num_points` may also name a count per mode, {train: 2048, test: 8192}, as OpenPCDet's NUM_POINTS does
(a CPU recipe trains on small clouds and evaluates at the benchmark's size).
A pair with no point (on disk, or after the filters) is a DataFormatError naming its folder.

``projection(index)`` is the camera PointPWC's 2D metrics (EPE2D, Acc2D) project with, turned to pc3d's axes:
FlyingThings3D's (f = 1050 px, centre (479.5, 269.5)) for every pair; for KITTI the pair's P_rect_02 from
``calib_dir`` (KITTI scene flow's training/calib_cam_to_cam/NNNNNN.txt, the files PointPWC ships), or None
without it. As PointPWC does, both image axes use P_rect_02's first focal length and the third row only its
depth offset (KITTI's rectified calibs hold nothing else there).
"""
from __future__ import annotations

from collections.abc import Mapping
from os import PathLike
from pathlib import Path

import numpy as np

from pc3d.errors import ConfigError, DataFormatError
from pc3d.geometry.calib import calib_entries, calib_matrix

from .dataset import TRAIN_SPLITS, PointCloudDataset
from .io import load_npy, read_npy
from .transforms import SamplePoints

VARIANTS = {"kitti": "KITTI_processed_occ_final", "flyingthings3d": "FlyingThings3D_subset_processed_35m"}
# rows: LiDAR x, y, z as combinations of the disk axes
TO_LIDAR = {"kitti": np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0]], np.float32),
            "flyingthings3d": np.array([[0, 0, -1], [-1, 0, 0], [0, 1, 0]], np.float32)}
DEPTH_LIMIT = 35.0
# PointPWC's FlyingThings3D camera on the disk axes (x right, y up, z = -depth): u = 1050 x / depth + 479.5,
# v = 1050 y / depth + 269.5 (v grows upward, as PointPWC computes it; optical-flow norms do not see the flip)
FT3D_PROJECTION = np.array([[1050.0, 0.0, -479.5, 0.0], [0.0, 1050.0, -269.5, 0.0], [0.0, 0.0, -1.0, 0.0]])


def kitti_projection(path: Path) -> np.ndarray:
    """PointPWC's [3, 4] KITTI camera on the disk axes (x left, y up, z forward) from a calib_cam_to_cam file's
    P_rect_02: u = (-f x + cx z + tx) / (z + tz), v = (-f y + cy z + ty) / (z + tz)."""
    p = calib_matrix(path, calib_entries(path), ("P_rect_02",), (3, 4))
    return np.array([[-p[0, 0], 0.0, p[0, 2], p[0, 3]], [0.0, -p[0, 0], p[1, 2], p[1, 3]], [0.0, 0.0, 1.0, p[2, 3]]])


def sample_points_per_mode(num_points, training: bool | None, split: str) -> list[SamplePoints]:
    """[SamplePoints(n)] for num_points = n, or n = num_points["train" | "test"] by mode (training, or when
    None the split's name); [] for None (every point kept)."""
    if isinstance(num_points, Mapping):
        if set(num_points) != {"train", "test"}:
            raise ConfigError(f"num_points per mode needs exactly the keys train and test, got {sorted(num_points)}")
        num_points = num_points["train" if (training if training is not None else split in TRAIN_SPLITS) else "test"]
    return [SamplePoints(num_points)] if num_points else []


def mapped_pairs(frames: list[str], mapping: Path) -> list[str]:
    """The pair folders (named by number) whose line of a KITTI_mapping.txt is not empty; DataFormatError naming
    the file when a folder is not a number or has no line."""
    try:
        lines = mapping.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DataFormatError(mapping, f"cannot read the KITTI mapping file ({error})") from None
    kept = []
    for name in frames:
        if not name.isdigit() or int(name) >= len(lines):
            raise DataFormatError(mapping, f"{len(lines)} lines, none for the pair folder {name!r} (folders are "
                                           "numbered by line)")
        if lines[int(name)].strip():
            kept.append(name)
    return kept


class SceneFlowDataset(PointCloudDataset):
    """Scene-flow pairs: points (pc1) [n, 3], points2 (pc2) [n, 3], flow [n, 3], flow_mask [n] (n = num_points).

    root: the folder holding the variant's folder. variant: "kitti" or "flyingthings3d". split:
    train / val for FlyingThings3D (KITTI has one folder; split is ignored). num_points: points per cloud (None
    keeps every point), or {train: n, test: m}. mapping_file (KITTI): HPLFlowNet's ``KITTI_mapping.txt`` (one line
    per pair, by its folder number); only the pairs whose line is not empty are read, HPLFlowNet's and PointPWC's
    evaluation set (142 of the 200); None reads every pair, which published KITTI figures do not. calib_dir
    (KITTI): the folder of the pairs' calib_cam_to_cam files, named as the pair folders (NNNNNN.txt), for the 2D
    metrics.
    """

    feature_names = ()

    def __init__(self, root: str | PathLike, variant: str = "flyingthings3d", split: str = "train",
                 num_points: int | Mapping[str, int] | None = 8192,
                 transforms=None, augmentations=None, voxelizer=None, point_cloud_range=None, voxel_size=None,
                 seed: int | None = None, skip_bad_frames: bool = False, training: bool | None = None,
                 mapping_file: str | PathLike | None = None, calib_dir: str | PathLike | None = None):
        if variant not in VARIANTS:
            raise ConfigError(f"variant must be one of {sorted(VARIANTS)}, got {variant!r}")
        transforms = sample_points_per_mode(num_points, training, split) + list(transforms or [])
        super().__init__(transforms, augmentations, voxelizer, point_cloud_range, voxel_size, seed, skip_bad_frames,
                         training)
        self.root, self.variant, self.split = Path(root), variant, split
        folder = self.root / VARIANTS[variant] / (split if variant == "flyingthings3d" else "")
        if not folder.is_dir():
            raise DataFormatError(folder, "scene-flow folder does not exist")
        self.folder = folder
        self.frames = sorted(p.name for p in folder.iterdir() if p.is_dir())
        if not self.frames:
            raise DataFormatError(folder, "no sample folders (expected one folder per pair, holding pc1.npy, pc2.npy)")
        if mapping_file is not None:
            self.frames = mapped_pairs(self.frames, Path(mapping_file))
        masked = [f for f in self.frames if (folder / f / "mask.npy").is_file()]
        self.masked = masked[0] if masked else None  # a pair with an occlusion mask: all must have one
        if calib_dir is not None and variant != "kitti":
            raise ConfigError(f"calib_dir is for the kitti variant (FlyingThings3D has one fixed camera), got "
                              f"{variant!r}")
        self.calib_dir = None if calib_dir is None else Path(calib_dir)
        if self.calib_dir is not None and not self.calib_dir.is_dir():
            raise DataFormatError(self.calib_dir, "calib_dir does not exist (KITTI scene flow's "
                                                  "training/calib_cam_to_cam)")

    def projection(self, index: int) -> np.ndarray | None:
        """float64 [3, 4]: homogeneous pc3d-frame points (x forward, y left, z up) of pair `index` to PointPWC's
        homogeneous pixels; None for KITTI without calib_dir."""
        if self.variant == "flyingthings3d":
            disk = FT3D_PROJECTION
        elif self.calib_dir is None:
            return None
        else:
            disk = kitti_projection(self.calib_dir / f"{self.frames[index]}.txt")
        # pc3d = TO_LIDAR @ disk, so disk = TO_LIDAR.T @ pc3d and P_disk @ disk = (P_disk @ TO_LIDAR.T) @ pc3d
        return np.concatenate([disk[:, :3] @ TO_LIDAR[self.variant].T, disk[:, 3:]], axis=1)

    def load(self, index: int) -> dict:
        folder = self.folder / self.frames[index]
        pc1, pc2 = read_npy(folder / "pc1.npy", 3), read_npy(folder / "pc2.npy", 3)
        if len(pc1) != len(pc2):
            raise DataFormatError(folder / "pc2.npy", f"{len(pc2)} points for {len(pc1)} in pc1.npy (same index = "
                                                      "same point)")
        if not len(pc1):
            raise DataFormatError(folder / "pc1.npy", "no points (a scene-flow pair needs both clouds)")
        mask = np.ones(len(pc1), bool)
        if self.masked and not (folder / "mask.npy").is_file():
            raise DataFormatError(folder / "mask.npy", f"missing, but {self.masked}/mask.npy exists (occlusion masks "
                                                       "are all or nothing: without one every point would count as "
                                                       "visible)")
        if (folder / "mask.npy").is_file():
            mask = load_npy(folder / "mask.npy")
            if mask.dtype.kind not in "biu" or mask.size != len(pc1):
                raise DataFormatError(folder / "mask.npy", f"expected {len(pc1)} bool mask values, got {mask.dtype} "
                                                           f"{mask.shape}")
            mask = mask.astype(bool).reshape(-1)
        if self.variant == "kitti":
            keep = ~((pc1[:, 1] < -1.4) & (pc2[:, 1] < -1.4)) & (pc1[:, 2] < DEPTH_LIMIT) & (pc2[:, 2] < DEPTH_LIMIT)
        else:
            keep = (pc1[:, 2] > -DEPTH_LIMIT) & (pc2[:, 2] > -DEPTH_LIMIT)
        if not keep.any():
            ground = ", ground below y = -1.4 m removed" if self.variant == "kitti" else ""
            raise DataFormatError(folder, f"none of the {len(pc1)} points is left after the {self.variant} filters "
                                          f"(depth < {DEPTH_LIMIT:g} m{ground})")
        m = TO_LIDAR[self.variant]
        p1, p2 = pc1[keep] @ m.T, pc2[keep] @ m.T
        return {"frame_id": f"{self.variant}/{self.frames[index]}", "points": np.ascontiguousarray(p1, np.float32),
                "points2": np.ascontiguousarray(p2, np.float32), "flow": (p2 - p1).astype(np.float32),
                "flow_mask": mask[keep], "metadata": {"source": str(folder)}}
