"""ScanNet v2 (indoor semantic segmentation), read from the official scans/ layout:

    scans/<scene>/<scene>_vh_clean_2.ply                  vertices x, y, z, red, green, blue -> points [N, 6]
    scans/<scene>/<scene>_vh_clean_2.labels.ply           per-vertex NYU40 `label`           -> point_labels
    scans/<scene>/<scene>_vh_clean_2.0.010000.segs.json   + <scene>.aggregation.json         -> instance_ids
    scans/<scene>/<scene>.txt                             axisAlignment (row-major 4 x 4)
    scans_test/<scene>/...                                the test scenes, as ScanNet's download script puts them
                                                          (read from scans/ too, where a scene is found there)
    scannetv2_{train,val,test}.txt

Points are axis-aligned (pc3d's frame for ScanNet: z up, metres), colours scaled to 0..1. Labels are
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


_PLY_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
              "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
              "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}


def _ply_header(path: Path) -> tuple[str, list[tuple[str, int, list]], int] | None:
    """(format, elements [(name, count, properties)], offset of the body) of a ply file; None when the
    header is not one pc3d parses (plyfile reports what is wrong). A property is (name, numpy code) or,
    for a list, (name, (count code, item code))."""
    with path.open("rb") as f:
        head = f.read(1 << 16)
    end = head.find(b"end_header")
    if not head.startswith(b"ply") or end < 0:
        return None
    body = end + len(b"end_header") + (2 if head[end + 10:end + 12] == b"\r\n" else 1)
    fmt, elements = None, []
    for line in head[:end].decode("ascii", "replace").splitlines()[1:]:
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        try:
            if words[0] == "format":
                fmt = words[1]
            elif words[0] == "element":
                elements.append((words[1], int(words[2]), []))
            elif words[0] == "property" and words[1] == "list":
                elements[-1][2].append((words[4], (_PLY_TYPES[words[2]], _PLY_TYPES[words[3]])))
            elif words[0] == "property":
                elements[-1][2].append((words[2], _PLY_TYPES[words[1]]))
        except (IndexError, KeyError, ValueError):
            return None  # plyfile reports what is wrong with the header
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian") or not elements:
        return None
    if min(count for _, count, _ in elements) < 0:
        raise DataFormatError(path, "negative element count in the header")
    return fmt, elements, body


def _element_bytes(path: Path, order: str, offset: int, count: int, props: list, vertices: int) -> int | None:
    """Bytes taken by `count` rows of an element at `offset`: fixed rows, or rows of one list whose length is
    read from the file (constant lengths checked at once, others row by row); None for other layouts. A list
    of vertex indices must index the `vertices` read before it: a header that under-counts vertices shifts
    the faces into vertex bytes, and a walk over those can, by chance, still end where the file does."""
    lists = [k for k, (_, code) in enumerate(props) if isinstance(code, tuple)]
    fixed = sum(np.dtype(code).itemsize for _, code in props if not isinstance(code, tuple))
    if not lists or not count:
        return count * fixed
    if len(props) > 1:
        return None
    len_code, item_code = props[lists[0]][1]
    len_dtype, item = np.dtype(order + len_code), np.dtype(item_code).itemsize
    size = path.stat().st_size
    if offset + len_dtype.itemsize > size:
        return size + 1  # the caller reports the file as too short
    first = int(np.fromfile(path, len_dtype, count=1, offset=offset)[0])
    row = len_dtype.itemsize + max(first, 0) * item
    indices = props[lists[0]][0] in ("vertex_indices", "vertex_index") and np.dtype(item_code).kind in "iu"
    if first >= 0 and offset + count * row <= size:
        rows = np.memmap(path, np.uint8, "r", offset, (count, row))
        lengths = np.ascontiguousarray(rows[:, :len_dtype.itemsize]).view(len_dtype).reshape(-1)
        if (lengths == first).all():
            if indices and first:
                values = np.ascontiguousarray(rows[:, len_dtype.itemsize:]).view(order + item_code)
                if values.min() < 0 or values.max() >= vertices:
                    raise DataFormatError(path, f"face vertex indices outside [0, {vertices}): the header's vertex "
                                                "count does not match the vertices in the file")
            return count * row
    data = np.memmap(path, np.uint8, "r")
    position = offset
    for _ in range(count):
        if position + len_dtype.itemsize > size:
            return size + 1
        length = int(data[position:position + len_dtype.itemsize].view(len_dtype)[0])
        if indices and length > 0:
            start = position + len_dtype.itemsize
            stop = start + min(length, max(size - start, 0) // item) * item  # whole items inside the file
            values = np.asarray(data[start:stop]).view(order + item_code)
            if len(values) and (values.min() < 0 or values.max() >= vertices):
                raise DataFormatError(path, f"face vertex indices outside [0, {vertices}): the header's vertex "
                                            "count does not match the vertices in the file")
        position += len_dtype.itemsize + length * item
    return position - offset


def _vertex_block(path: Path) -> np.ndarray | None:
    """The vertex element of a binary ply whose first element is 'vertex' with scalar properties, read
    straight into a structured array (faces are skipped, but their bytes are counted: the file must end
    where the header says); None for any other layout."""
    header = _ply_header(path)
    if header is None or header[0] == "ascii":
        return None
    fmt, elements, body = header
    name, count, props = elements[0]
    if name != "vertex" or not props or any(isinstance(code, tuple) for _, code in props):
        return None
    order = "<" if fmt == "binary_little_endian" else ">"
    dtype = np.dtype([(prop, order + code) for prop, code in props])
    size = path.stat().st_size
    end = body + count * dtype.itemsize
    if size < end:
        raise DataFormatError(path, f"truncated: {count} vertices of {dtype.itemsize} bytes do not fit the file")
    for _, rows, other_props in elements[1:]:
        taken = _element_bytes(path, order, end, rows, other_props, count)
        if taken is None:
            return None
        end += taken
    _check_extent(path, elements, end - body, size - body)
    return np.fromfile(path, dtype, count=count, offset=body)


def _check_extent(path: Path, elements, expected: int, found: int, unit: str = "bytes") -> None:
    """DataFormatError when the body holds more or fewer bytes (ascii: lines) than the header's counts need."""
    if expected != found:
        counts = ", ".join(f"{rows} {name}" for name, rows, _ in elements)
        raise DataFormatError(path, f"the header's element counts ({counts}) need {expected} {unit} of data, the "
                                    f"file has {found}: a wrong vertex count or a truncated file")


