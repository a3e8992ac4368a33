"""KITTI 3D object layout (devkit_object readme):

    training/velodyne/NNNNNN.bin   float32 x, y, z, reflectance (N x 4), LiDAR frame, full 360 sweep
    training/label_2/NNNNNN.txt    type trunc occ alpha left top right bottom h w l x y z rotation_y
    training/calib/NNNNNN.txt      P0..P3, R0_rect, Tr_velo_to_cam, Tr_imu_to_velo
    training/image_2/NNNNNN.png    a black 1224 x 370 image, the size that goes with the calibration
                                   (tools read the image size from it)
    training/planes/NNNNNN.txt     the road plane in the rectified camera frame (OpenPCDet's format)
    ImageSets/{train,val,trainval,test}.txt
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pc3d.geometry.calib import KittiCalib

from ..frames import outdoor_frames
from ..ground_truth import IMAGE_SHAPE, kitti_calib, kitti_objects
from ..sensor import velodyne_file_order
from ..simulator import SimFrame
from ._png import blank_png
from .settings import WriterSettings

SUBDIRS = ("velodyne", "label_2", "calib", "image_2", "planes")


def label_lines(frame: SimFrame, calib: KittiCalib) -> list[str]:
    """The label_2 lines of a frame, formatted as the devkit writes them, DontCare regions last as in KITTI's
    files (OpenPCDet's and mmdet3d's converters take the first lines as the objects and the rest as DontCare)."""
    objs = kitti_objects(frame, calib)
    lines, dont_care = [], []
    for k, kind in enumerate(objs.types):
        l_, t, r, b = objs.bbox[k]
        if kind == "DontCare":
            dont_care.append(f"DontCare -1 -1 -10 {l_:.2f} {t:.2f} {r:.2f} {b:.2f} -1 -1 -1 -1000 -1000 -1000 -10")
            continue
        x, y, z, h, w, length, ry = objs.camera_boxes[k]
        lines.append(f"{kind} {objs.truncated[k]:.2f} {objs.occluded[k]:d} {objs.alpha[k]:.2f} "
                     f"{l_:.2f} {t:.2f} {r:.2f} {b:.2f} {h:.2f} {w:.2f} {length:.2f} {x:.2f} {y:.2f} {z:.2f} {ry:.2f}")
    return lines + dont_care


def road_plane_text(calib: KittiCalib, ground_z: float) -> str:
    """The ground plane z = ground_z (LiDAR frame) as a x + b y + c z + d = 0 in the rectified camera frame."""
    pts = np.array([[0.0, 0.0, ground_z], [10.0, 0.0, ground_z], [0.0, 10.0, ground_z], [0.0, 0.0, ground_z + 1]])
    rect = np.asarray(calib.lidar_to_rect(pts), np.float64)
    normal = rect[3] - rect[0]
    normal /= np.linalg.norm(normal)
    d = -normal @ rect[0]
    return "# Plane\nWidth 4\nHeight 1\n" + " ".join(f"{v:e}" for v in (*normal, d)) + "\n"


class KittiWriter:
    """Writes frames 000000, 000001, ... under root/training and the ImageSets splits on close()."""

    def __init__(self, root: str | Path, calib: KittiCalib, images: bool = True):
        self.root = Path(root)
        self.calib = calib
        self.images = images
        self.count = 0
        for sub in SUBDIRS:
            if sub != "image_2" or images:
                (self.root / "training" / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "ImageSets").mkdir(parents=True, exist_ok=True)
        self._calib_text = calib.to_text()

    def write(self, frame: SimFrame, ground_z: float) -> str:
        name = f"{self.count:06d}"
        base = self.root / "training"
        order = velodyne_file_order(frame.sweep)
        np.ascontiguousarray(frame.points[order], dtype="<f4").tofile(base / "velodyne" / f"{name}.bin")
        lines = label_lines(frame, self.calib)
        (base / "label_2" / f"{name}.txt").write_text("".join(line + "\n" for line in lines))
        (base / "calib" / f"{name}.txt").write_text(self._calib_text)
        (base / "planes" / f"{name}.txt").write_text(road_plane_text(self.calib, ground_z))
        if self.images:
            (base / "image_2" / f"{name}.png").write_bytes(blank_png(IMAGE_SHAPE[1], IMAGE_SHAPE[0]))
        self.count += 1
        return name

    def close(self, val_fraction: float = 0.5, scene_length: int = 1) -> None:
        """ImageSets: the first frames train, the rest val (KITTI's split is about half and half); with more than
        one scene of scene_length frames the cut falls between scenes, as KITTI's split keeps each drive on one
        side (else val would hold a second view of training scenes)."""
        names = [f"{i:06d}" for i in range(self.count)]
        n_train = self.count - int(round(self.count * val_fraction)) if self.count > 1 else self.count
        scenes = -(-self.count // scene_length)
        if scenes > 1:
            n_train = min(int(np.clip(round(n_train / scene_length), 1, scenes - 1)) * scene_length, self.count)
        splits = {"train": names[:n_train], "val": names[n_train:], "trainval": names, "test": []}
        for split, items in splits.items():
            (self.root / "ImageSets" / f"{split}.txt").write_text("".join(f"{n}\n" for n in items))


def write_kitti(settings: WriterSettings) -> None:
    """settings.frames KITTI object frames under settings.out, a new scene every sequence_length frames."""
    writer = KittiWriter(settings.out, kitti_calib())
    ground_z = -float(settings.spec.mount[2, 3])
    # KITTI object frames are snapshots: frames of one scene are a second apart
    frames = outdoor_frames(settings.frames, settings.seed, settings.spec, frames_per_scene=settings.sequence_length,
                            spacing=1.0, distortion=settings.distortion, **settings.scene())
    for n, (_, _, frame) in enumerate(frames):
        writer.write(frame, ground_z)
        settings.tick(n + 1)
    writer.close(scene_length=settings.sequence_length)
