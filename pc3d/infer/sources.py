"""Inference inputs: one reader per kind of source, each yielding the frames of a sequence in order.

    open_source(path) -> a Source: source.items (in sequence order), source.read(item) -> SourceFrame, source.kind

kinds: ``file`` (one .bin / .npy / .npz / .pcd / .ply cloud); ``folder`` (a folder of such files, one
frame each, in name order: a sequence named after the folder); ``kitti`` (a KITTI object root:
training/velodyne, calib, ImageSets/<split>.txt); ``semantickitti`` (one SemanticKITTI sequence folder
holding velodyne/); ``waymo`` (a Waymo v2 segment: its ``<root>/<split>/lidar/<segment>.parquet``, or a
split folder: every segment); ``scannet`` (one ScanNet scene folder scans/<scene>). Frames carry the points
in pc3d's frame for their dataset; the model's transforms and voxelizer do the rest. Every bad input
raises a DataFormatError naming the file or folder.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pc3d.errors import DataFormatError

POINT_EXTS = (".bin", ".npy", ".npz", ".pcd", ".ply")


@dataclass
class SourceFrame:
    """One frame: frame_id (unique in the source, a relative path for its output files: "<folder>/<stem>" for
    a folder, "SS/NNNNNN" for SemanticKITTI, "<segment>/<ts>" for Waymo, the stem or scene otherwise),
    sequence (frames of one sequence share it: stateful models reset between sequences), points float32
    [N, >= 3] as read, calib (KittiCalib or None), source (the file read), extra (reader-specific)."""

    frame_id: str
    sequence: str
    points: np.ndarray
    source: Path
    calib: Any = None
    extra: dict = field(default_factory=dict)


def _finite(points: np.ndarray, path: Path) -> np.ndarray:
    """Rows with NaN / inf dropped with a warning; DataFormatError when nothing usable is left."""
    if points.size == 0:
        raise DataFormatError(path, "the cloud is empty (0 points)")
    if points.ndim != 2 or points.shape[1] < 3:
        raise DataFormatError(path, f"points need x, y, z columns, got an array of shape {points.shape}")
    good = np.isfinite(points).all(1)
    if not good.any():
        raise DataFormatError(path, f"all {len(points)} points are NaN / inf")
    if not good.all():
        warnings.warn(f"{path}: dropped {int((~good).sum())} of {len(points)} points with NaN / inf", stacklevel=3)
        points = points[good]
    return points


def fit_columns(points: np.ndarray, columns: int) -> np.ndarray:
    """float32 [N, columns]: x, y, z and the features a model reads (missing ones zero, extra ones dropped)."""
    out = np.zeros((len(points), columns), np.float32)
    out[:, :min(columns, points.shape[1])] = points[:, :columns]
    return out


def read_point_file(path: Path, columns: int) -> np.ndarray:
    """float32 [N, columns] of a point file: x, y, z, then features (missing ones zero, extra ones dropped).

    .bin: raw float32 rows of `columns` values (else of 4: KITTI's x, y, z, intensity); .npy / .npz: an
    [N, >= 3] array (the first array of an .npz); .pcd / .ply: Open3D's reader (colours, when present, become
    columns 3..5 in 0..1).
    """
    from pc3d.data.io import load_npy, read_bin

    ext = path.suffix.lower()
    if ext not in POINT_EXTS:
        raise DataFormatError(path, f"unsupported point file type {ext or '(none)'!r}; use one of "
                                    f"{', '.join(POINT_EXTS)}")
    if not path.is_file():
        raise DataFormatError(path, "file does not exist")
    if ext == ".bin":
        size = path.stat().st_size
        pts = read_bin(path, columns if size % (4 * columns) == 0 and size else 4)
    elif ext == ".npy":
        pts = load_npy(path)
    elif ext == ".npz":
        try:
            with np.load(path, allow_pickle=False) as data:
                if not data.files:
                    raise DataFormatError(path, "the .npz file holds no array")
                pts = data[data.files[0]]
        except (ValueError, OSError) as exc:
            raise DataFormatError(path, f"not a readable .npz file ({exc})") from None
    else:
        pts = _read_open3d(path)
    pts = _finite(np.asarray(pts, np.float32), path)
    return fit_columns(pts, columns)


def _read_open3d(path: Path) -> np.ndarray:
    import open3d as o3d

    cloud = o3d.io.read_point_cloud(str(path))
    xyz = np.asarray(cloud.points, np.float32)
    if cloud.has_colors():
        return np.concatenate([xyz, np.asarray(cloud.colors, np.float32)], 1)
    return xyz


class Source:
    """A sequence of frames; subclasses set kind and implement _items() and read(item)."""

    kind = "source"

    def __init__(self, path: Path, columns: int):
        self.path, self.columns = path, columns
        self.items = self._items()
        if not self.items:
            raise DataFormatError(path, f"no frames found ({self.kind})")

    def _items(self) -> list:
        raise NotImplementedError

    def read(self, item) -> SourceFrame:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.items)


class PointFiles(Source):
    """One point file, or every point file of a folder (one frame each, name order)."""

    kind = "folder"

    def _items(self) -> list[Path]:
        if self.path.is_file():
            if self.path.suffix.lower() not in POINT_EXTS:
                raise DataFormatError(self.path, f"unsupported point file type {self.path.suffix or '(none)'!r}; "
                                                 f"use one of {', '.join(POINT_EXTS)}")
            self.kind = "file"
            return [self.path]
        return sorted(p for p in self.path.iterdir() if p.is_file() and p.suffix.lower() in POINT_EXTS)

    def read(self, item: Path) -> SourceFrame:
        frame_id = item.stem if self.kind == "file" else f"{item.parent.name}/{item.stem}"
        return SourceFrame(frame_id, item.parent.name, read_point_file(item, self.columns), item)


class KittiObject(Source):
    """A KITTI object root: training/velodyne/<id>.bin with calib/<id>.txt, frames of ImageSets/<split>.txt."""

    kind = "kitti"

    def __init__(self, path: Path, columns: int, split: str = "val"):
        self.split = split
        super().__init__(path, columns)

    def _items(self) -> list[str]:
        from pc3d.data.io import read_lines

        ids_file = self.path / "ImageSets" / f"{self.split}.txt"
        velodyne = self.path / "training" / "velodyne"
        return read_lines(ids_file) if ids_file.is_file() else sorted(p.stem for p in velodyne.glob("*.bin"))

    def read(self, item: str) -> SourceFrame:
        from pc3d.geometry import KittiCalib

        velodyne = self.path / "training" / "velodyne" / f"{item}.bin"
        calib = self.path / "training" / "calib" / f"{item}.txt"
        label = self.path / "training" / "label_2" / f"{item}.txt"
        return SourceFrame(item, "kitti", read_point_file(velodyne, self.columns), velodyne,
                           KittiCalib.from_file(calib) if calib.is_file() else None,
                           {"label_2": label} if label.is_file() else {})


class SemanticKittiSequence(Source):
    """sequences/SS: velodyne/NNNNNN.bin in order; frame ids "SS/NNNNNN" (the submission layout)."""

    kind = "semantickitti"

    def _items(self) -> list[Path]:
        return sorted((self.path / "velodyne").glob("*.bin"))

    def read(self, item: Path) -> SourceFrame:
        from pc3d.data.io import read_bin

        seq = self.path.name
        return SourceFrame(f"{seq}/{item.stem}", seq, fit_columns(_finite(read_bin(item, 4), item), self.columns), item)


class WaymoSegments(Source):
    """Waymo v2: <root>/<split>/lidar/<segment>.parquet (one segment) or <root>/<split> (every segment);
    frames in timestamp order, read by pc3d.data.WaymoDataset (vehicle frame, both returns)."""

    kind = "waymo"

    def _items(self) -> list[int]:
        from pc3d.data.waymo import WaymoDataset

        split_dir = self.path.parent.parent if self.path.is_file() else self.path
        self.dataset = WaymoDataset(split_dir.parent, split_dir.name)
        wanted = self.path.stem if self.path.is_file() else None
        return [i for i, (segment, _, _) in enumerate(self.dataset.frames) if wanted in (None, segment)]

    def read(self, item: int) -> SourceFrame:
        sample = self.dataset.load(item)
        meta = sample["metadata"]
        points = _finite(sample["points"], Path(meta["source"]))
        return SourceFrame(sample["frame_id"], meta["segment"], fit_columns(points, self.columns), Path(meta["source"]),
                           extra={"segment": meta["segment"], "timestamp": meta["timestamp"]})


class ScanNetScene(Source):
    """scans/<scene>: the <scene>_vh_clean_2.ply mesh vertices (x, y, z, r, g, b in 0..1), axis-aligned
    with <scene>.txt when present; one frame, id <scene>."""

    kind = "scannet"

    def _items(self) -> list[Path]:
        return [self.path / f"{self.path.name}_vh_clean_2.ply"]

    def read(self, item: Path) -> SourceFrame:
        from pc3d.data.scannet import read_scene

        points = _finite(read_scene(self.path), item)
        return SourceFrame(self.path.name, self.path.name, fit_columns(points, self.columns), item)


def open_source(path: str | Path, columns: int, split: str = "val") -> Source:
    """The reader of `path` (see the module docstring); DataFormatError naming it when none fits."""
    path = Path(path)
    if not path.exists():
        raise DataFormatError(path, "no such file or folder")
    if path.is_file():
        if path.suffix.lower() == ".parquet" and path.parent.name == "lidar":
            return WaymoSegments(path, columns)
        return PointFiles(path, columns)
    if (path / "training" / "velodyne").is_dir():
        return KittiObject(path, columns, split)
    if (path / "velodyne").is_dir():
        return SemanticKittiSequence(path, columns)
    if (path / "sequences").is_dir():
        raise DataFormatError(path, "a SemanticKITTI root: pass one sequence folder, e.g. sequences/08")
    if (path / "lidar").is_dir() and any((path / "lidar").glob("*.parquet")):
        return WaymoSegments(path, columns)
    if (path / f"{path.name}_vh_clean_2.ply").is_file():
        return ScanNetScene(path, columns)
    if not any(p.suffix.lower() in POINT_EXTS for p in path.iterdir() if p.is_file()):
        raise DataFormatError(path, f"no frames: no point files ({', '.join(POINT_EXTS)}), KITTI, SemanticKITTI, "
                                    "Waymo v2 or ScanNet layout in this folder")
    return PointFiles(path, columns)