def _check_plyfile_extent(path: Path, ply) -> None:
    """What plyfile read covers the file exactly (plyfile ignores rows after the counted ones)."""
    header = _ply_header(path)
    if header is None:  # a header only plyfile understands: nothing to compare with
        return
    fmt, elements, body = header
    data = path.read_bytes()[body:]
    if fmt == "ascii":
        _check_extent(path, elements, sum(rows for _, rows, _ in elements),
                      sum(1 for line in data.splitlines() if line.strip()), "lines")
        return
    expected = 0
    for element in ply.elements:
        for prop in element.properties:
            if hasattr(prop, "len_dtype"):
                items = sum(len(v) for v in element.data[prop.name])
                expected += (element.count * np.dtype(prop.len_dtype).itemsize
                             + items * np.dtype(prop.val_dtype).itemsize)
            else:
                expected += element.count * np.dtype(prop.dtype()).itemsize
    _check_extent(path, elements, expected, len(data))


def read_ply_vertices(path: str | PathLike, fields: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The named vertex properties of a ply file; DataFormatError naming the file when unreadable, missing one,
    or holding more or fewer rows than its header counts.

    Binary files with the vertex element first (ScanNet's meshes and label meshes) are read with numpy
    alone, skipping the faces; anything else goes through plyfile."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, "file does not exist")
    try:
        block = _vertex_block(path)
        if block is not None:
            names = list(block.dtype.names)
            columns = {f: block[f] for f in fields if f in names}
        else:
            from plyfile import PlyData

            ply = PlyData.read(str(path))
            _check_plyfile_extent(path, ply)
            vertex = ply["vertex"]
            names = [p.name for p in vertex.properties]
            columns = {f: np.asarray(vertex[f]) for f in fields if f in names}
        missing = [f for f in fields if f not in names]
        if missing:
            raise DataFormatError(path, f"vertex element lacks {missing} (has {names})")
        return {f: np.ascontiguousarray(columns[f]).astype(columns[f].dtype.newbyteorder("="), copy=False)
                for f in fields}
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


def read_scene(folder: Path, align: np.ndarray | None = None) -> np.ndarray:
    """float32 [N, 6] of scans/<scene>: mesh vertices x, y, z (axis-aligned by `align`, default the scene's
    <scene>.txt when present) and r, g, b in 0..1."""
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
    return np.concatenate([xyz.astype(np.float32), rgb], 1)


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
    """ScanNet v2 scenes of a split as segmentation samples: points [N, 6] (x, y, z, r, g, b),
    point_labels (20 classes, -1 ignored) and, with instances=True, instance_ids; with boxes=True (instances
    implied) the detection benchmark's axis-aligned gt_boxes / gt_labels (1..18, ``box_class_names``) from the
    instances (pc3d.data.indoor_boxes)."""

    feature_names = ("r", "g", "b")
    indoor = True
    class_names = SCANNET20_CLASSES
    box_class_names = SCANNET18_CLASSES
    ignore_index = -1
    miou_rule = "scannet"  # the segmentation hook's mIoU_official: ScanNet's script (empty unions left out)

    def __init__(self, root: str | PathLike, split: str = "train", align: bool = True, instances: bool = False,
                 boxes: bool = False, transforms=None, augmentations=None, voxelizer=None, point_cloud_range=None,
                 voxel_size=None, seed: int | None = None, skip_bad_frames: bool = False, training: bool | None = None):
        super().__init__(transforms, augmentations, voxelizer, point_cloud_range, voxel_size, seed, skip_bad_frames,
                         training)
        self.root, self.split, self.align = Path(root), split, align
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
        points = read_scene(folder, align)
        sample = {"frame_id": scene, "points": points,
                  "metadata": {"axis_alignment": align, "source": str(mesh)}}
        if self.split != "test":
            nyu = read_nyu40_labels(folder / f"{scene}_vh_clean_2.labels.ply", len(points))
            sample["point_labels"] = nyu40_to_scannet20(nyu)
            if self.instances:
                sample["instance_ids"] = instance_ids(folder, scene, len(points))
            if self.boxes:
                sample["gt_boxes"], sample["gt_labels"] = instance_boxes(points, sample["point_labels"],
                                                                         sample["instance_ids"], frame=scene)
        return sample
