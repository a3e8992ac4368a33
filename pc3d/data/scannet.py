"""ScanNet v2 (indoor semantic segmentation), read from the official scans/ layout:

    scans/<scene>/<scene>_vh_clean_2.ply                  vertices x, y, z, red, green, blue -> points [N, 6]
    scans/<scene>/<scene>_vh_clean_2.labels.ply           per-vertex NYU40 `label`           -> point_labels
    scans/<scene>/<scene>_vh_clean_2.0.010000.segs.json   + <scene>.aggregation.json         -> instance_ids
    scans/<scene>/<scene>.txt                             axisAlignment (row-major 4 x 4)
    scannetv2_{train,val,test}.txt

Points are axis-aligned (pc3d's frame for ScanNet: z up, metres), colours scaled to 0..1. Labels are
the 20 benchmark classes 0..19 (NYU40 ids 1 2 3 4 5 6 7 8 9 10 11 12 14 16 24 28 33 34 36 39);
every other id is ``ignore_index`` = -1, as in Pointcept and mmdetection3d.
"""
from __future__ import annotations

import json
from os import PathLike
from pathlib import Path

import numpy as np

from pc3d.errors import DataFormatError

from .dataset import PointCloudDataset
from .io import check_finite, read_lines

SCANNET20_IDS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39)
SCANNET20_CLASSES = ("wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
                     "picture", "counter", "desk", "curtain", "refrigerator", "shower curtain", "toilet", "sink",
                     "bathtub", "otherfurniture")


def nyu40_to_scannet20(labels: np.ndarray) -> np.ndarray:
    """int64 [N]: benchmark class 0..19 of NYU40 ids, -1 for every other id."""
    lut = np.full(65536, -1, np.int64)
    lut[list(SCANNET20_IDS)] = np.arange(len(SCANNET20_IDS))
    return lut[np.asarray(labels, np.int64) & 0xFFFF]


def read_ply_vertices(path: str | PathLike, fields: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The named vertex properties of a ply file; DataFormatError naming the file when unreadable or missing one."""
    from plyfile import PlyData

    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, "file does not exist")
    try:
        ply = PlyData.read(str(path))
        vertex = ply["vertex"]
        names = [p.name for p in vertex.properties]
        missing = [f for f in fields if f not in names]
        if missing:
            raise DataFormatError(path, f"vertex element lacks {missing} (has {names})")
        return {f: np.asarray(vertex[f]) for f in fields}
    except DataFormatError:
        raise
    except Exception as error:  # plyfile raises PlyParseError, ValueError, KeyError, EOFError ... on bad bytes
        raise DataFormatError(path, f"not a readable ply mesh ({type(error).__name__}: {error})") from None


def axis_alignment(path: str | PathLike) -> np.ndarray:
    """float64 [4, 4] of the scene's axisAlignment line (identity when the file has none, as for test scans)."""
    for line in read_lines(path):
        key, _, value = line.partition("=")
        if key.strip() == "axisAlignment":
            try:
                m = np.array(value.split(), np.float64)
            except ValueError:
                raise DataFormatError(path, "axisAlignment must be 16 numbers") from None
            if m.shape != (16,) or not np.isfinite(m).all():
                raise DataFormatError(path, f"axisAlignment must be 16 finite numbers, got {m.size}")
            return m.reshape(4, 4)
    return np.eye(4)


def instance_ids(folder: Path, scene: str, n: int) -> np.ndarray:
    """int64 [n]: 1 + objectId of each vertex's aggregation group, 0 where none."""
    segs_path = folder / f"{scene}_vh_clean_2.0.010000.segs.json"
    agg_path = folder / f"{scene}.aggregation.json"
    try:
        seg = np.asarray(json.loads(segs_path.read_text())["segIndices"], np.int64)
        groups = json.loads(agg_path.read_text())["segGroups"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DataFormatError(folder, f"bad {segs_path.name} / {agg_path.name} ({error})") from None
    if seg.shape != (n,):
        raise DataFormatError(segs_path, f"{len(seg)} segment indices for {n} vertices")
    out = np.zeros(n, np.int64)
    for group in groups:
        out[np.isin(seg, group["segments"])] = int(group.get("objectId", group.get("id", 0))) + 1
    return out


class ScanNetDataset(PointCloudDataset):
    """ScanNet v2 scenes of a split as segmentation samples: points [N, 6] (x, y, z, r, g, b),
    point_labels (20 classes, -1 ignored) and, with instances=True, instance_ids."""

    feature_names = ("r", "g", "b")
    class_names = SCANNET20_CLASSES
    ignore_index = -1

    def __init__(self, root: str | PathLike, split: str = "train", align: bool = True, instances: bool = False,
                 transforms=None, augmentations=None, voxelizer=None, point_cloud_range=None, voxel_size=None,
                 seed: int | None = None, skip_bad_frames: bool = False, training: bool | None = None):
        super().__init__(transforms, augmentations, voxelizer, point_cloud_range, voxel_size, seed, skip_bad_frames,
                         training)
        self.root, self.split, self.align, self.instances = Path(root), split, align, instances
        self.frames = read_lines(self.root / f"scannetv2_{split}.txt")

    def load(self, index: int) -> dict:
        scene = self.frames[index]
        folder = self.root / "scans" / scene
        mesh = folder / f"{scene}_vh_clean_2.ply"
        v = read_ply_vertices(mesh, ("x", "y", "z", "red", "green", "blue"))
        xyz = np.stack([v["x"], v["y"], v["z"]], 1).astype(np.float64)
        check_finite(xyz, mesh)
        align = axis_alignment(folder / f"{scene}.txt") if self.align else np.eye(4)
        xyz = xyz @ align[:3, :3].T + align[:3, 3]
        rgb = np.stack([v["red"], v["green"], v["blue"]], 1).astype(np.float32) / 255.0
        points = np.concatenate([xyz.astype(np.float32), rgb], 1)
        sample = {"frame_id": scene, "points": points,
                  "metadata": {"axis_alignment": align, "source": str(mesh)}}
        if self.split != "test":
            labelled = folder / f"{scene}_vh_clean_2.labels.ply"
            nyu = read_ply_vertices(labelled, ("label",))["label"]
            if len(nyu) != len(points):
                raise DataFormatError(labelled, f"{len(nyu)} labels for {len(points)} vertices")
            sample["point_labels"] = nyu40_to_scannet20(nyu)
            if self.instances:
                sample["instance_ids"] = instance_ids(folder, scene, len(points))
        return sample
