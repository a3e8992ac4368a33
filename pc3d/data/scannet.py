"""ScanNet v2 (indoor semantic segmentation), read from the official scans/ layout:

    scans/<scene>/<scene>_vh_clean_2.ply                  vertices x, y, z, red, green, blue -> points [N, 6]
    scans/<scene>/<scene>_vh_clean_2.labels.ply           per-vertex NYU40 `label`           -> point_labels
    scans/<scene>/<scene>_vh_clean_2.0.010000.segs.json   + <scene>.aggregation.json         -> instance_ids
    scans/<scene>/<scene>.txt                             axisAlignment (row-major 4 x 4)
    scans_test/<scene>/...                                the test scenes, as ScanNet's download script puts them
                                                          (read from scans/ too, where a scene is found there)
    scannetv2_{train,val,test}.txt

Points are axis-aligned (pc3d's frame for ScanNet: z up, metres), colours scaled to 0..1; with normals=True
three more columns hold each vertex's unit normal from the mesh's triangles (area-weighted, as Pointcept's
preprocessing and Open3D's compute_vertex_normals compute them; a vertex of no triangle gets 0). Labels are
the 20 benchmark classes 0..19 (NYU40 ids 1 2 3 4 5 6 7 8 9 10 11 12 14 16 24 28 33 34 36 39);
every other id is ``ignore_index`` = -1, as in Pointcept and mmdetection3d.
"""
from __future__ import annotations

import json
import logging
from os import PathLike
from pathlib import Path

import numpy as np

from pc3d.errors import DataFormatError
from pc3d.eval.box_json import write_box_json

from .dataset import PointCloudDataset
from .indoor_boxes import instance_boxes
from .io import check_finite, read_ids, read_int_lines, read_lines
from .label_space import LabelSpace, checked_ids
from .ply import read_ply_faces, read_ply_vertices, vertex_normals

log = logging.getLogger(__name__)
SCANNET20_IDS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39)
SCANNET20_CLASSES = ("wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
                     "picture", "counter", "desk", "curtain", "refrigerator", "shower curtain", "toilet", "sink",
                     "bathtub", "otherfurniture")
SCANNET18_CLASSES = SCANNET20_CLASSES[2:]  # the detection benchmark's: no wall, no floor (box ids 1..18)


def nyu40_to_scannet20(labels: np.ndarray) -> np.ndarray:
    """int64 [N]: benchmark class 0..19 of NYU40 ids, -1 for every other id."""
    lut = np.full(65536, -1, np.int64)
    lut[list(SCANNET20_IDS)] = np.arange(len(SCANNET20_IDS))
    return lut[np.asarray(labels, np.int64) & 0xFFFF]


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
    for path in (segs_path, agg_path):
        if not path.is_file():
            raise DataFormatError(path, "file does not exist (instances=True needs it)")
    try:
        seg = np.asarray(json.loads(segs_path.read_text())["segIndices"], np.int64)
    except (OSError, ValueError, KeyError, TypeError, OverflowError) as error:
        raise DataFormatError(segs_path, f"expected {{'segIndices': [int, ...]}} "
                                         f"({type(error).__name__}: {error})") from None
    try:
        groups = [(np.asarray(g["segments"], np.int64).reshape(-1), int(g.get("objectId", g.get("id", 0))))
                  for g in json.loads(agg_path.read_text())["segGroups"]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError, OverflowError) as error:
        raise DataFormatError(agg_path, f"expected {{'segGroups': [{{'objectId', 'segments'}}, ...]}} "
                                        f"({type(error).__name__}: {error})") from None
    if seg.shape != (n,):
        raise DataFormatError(segs_path, f"{seg.size} segment indices for {n} vertices")
    out = np.zeros(n, np.int64)
    for segments, object_id in groups:
        out[np.isin(seg, segments)] = object_id + 1
    return out


def read_scene(folder: Path, align: np.ndarray | None = None, normals: bool = False) -> np.ndarray:
    """float32 [N, 6] of scans/<scene>: mesh vertices x, y, z (axis-aligned by `align`, default the scene's
    <scene>.txt when present) and r, g, b in 0..1; with normals [N, 9], nx, ny, nz (aligned) after them."""
    folder = Path(folder)
    mesh = folder / f"{folder.name}_vh_clean_2.ply"
    v = read_ply_vertices(mesh, ("x", "y", "z", "red", "green", "blue"))
    xyz = np.stack([v["x"], v["y"], v["z"]], 1).astype(np.float64)
    if not len(xyz):
        raise DataFormatError(mesh, "the mesh has no vertices")
    check_finite(xyz, mesh)
    if align is None:
        meta = folder / f"{folder.name}.txt"
        align = axis_alignment(meta) if meta.is_file() else np.eye(4)
    xyz = xyz @ align[:3, :3].T + align[:3, 3]
    rgb = np.stack([v["red"], v["green"], v["blue"]], 1).astype(np.float32) / 255.0
    columns = [xyz.astype(np.float32), rgb]
    if normals:
        columns.append(vertex_normals(xyz, read_ply_faces(mesh, len(xyz))))
    return np.concatenate(columns, 1)


