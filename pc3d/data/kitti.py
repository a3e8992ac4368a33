"""KITTI 3D object detection (devkit_object layout), read unchanged:

    training/velodyne/NNNNNN.bin   float32 x, y, z, reflectance        -> points [N, 4] (intensity)
    training/label_2/NNNNNN.txt    camera-frame objects                 -> gt_boxes in the LiDAR frame
    training/calib/NNNNNN.txt      P0..P3, R0_rect, Tr_velo_to_cam      -> metadata["calib"] (KittiCalib)
    training/image_2/NNNNNN.png    only its size is read (field-of-view crop)
    ImageSets/{train,val,trainval,test}.txt   (test frames live under testing/)

Labels of classes outside ``class_names`` (Van, DontCare, ...) are not training boxes but stay in
``metadata["annos"]`` for evaluation, with each object's KITTI difficulty. A name outside the devkit's
classes, a negative size, a frame id listed twice or a labelled frame without points (in the camera's
field of view, when cropping to it) is a DataFormatError; an unlabelled empty scan is counted in ``notes``
(warned once).
"""
from __future__ import annotations

from os import PathLike
from pathlib import Path

import numpy as np
from pc3d_ops import geometry as _geometry

from pc3d.errors import ConfigError, DataFormatError
from pc3d.eval.kitti import kitti_difficulty
from pc3d.geometry import KittiCalib, boxes_camera_to_lidar
from pc3d.sim.labels import KITTI_TYPES  # the devkit's object classes (one definition, shared with the writer)

from .dataset import PointCloudDataset
from .io import numbered_lines, png_size, read_bin, read_ids

KITTI_CLASSES = ("Car", "Pedestrian", "Cyclist")
IMAGE_SHAPE = (375, 1242)  # KITTI's usual (height, width) when image_2 is absent


def check_object_line(path: Path, number: int, values: list[float]) -> None:
    """A real object's values as the devkit defines them: h, w, l > 0 (a box without volume cannot be learnt
    or matched), occluded in 0..3 and truncated in [0, 1], or -1 for both as in result files (an occlusion
    outside 0..3 puts the object in no difficulty, so it would silently leave the evaluation)."""
    truncated, occluded, size = values[0], values[1], values[7:10]
    if min(size) <= 0:
        raise DataFormatError(path, f"line {number}: size (h, w, l) = {tuple(size)} must be > 0 for an object "
                                    "(only DontCare rows carry -1)")
    if occluded not in (0, 1, 2, 3, -1):
        raise DataFormatError(path, f"line {number}: occluded = {occluded:g}, expected 0, 1, 2 or 3 (-1: unknown)")
    if not (0 <= truncated <= 1 or truncated == -1):
        raise DataFormatError(path, f"line {number}: truncated = {truncated:g}, expected a fraction in [0, 1]")


def parse_label(path: str | PathLike) -> dict[str, np.ndarray]:
    """The objects of a label_2 file: name <U [M], truncated, occluded int, alpha, bbox [M, 4],
    dimensions [M, 3] (h, w, l), location [M, 3] (bottom centre, rectified camera), rotation_y,
    score (1 when absent). DataFormatError naming the file and line on a malformed line: a wrong field
    count, a non-numeric or non-finite value, a class outside the devkit's (KITTI_TYPES), a real object's
    line out of the devkit's ranges (check_object_line) or repeated."""
    path = Path(path)
    rows, names, first = [], [], {}
    for number, line in numbered_lines(path):
        fields = line.split()
        if fields[0] != "DontCare" and first.setdefault(" ".join(fields), number) != number:
            raise DataFormatError(path, f"line {number}: the object of line {first[' '.join(fields)]} again (a "
                                        "duplicated label line)")
        if len(fields) not in (15, 16):
            raise DataFormatError(path, f"line {number}: expected 15 or 16 fields, got {len(fields)}")
        if fields[0] not in KITTI_TYPES:
            raise DataFormatError(path, f"line {number}: unknown class {fields[0][:40]!r} (KITTI classes: "
                                        f"{', '.join(KITTI_TYPES)})")
        try:
            values = [float(v) for v in fields[1:]] + ([1.0] if len(fields) == 15 else [])
        except ValueError:
            raise DataFormatError(path, f"line {number}: non-numeric value") from None
        if not np.isfinite(values).all():
            raise DataFormatError(path, f"line {number}: NaN or infinite value")
        if fields[0] != "DontCare":
            check_object_line(path, number, values)
        names.append(fields[0])
        rows.append(values)
    v = np.asarray(rows, np.float64).reshape(-1, 15)
    return {"name": np.asarray(names, dtype=str).reshape(-1), "truncated": v[:, 0],
            "occluded": v[:, 1].astype(np.int64),
            "alpha": v[:, 2], "bbox": v[:, 3:7], "dimensions": v[:, 7:10], "location": v[:, 10:13],
            "rotation_y": v[:, 13], "score": v[:, 14]}


