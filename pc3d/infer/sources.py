"""Inference inputs: one reader per kind of source, each yielding the frames of a sequence in order.

    open_source(path, features) -> a Source: source.items (in sequence order), source.read(item) -> SourceFrame,
                                   source.kind

kinds: ``file`` (one .bin / .npy / .npz / .pcd / .ply cloud); ``folder`` (a folder of such files, one
frame each, in natural name order, 2 before 10: a sequence named after the folder); ``kitti`` (a KITTI object root:
training/velodyne, calib, ImageSets/<split>.txt); ``semantickitti`` (one SemanticKITTI sequence folder
holding velodyne/); ``waymo`` (a Waymo v2 segment: its ``<root>/<split>/lidar/<segment>.parquet``, or a
split folder: every segment); ``scannet`` (one ScanNet scene folder scans/<scene>). Frames carry the points
in pc3d's frame for their dataset; the model's transforms and voxelizer do the rest.

Columns. ``features`` names the columns a model reads after x, y, z (its dataset's ``feature_names``, e.g.
``("intensity",)``); every frame comes out float32 [N, 3 + len(features)]. Formats that name their columns
(.pcd fields, .ply vertex properties, KITTI / SemanticKITTI ``intensity``, Waymo, ScanNet ``r, g, b``) are
matched by name; unnamed arrays (.bin, .npy, .npz) must have exactly the model's columns (a .bin is read as
rows of that many float32). A ``time`` column a single scan lacks is 0 (the current scan's offset). Any
other missing or extra column is a DataFormatError unless ``pad=True`` (missing ones 0, extra ones
dropped: tools/infer.py --pad-features).

Bad input. A file that cannot be read as a cloud (empty, truncated, wrong dtype or shape, corrupt header)
raises a DataFormatError naming it. Rows with NaN / inf are dropped and counted: the frame says how many
(``extra["dropped"]``) and which rows it kept (``extra["kept"]``, so per-point outputs cover every row of
the file); a frame left with no finite row is a DataFormatError. A KITTI frame without its calibration
file is a DataFormatError (its boxes would be written through a wrong calibration).
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pc3d.errors import ConfigError, DataFormatError
from pc3d.infer.point_files import POINT_EXTS, Cloud, as_float_rows, finite_rows, fit_columns, read_cloud


@dataclass
class SourceFrame:
    """One frame: frame_id (unique in the source, a relative path for its output files: "<folder>/<stem>" for
    a folder, "SS/NNNNNN" for SemanticKITTI, "<segment>/<ts>" for Waymo, the stem or scene otherwise),
    sequence (frames of one sequence share it: stateful models reset between sequences), points float32
    [N, 3 + features] (finite rows), calib (KittiCalib or None), source (the file read), extra
    (reader-specific; "dropped": rows with NaN / inf left out, "kept": bool mask of the file's rows used)."""

    frame_id: str
    sequence: str
    points: np.ndarray
    source: Path
    calib: Any = None
    extra: dict = field(default_factory=dict)


def _frame_cloud(cloud: Cloud, features: Sequence[str], path: Path, pad: bool) -> tuple[np.ndarray, dict]:
    """(points [N, 3 + features], extra) of a cloud: the drop count and the kept mask when rows were dropped."""
    extra = {"dropped": cloud.dropped, "kept": cloud.kept} if cloud.dropped else {}
    return fit_columns(cloud.points, features, path, cloud.names, pad), extra


def _velodyne(path: Path, features: Sequence[str], pad: bool) -> tuple[np.ndarray, dict]:
    """A KITTI / SemanticKITTI velodyne scan (float32 x, y, z, intensity rows): points and extras."""
    if not path.is_file():
        raise DataFormatError(path, "file does not exist")
    size = path.stat().st_size
    if size % 16:
        raise DataFormatError(path, f"size {size} bytes is not a multiple of 16 (4 float32 per point: x, y, z, "
                                    "intensity): truncated or not a point file")
    cloud = finite_rows(np.fromfile(path, dtype="<f4").reshape(-1, 4), path, ("intensity",))
    return _frame_cloud(cloud, features, path, pad)


class Source:
    """A sequence of frames; subclasses set kind and implement _items() and read(item).

    features: the model's feature columns after x, y, z; pad: fill missing columns with 0 and drop extra ones
    instead of refusing the frame; loader: the run's dataset options that decide how a frame is read (Waymo:
    returns, drop_no_label_zone; ScanNet: align), so that the model sees what it was trained on. `note` (may be
    empty) says how the frames were chosen.
    """

    kind = "source"

    def __init__(self, path: Path, features: Sequence[str] = ("intensity",), pad: bool = False,
                 loader: Mapping | None = None):
        self.path, self.features, self.pad = path, tuple(features), pad
        self.loader = dict(loader or {})
        self.note = ""
        self.items = self._items()
        if not self.items:
            raise DataFormatError(path, f"no frames found ({self.kind})")

    @property
    def columns(self) -> int:
        return 3 + len(self.features)

    def _items(self) -> list:
        raise NotImplementedError

    def read(self, item) -> SourceFrame:
        raise NotImplementedError

    def ground_truth_boxes(self, frame: SourceFrame) -> np.ndarray | None:
        """LiDAR-frame boxes [M, 7] of the frame's labels, for drawing; None where the source has none."""
        return None

    def __len__(self) -> int:
        return len(self.items)


def natural_key(path: Path) -> tuple:
    """Sort key of a file name with its digit runs compared as numbers: 2.bin before 10.bin."""
    return tuple((0, int(part), part) if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", path.name))


class PointFiles(Source):
    """One point file, or every point file of a folder (one frame each, in natural name order: scan_2 before
    scan_10, as a sequence's scans follow each other, whether or not their numbers are zero-padded)."""

    kind = "folder"

    def _items(self) -> list[Path]:
        if self.path.is_file():
            if self.path.suffix.lower() not in POINT_EXTS:
                raise DataFormatError(self.path, f"unsupported point file type {self.path.suffix or '(none)'!r}; "
                                                 f"use one of {', '.join(POINT_EXTS)}")
            self.kind = "file"
            return [self.path]
        # a FIFO or a broken link named like a point file is listed: reading it is refused (without opening it)
        return sorted((p for p in self.path.iterdir() if p.suffix.lower() in POINT_EXTS and not p.is_dir()),
                      key=natural_key)

    def read(self, item: Path) -> SourceFrame:
        frame_id = item.stem if self.kind == "file" else f"{item.parent.name}/{item.stem}"
        points, extra = _frame_cloud(read_cloud(item, self.features, self.pad), self.features, item, self.pad)
        return SourceFrame(frame_id, item.parent.name, points, item, extra=extra)


class KittiObject(Source):
    """A KITTI object root: <base>/velodyne/<id>.bin with calib/<id>.txt, frames of ImageSets/<split>.txt
    (every velodyne scan when that file is absent: `note` says so); <base> is testing/ for the split "test",
    training/ otherwise, as KittiDataset reads it. A frame without its calib file is a DataFormatError: its boxes
    cannot be written in the camera frame. extra["image_shape"]: (height, width) of its image_2 PNG, which bounds
    the camera crop and the label files' 2D boxes as in KittiDataset (KITTI's usual size without image_2/)."""

    kind = "kitti"

    def __init__(self, path: Path, features: Sequence[str] = ("intensity",), pad: bool = False, split: str = "val"):
        self.split = split
        self.base = Path(path) / ("testing" if split == "test" else "training")
        super().__init__(path, features, pad)

    def _items(self) -> list[str]:
        from pc3d.data.io import read_ids

        ids_file = self.path / "ImageSets" / f"{self.split}.txt"
        if ids_file.parent.is_dir() and not ids_file.is_file():
            splits = sorted(p.stem for p in ids_file.parent.glob("*.txt"))
            raise DataFormatError(ids_file, f"no such split list (--split {self.split}); this root lists {splits}")
        if not ids_file.is_file():
            self.note = f"{ids_file} does not exist: every scan of {self.base.name}/velodyne"
            return sorted(p.stem for p in (self.base / "velodyne").glob("*.bin"))
        return read_ids(ids_file)  # a frame listed twice, or no frame, is a DataFormatError naming the file

    def read(self, item: str) -> SourceFrame:
        from pc3d.data.io import png_size
        from pc3d.data.kitti import IMAGE_SHAPE
        from pc3d.geometry import KittiCalib

        velodyne = self.base / "velodyne" / f"{item}.bin"
        calib = self.base / "calib" / f"{item}.txt"
        label = self.base / "label_2" / f"{item}.txt"
        points, extra = _velodyne(velodyne, self.features, self.pad)
        if not calib.is_file():
            raise DataFormatError(calib, "calibration file missing (frame " + item + "): its boxes need the "
                                         "LiDAR -> camera calibration")
        image = self.base / "image_2" / f"{item}.png"
        extra["image_shape"] = png_size(image) if image.parent.is_dir() else IMAGE_SHAPE
        if extra["image_shape"] is None:
            raise DataFormatError(image, "missing or not a PNG (its size bounds the camera crop the model saw)")
        if label.is_file():
            extra["label_2"] = label
        return SourceFrame(item, "kitti", points, velodyne, KittiCalib.from_file(calib), extra)

    def ground_truth_boxes(self, frame: SourceFrame) -> np.ndarray | None:
        """label_2's objects (DontCare left out) moved into the LiDAR frame by the frame's calibration."""
        label = frame.extra.get("label_2")
        if label is None or frame.calib is None:
            return None
        from pc3d.data.kitti import camera_boxes, parse_label
        from pc3d.geometry import boxes_camera_to_lidar

        annos = parse_label(label)
        real = annos["name"] != "DontCare"
        if not real.any():
            return np.zeros((0, 7), np.float32)
        return np.asarray(boxes_camera_to_lidar(camera_boxes(annos)[real], frame.calib), np.float32)


class SemanticKittiSequence(Source):
    """sequences/SS: velodyne/NNNNNN.bin in order; frame ids "SS/NNNNNN" (the submission layout). With
    ``with_poses`` set (tools/infer.py sets it for 4D MOS streaming), frames carry extra["pose"] (the LiDAR
    pose, pc3d.data.semantickitti.lidar_poses of poses.txt and calib.txt, read on first use) and
    extra["scan"] (the scan number); a scan with a ground-truth labels/NNNNNN.label has extra["labels"], its path."""

    kind = "semantickitti"
    with_poses = False

    def _items(self) -> list[Path]:
        self._poses = None
        return sorted((self.path / "velodyne").glob("*.bin"))

    def poses(self) -> np.ndarray:
        """float64 [L, 4, 4] LiDAR poses of the sequence (DataFormatError naming poses.txt or calib.txt)."""
        if self._poses is None:
            from pc3d.data.semantickitti import lidar_poses

            self._poses = lidar_poses(self.path / "poses.txt", self.path / "calib.txt")
        return self._poses

    def read(self, item: Path) -> SourceFrame:
        seq = self.path.name
        points, extra = _velodyne(item, self.features, self.pad)
        if self.with_poses:
            poses = self.poses()
            if not item.stem.isdigit():
                raise DataFormatError(item, "scan name is not a scan number (NNNNNN.bin): no pose")
            scan = int(item.stem)
            if scan >= len(poses):
                raise DataFormatError(self.path / "poses.txt", f"{len(poses)} poses, no pose for scan {item.stem}")
            extra.update(pose=poses[scan], scan=scan)
        label = self.path / "labels" / f"{item.stem}.label"
        if label.is_file():  # ground truth, for tools/visualize.py --labels truth / errors
            extra["labels"] = label
        return SourceFrame(f"{seq}/{item.stem}", seq, points, item, extra=extra)


class WaymoSegments(Source):
    """Waymo v2: <root>/<split>/lidar/<segment>.parquet (one segment) or <root>/<split> (every segment);
    frames in timestamp order, read by pc3d.data.WaymoDataset (vehicle frame, both returns). With
    ``with_poses`` set (tools/infer.py sets it for a model trained on past sweeps), frames carry extra["pose"]
    (world_from_vehicle of the segment's vehicle_pose) and extra["scan"] (the frame's number in its segment)."""

    kind = "waymo"
    with_poses = False
    lasers: tuple[int, ...] | None = None  # set by tools/infer.py from the model's dataset class (Waymo segmentation:
    # the TOP laser): only those lasers' points, each with its range-image pixel in extra["range_pixels"]

    def _items(self) -> list[int]:
        from pc3d.data.waymo import WaymoDataset

        split_dir = self.path.parent.parent if self.path.is_file() else self.path
        options = {k: self.loader[k] for k in ("returns", "drop_no_label_zone") if k in self.loader}
        self.dataset = WaymoDataset(split_dir.parent, split_dir.name, labels=False, **options)  # boxes are not read
        self._labelled = None  # the same segments with their boxes, made by ground_truth_boxes on first use
        self._first: dict[str, int] = {}  # segment -> index of its first frame
        wanted = self.path.stem if self.path.is_file() else None
        return [i for i, (segment, _, _) in enumerate(self.dataset.frames) if wanted in (None, segment)]

    def read(self, item: int) -> SourceFrame:
        if self.lasers is not None:
            return self._read_lasers(item)
        sample = self.dataset.load(item)
        meta = sample["metadata"]
        source = Path(meta["source"])
        cloud = finite_rows(as_float_rows(sample["points"], source), source, tuple(self.dataset.feature_names))
        points, extra = _frame_cloud(cloud, self.features, source, self.pad)
        extra.update(segment=meta["segment"], timestamp=meta["timestamp"])
        if self.with_poses:  # the scan number: the frame's place in its segment (frames list segments in turn)
            first = self._first.setdefault(meta["segment"], next(
                i for i, f in enumerate(self.dataset.frames) if f[0] == meta["segment"]))
            extra.update(pose=self.dataset.vehicle_pose(meta["segment"], meta["timestamp"]), scan=item - first)
        return SourceFrame(sample["frame_id"], meta["segment"], points, source, extra=extra)

    def _read_lasers(self, item: int) -> SourceFrame:
        """The frame's points of `lasers` only (outside no-label zones, in read_returns' order), and
        extra["range_pixels"] = {(laser, return): (pixels [K, 2] of those points in order, (H, W) of the TOP laser's
        range image, None for another laser's: a SegmentationFrameList holds TOP's alone)}."""
        if self.with_poses:
            raise ConfigError("a model of some lasers' points (Waymo segmentation) does not stream past sweeps")
        segment, timestamp, group = self.dataset.frames[item]
        source = self.dataset.component("lidar", segment)
        clouds, range_pixels = [], {}
        for laser, ret, cloud, pixels in self.dataset.read_returns(segment, timestamp, group):
            if laser in self.lasers:
                keep = cloud[:, 5] <= 0 if self.dataset.drop_no_label_zone else np.ones(len(cloud), bool)
                clouds.append(cloud[keep, :5])
                shape = self.dataset.range_image_shape(segment, timestamp, group, laser, ret) if laser == 1 else None
                range_pixels[(laser, ret)] = (pixels[keep], shape)
        cloud = np.concatenate(clouds) if clouds else np.zeros((0, 5), np.float32)
        points, extra = _frame_cloud(finite_rows(cloud, source, tuple(self.dataset.feature_names)), self.features,
                                     source, self.pad)
        if extra:
            raise DataFormatError(source, f"frame {timestamp}: non-finite points in the range images")
        extra.update(segment=segment, timestamp=timestamp, range_pixels=range_pixels)
        return SourceFrame(f"{segment}/{timestamp}", segment, points, source, extra=extra)

    def ground_truth_boxes(self, frame: SourceFrame) -> np.ndarray | None:
        """The segment's lidar_box boxes of the frame (vehicle frame, every type), when the segment has them."""
        from pc3d.data.waymo import WaymoDataset

        segment = frame.extra["segment"]
        if not self.dataset.component("lidar_box", segment).is_file():
            return None
        if self._labelled is None:
            read = self.dataset
            self._labelled = WaymoDataset(read.root, read.split, labels=True, returns=read.returns,
                                          drop_no_label_zone=read.drop_no_label_zone)
        return self._labelled.read_boxes(segment, frame.extra["timestamp"])["box"][:, :7]


class ScanNetScene(Source):
    """scans/<scene>: the <scene>_vh_clean_2.ply mesh vertices (x, y, z, r, g, b in 0..1), axis-aligned
    with <scene>.txt when present (unless the run's loader says align: false); one frame, id <scene>;
    extra["labels"]: the scene's labels .ply when present."""

    kind = "scannet"

    def _items(self) -> list[Path]:
        return [self.path / f"{self.path.name}_vh_clean_2.ply"]

    def read(self, item: Path) -> SourceFrame:
        from pc3d.data.scannet import read_scene

        align = None if self.loader.get("align", True) else np.eye(4)
        cloud = finite_rows(as_float_rows(read_scene(self.path, align), item), item, ("r", "g", "b"))
        points, extra = _frame_cloud(cloud, self.features, item, self.pad)
        labels = self.path / f"{self.path.name}_vh_clean_2.labels.ply"
        if labels.is_file():  # ground truth, for tools/visualize.py --labels truth / errors
            extra["labels"] = labels
        return SourceFrame(self.path.name, self.path.name, points, item, extra=extra)

    def ground_truth_boxes(self, frame: SourceFrame) -> np.ndarray | None:
        """The detection benchmark's axis-aligned boxes of the scene's instances (pc3d.data.indoor_boxes), when
        the scene has its labels and instance files; in the aligned frame the points are in."""
        from pc3d.data.indoor_boxes import instance_boxes
        from pc3d.data.scannet import ScanNetDataset, instance_ids

        scene = self.path.name
        needed = [frame.extra.get("labels"), self.path / f"{scene}_vh_clean_2.0.010000.segs.json",
                  self.path / f"{scene}.aggregation.json"]
        if not all(p is not None and Path(p).is_file() for p in needed):
            return None
        kept = frame.extra.get("kept")
        rows = len(frame.points) if kept is None else len(kept)
        labels = ScanNetDataset.label_space().read(needed[0], rows)
        instances = instance_ids(self.path, scene, rows)
        if kept is not None:
            labels, instances = labels[kept], instances[kept]
        return instance_boxes(frame.points, labels, instances, frame=scene)[0]


def open_source(path: str | Path, features: Sequence[str] = ("intensity",), split: str = "val",
                pad: bool = False, loader: Mapping | None = None) -> Source:
    """The reader of `path` (see the module docstring); DataFormatError naming it when none fits.

    features: the model's feature columns after x, y, z; split: the ImageSets split of a KITTI root;
    pad: fill missing columns with 0 and drop extra ones instead of refusing a frame; loader: the run's dataset
    config, whose reading options the source follows (Source)."""
    path = Path(path)
    if not path.exists():
        raise DataFormatError(path, "no such file or folder")
    if path.is_file():
        if path.suffix.lower() == ".parquet" and path.parent.name == "lidar":
            return WaymoSegments(path, features, pad, loader)
        return PointFiles(path, features, pad)
    if not path.is_dir():
        raise DataFormatError(path, "neither a regular file nor a folder (a FIFO, socket or device?)")
    if (path / "training" / "velodyne").is_dir() or (path / "testing" / "velodyne").is_dir():
        return KittiObject(path, features, pad, split)
    if (path / "velodyne").is_dir():
        return SemanticKittiSequence(path, features, pad)
    if (path / "sequences").is_dir():
        raise DataFormatError(path, "a SemanticKITTI root: pass one sequence folder, e.g. sequences/08")
    if (path / "lidar").is_dir() and any((path / "lidar").glob("*.parquet")):
        return WaymoSegments(path, features, pad, loader)
    splits = [s for s in ("training", "validation", "testing") if any((path / s / "lidar").glob("*.parquet"))]
    if splits:
        raise DataFormatError(path, f"a Waymo v2 root: pass a split folder ({path / splits[0]}) or one segment's "
                                    f"lidar/<segment>.parquet")
    if (path / f"{path.name}_vh_clean_2.ply").is_file():
        return ScanNetScene(path, features, pad, loader)
    scenes = sorted(path.glob("scans/*/*_vh_clean_2.ply"))
    if scenes:
        raise DataFormatError(path, f"a ScanNet root: pass one scene folder, e.g. {scenes[0].parent}")
    if not any(p.suffix.lower() in POINT_EXTS for p in path.iterdir()):
        raise DataFormatError(path, f"no frames: no point files ({', '.join(POINT_EXTS)}), KITTI, SemanticKITTI, "
                                    "Waymo v2 or ScanNet layout in this folder")
    return PointFiles(path, features, pad)