def read_nyu40_labels(path: Path, num_vertices: int) -> np.ndarray:
    """The NYU40 id of every vertex of a scene's <scene>_vh_clean_2.labels.ply (the ground truth); DataFormatError
    naming it for another vertex count or an id outside 0..40."""
    nyu = read_ply_vertices(path, ("label",))["label"]
    if len(nyu) != num_vertices:
        raise DataFormatError(path, f"{len(nyu)} labels for {num_vertices} vertices")
    if nyu.dtype.kind not in "iu" or (nyu.size and (nyu.min() < 0 or nyu.max() > 40)):
        raise DataFormatError(path, f"labels must be NYU40 ids 0..40, got {nyu.dtype} in "
                                    f"[{nyu.min(initial=0)}, {nyu.max(initial=0)}]")
    return nyu


def write_scannet_labels(path: Path, train_ids: np.ndarray, num_vertices: int | None = None) -> Path:
    """The benchmark's per-scene prediction file: one NYU40 id per mesh vertex, one per line (train id -1: 0).
    num_vertices: the mesh's vertex count, checked when given."""
    ids = np.asarray(train_ids, np.int64)
    if num_vertices is not None and len(ids) != num_vertices:
        raise DataFormatError(path, f"{len(ids)} predicted labels for a mesh of {num_vertices} vertices")
    if ids.size and (ids.min() < -1 or ids.max() >= len(SCANNET20_IDS)):
        raise DataFormatError(path, f"train ids must be in [-1, {len(SCANNET20_IDS)}), got [{ids.min()}, {ids.max()}]")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savetxt(path, np.asarray((0, *SCANNET20_IDS), np.int64)[ids + 1], fmt="%d")
    return path