def camera_boxes(annos: dict[str, np.ndarray]) -> np.ndarray:
    """float64 [M, 7] KITTI camera boxes: x, y, z (bottom centre), h, w, l, rotation_y."""
    return np.concatenate([annos["location"], annos["dimensions"], annos["rotation_y"][:, None]], 1)


def fov_mask(points: np.ndarray, calib: KittiCalib, image_shape: tuple[int, int]) -> np.ndarray:
    """bool [N]: points that project into image 2 in front of the camera (one fused float32 3 x 4 map,
    one pass over the points: `pc3d_ops.geometry.in_image`)."""
    m = (calib.P2 @ calib.velo_to_rect()).astype(np.float32)
    h, w = image_shape
    if not len(points):
        return np.zeros(0, bool)
    return _geometry.in_image(np.ascontiguousarray(points, np.float32), m, np.float32(calib.P2[2, 3]), w, h)


class KittiDataset(PointCloudDataset):
    """KITTI 3D object frames of an ImageSets split as samples of the batch contract.

    root: the folder holding training/, testing/ and ImageSets/. split: train, val, trainval or test.
    class_names: training classes (gt_labels = index + 1). fov_only: keep only points in the left
    colour camera's field of view (the labelled region; OpenPCDet's FOV_POINTS_ONLY).
    """

    feature_names = ("intensity",)

    def __init__(self, root: str | PathLike, split: str = "train", class_names=KITTI_CLASSES, fov_only: bool = True,
                 transforms=None, augmentations=None, voxelizer=None, point_cloud_range=None, voxel_size=None,
                 seed: int | None = None, skip_bad_frames: bool = False, training: bool | None = None):
        super().__init__(transforms, augmentations, voxelizer, point_cloud_range, voxel_size, seed, skip_bad_frames,
                         training)
        self.root = Path(root)
        self.split = split
        self.class_names = list(class_names)
        unknown = [n for n in self.class_names if n not in KITTI_TYPES]
        if unknown:
            raise ConfigError(f"class_names {unknown} are not KITTI classes ({', '.join(KITTI_TYPES)})")
        self.fov_only = fov_only
        self.base = self.root / ("testing" if split == "test" else "training")
        self.frames = read_ids(self.root / "ImageSets" / f"{split}.txt")
        self.has_labels = (self.base / "label_2").is_dir()
        self.has_images = (self.base / "image_2").is_dir()

    def path(self, kind: str, frame_id: str) -> Path:
        ext = {"velodyne": "bin", "label_2": "txt", "calib": "txt", "image_2": "png", "planes": "txt"}[kind]
        return self.base / kind / f"{frame_id}.{ext}"

    def image_shape(self, frame_id: str) -> tuple[int, int]:
        """(height, width) of the frame's image_2 PNG; IMAGE_SHAPE when the split has no image_2 folder
        (counted in ``notes``), a DataFormatError when the folder exists but this frame's PNG does not."""
        if not self.has_images:
            self.note(f"no image_2 folder, image size {IMAGE_SHAPE} assumed", self.base / "image_2")
            return IMAGE_SHAPE
        path = self.path("image_2", frame_id)
        shape = png_size(path)
        if shape is None:
            raise DataFormatError(path, "missing or not a PNG (its size sets the field of view and the difficulty)")
        return shape

    def load_annos(self, frame_id: str, calib: KittiCalib, image_shape) -> dict[str, np.ndarray]:
        """The frame's labels (parse_label) plus difficulty and gt_boxes_lidar float32 [M, 7] (zeros for DontCare)."""
        annos = parse_label(self.path("label_2", frame_id))
        annos["difficulty"] = kitti_difficulty(annos["bbox"][:, 3] - annos["bbox"][:, 1], annos["occluded"],
                                               annos["truncated"])
        annos["difficulty"][annos["name"] == "DontCare"] = -1
        boxes = np.zeros((len(annos["name"]), 7), np.float32)
        real = annos["name"] != "DontCare"
        if real.any():
            boxes[real] = boxes_camera_to_lidar(camera_boxes(annos)[real], calib)
        annos["gt_boxes_lidar"] = boxes
        return annos

    def annotations(self, index: int) -> dict:
        """The frame's evaluation ground truth without reading its points: ``{"annos", "calib", "image_shape"}``."""
        frame_id = self.frames[index]
        calib = KittiCalib.from_file(self.path("calib", frame_id))
        image_shape = self.image_shape(frame_id)
        return {"annos": self.load_annos(frame_id, calib, image_shape), "calib": calib, "image_shape": image_shape}

    def write_predictions(self, predictions: list[dict], out_dir) -> Path:
        """`tools/test.py` hook: the submission format, ``<out_dir>/data/<frame>.txt`` (label_2 lines with a score
        column; the devkit's evaluate_object reads ``results/<name>/data/``, OpenPCDet writes ``final_result/data``),
        one file per frame, empty where nothing was detected (camera frame through each frame's calibration; boxes
        that leave the image are dropped)."""
        from pc3d.eval.kitti_io import to_kitti_anno, write_kitti_label

        if len(predictions) != len(self.frames):
            raise DataFormatError(self.root, f"{len(predictions)} predictions for {len(self.frames)} frames")
        out = Path(out_dir) / "data"
        out.mkdir(parents=True, exist_ok=True)
        for frame_id, pred in zip(self.frames, predictions, strict=True):
            if str(pred.get("frame_id", frame_id)) != frame_id:
                raise DataFormatError(self.root, f"prediction for {pred['frame_id']} where {frame_id} was expected")
            calib = KittiCalib.from_file(self.path("calib", frame_id))
            image_shape = self.image_shape(frame_id)
            write_kitti_label(out / f"{frame_id}.txt", to_kitti_anno(pred, calib, image_shape, self.class_names))
        return out

    def load(self, index: int) -> dict:
        frame_id = self.frames[index]
        velodyne = self.path("velodyne", frame_id)
        points = read_bin(velodyne, 4)
        calib = KittiCalib.from_file(self.path("calib", frame_id))
        image_shape = self.image_shape(frame_id)
        annos = self.load_annos(frame_id, calib, image_shape) if self.has_labels else None
        if self.fov_only:
            points = points[fov_mask(points, calib, image_shape)]
        if not len(points):
            where = "in the camera's field of view" if self.fov_only else "at all"
            objects = 0 if annos is None else int((annos["name"] != "DontCare").sum())
            if objects:
                raise DataFormatError(velodyne, f"no points {where}, but label_2/{frame_id}.txt labels "
                                                f"{objects} objects")
            self.note("empty scans (0 points)", velodyne)
        sample = {"frame_id": frame_id, "points": points,
                  "metadata": {"calib": calib, "image_shape": image_shape, "source": str(velodyne)}}
        if annos is not None:
            train = np.isin(annos["name"], self.class_names)
            sample["gt_boxes"] = annos["gt_boxes_lidar"][train]
            sample["gt_labels"] = np.asarray([self.class_names.index(n) + 1 for n in annos["name"][train]], np.int64)
            sample["other_boxes"] = annos["gt_boxes_lidar"][~train & (annos["name"] != "DontCare")]
            sample["metadata"]["annos"] = annos
        return sample