class ScanNetDataset(PointCloudDataset):
    """ScanNet v2 scenes of a split as segmentation samples: points [N, 6] (x, y, z, r, g, b; with normals=True
    [N, 9], + nx, ny, nz, named as the sample's `normal_columns`), point_labels (20 classes, -1 ignored) and, with
    instances=True, instance_ids; with boxes=True (instances implied) the detection benchmark's axis-aligned
    gt_boxes / gt_labels (1..18, ``box_class_names``) from the instances (pc3d.data.indoor_boxes)."""

    feature_names = ("r", "g", "b")
    indoor = True
    class_names = SCANNET20_CLASSES
    box_class_names = SCANNET18_CLASSES
    ignore_index = -1
    miou_rule = "scannet"  # the segmentation hook's mIoU_official: ScanNet's script (empty unions left out)

    def __init__(self, root: str | PathLike, split: str = "train", align: bool = True, instances: bool = False,
                 boxes: bool = False, transforms=None, augmentations=None, voxelizer=None, point_cloud_range=None,
                 voxel_size=None, seed: int | None = None, skip_bad_frames: bool = False, training: bool | None = None,
                 normals: bool = False):
        super().__init__(transforms, augmentations, voxelizer, point_cloud_range, voxel_size, seed, skip_bad_frames,
                         training)
        self.root, self.split, self.align, self.normals = Path(root), split, align, bool(normals)
        if self.normals:
            self.feature_names = (*ScanNetDataset.feature_names, "nx", "ny", "nz")
        self.instances, self.boxes = instances or boxes, boxes
        self.frames = read_ids(self.root / f"scannetv2_{split}.txt")

    @classmethod
    def label_space(cls, **_) -> LabelSpace:
        """The 20 benchmark classes, written as the benchmark's ``<scene>.txt`` (NYU40 ids, one per vertex)."""
        from pc3d.viz.colors import SCANNET20_COLORS

        def write(frame_id: str, ids: np.ndarray, out_dir: Path) -> Path:
            return write_scannet_labels(Path(out_dir) / f"{frame_id}.txt", ids)

        def read(path: Path, count: int) -> np.ndarray:  # a prediction .txt, or a scene's labels .ply (ground truth)
            path = Path(path)
            if path.suffix == ".ply":
                return nyu40_to_scannet20(read_nyu40_labels(path, count))
            return nyu40_to_scannet20(checked_ids(path, read_int_lines(path), count, 65536))

        return LabelSpace(list(SCANNET20_CLASSES), write, read, SCANNET20_COLORS)

    def write_predictions(self, predictions: list[dict], out_dir) -> Path:
        """`tools/test.py` hook, by the dataset's task: segmentation (``pred_labels``) -> the benchmark's
        ``<out_dir>/<scene>.txt``, one NYU40 id per mesh vertex; detection (boxes=True: ``boxes``, ``scores``,
        ``labels``) -> ``<out_dir>/<scene>.json`` (pc3d.eval.box_json, the layout tools/infer.py writes), the
        axis-aligned boxes (centre, size, heading 0) in the aligned scene frame, the frame of the benchmark's
        boxes (the detection benchmark has no file format)."""
        if len(predictions) != len(self.frames):
            raise DataFormatError(self.root, f"{len(predictions)} predictions for {len(self.frames)} scenes")
        keys = ("boxes", "scores", "labels") if self.boxes else ("pred_labels",)
        out = Path(out_dir)
        for scene, pred in zip(self.frames, predictions, strict=True):
            mesh = self.scene_folder(scene) / f"{scene}_vh_clean_2.ply"
            if any(k not in pred for k in keys):
                task = "detection" if self.boxes else "segmentation"
                raise DataFormatError(mesh, f"a {task} prediction needs {list(keys)}, got keys {sorted(pred)}")
            if self.boxes:
                write_box_json(out / f"{scene}.json", scene, "scene", pred, SCANNET18_CLASSES)
            else:
                write_scannet_labels(out / f"{scene}.txt", pred["pred_labels"],
                                     len(read_ply_vertices(mesh, ("x",))["x"]))
        if self.boxes and len(self.transforms):
            log.warning("%s: the boxes are in the frame after the dataset's transforms (%s), not the scene frame the "
                        "files name; evaluate with transforms: [] to write scene-frame boxes", out, self.transforms)
        return out

    def scene_folder(self, scene: str) -> Path:
        """scans/<scene>, or scans_test/<scene> where ScanNet's download script put a test scene (errors name the
        scans/ path when neither exists)."""
        folder = self.root / "scans" / scene
        test = self.root / "scans_test" / scene
        return test if not folder.is_dir() and test.is_dir() else folder

    def annotations(self, index: int) -> dict:
        """The scene's detection ground truth {"gt_boxes" [M, 7], "gt_labels" [M]} in the frame the model's
        predictions are in: with evaluation transforms (e.g. CenterShift), the transformed sample's boxes
        (``self[index]``); else from create_data's scannet_infos_<split>.json when it holds them and the dataset
        aligns (the infos' boxes are in the aligned frame; no mesh read), else from the loaded scene's instances."""
        if len(self.transforms):
            sample = self[index]
            if "gt_boxes" in sample:
                return {"gt_boxes": sample["gt_boxes"], "gt_labels": sample["gt_labels"]}
        if not hasattr(self, "_info_boxes"):
            path = self.root / f"scannet_infos_{self.split}.json"
            frames = json.loads(path.read_text()).get("frames", []) if path.is_file() and self.align else []
            self._info_boxes = {f["frame_id"]: f for f in frames if "gt_boxes" in f}
        info = self._info_boxes.get(self.frames[index])
        if info is not None:
            return {"gt_boxes": np.asarray(info["gt_boxes"], np.float32).reshape(-1, 7),
                    "gt_labels": np.asarray(info["gt_labels"], np.int64)}
        sample = self.load(index)
        if "gt_boxes" not in sample:  # a dataset built without boxes=True
            scene = self.frames[index]
            sample["gt_boxes"], sample["gt_labels"] = instance_boxes(
                sample["points"], sample["point_labels"],
                instance_ids(self.scene_folder(scene), scene, len(sample["points"])), frame=scene)
        return {"gt_boxes": sample["gt_boxes"], "gt_labels": sample["gt_labels"]}

    def load(self, index: int) -> dict:
        scene = self.frames[index]
        folder = self.scene_folder(scene)
        mesh = folder / f"{scene}_vh_clean_2.ply"
        align = axis_alignment(folder / f"{scene}.txt") if self.align else np.eye(4)
        points = read_scene(folder, align, self.normals)
        sample = {"frame_id": scene, "points": points,
                  "metadata": {"axis_alignment": align, "source": str(mesh)}}
        if self.normals:
            sample["normal_columns"] = (6, 7, 8)
        if self.split != "test":
            nyu = read_nyu40_labels(folder / f"{scene}_vh_clean_2.labels.ply", len(points))
            sample["point_labels"] = nyu40_to_scannet20(nyu)
            if self.instances:
                sample["instance_ids"] = instance_ids(folder, scene, len(points))
            if self.boxes:
                sample["gt_boxes"], sample["gt_labels"] = instance_boxes(points, sample["point_labels"],
                                                                         sample["instance_ids"], frame=scene)
        return sample
