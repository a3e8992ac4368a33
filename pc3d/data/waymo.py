"""Waymo Open Dataset v2 (parquet; no TensorFlow), read with pyarrow a frame at a time:

    {training,validation,testing}/lidar/<segment>.parquet              range images, both returns
    {...}/lidar_calibration/<segment>.parquet                           extrinsic, beam inclinations
    {...}/lidar_box/<segment>.parquet                                   3D boxes (vehicle frame)
    {...}/lidar_pose/<segment>.parquet                                  per-pixel TOP poses (optional)
    {...}/vehicle_pose/<segment>.parquet                                world_from_vehicle (metadata)

Points come from the range images of both returns, as the official range_image_utils (pc3d.geometry.
range_image), in the vehicle frame (pc3d's LiDAR frame for Waymo): x, y, z, intensity, elongation.
Points in no-label zones are dropped (drop_no_label_zone) or kept. When a segment has no lidar_pose
component, no rolling-shutter correction is applied (the simulated world writes undistorted sweeps).
Memory stays bounded per segment: only the columns and the row group holding the wanted frame are
read (one row group cached), calibration and boxes are read once per segment (small tables).
"""
from __future__ import annotations

import json
from os import PathLike
from pathlib import Path

import numpy as np

from pc3d.errors import DataFormatError
from pc3d.geometry import beam_inclinations, range_image_to_points

from .dataset import PointCloudDataset

LIDAR, CALIB, BOX = "[LiDARComponent]", "[LiDARCalibrationComponent]", "[LiDARBoxComponent]"
SEGMENT, TIMESTAMP, LASER = "key.segment_context_name", "key.frame_timestamp_micros", "key.laser_name"
WAYMO_TYPES = {1: "Vehicle", 2: "Pedestrian", 3: "Sign", 4: "Cyclist"}
WAYMO_CLASSES = ("Vehicle", "Pedestrian", "Cyclist")
SPLIT_ALIASES = {"train": "training", "val": "validation", "test": "testing"}
INDEX_FORMAT, INDEX_VERSION = "pc3d-waymo-index", 1
BOX_COLUMNS = [SEGMENT, TIMESTAMP] + [f"{BOX}.{c}" for c in (
    "box.center.x", "box.center.y", "box.center.z", "box.size.x", "box.size.y", "box.size.z", "box.heading",
    "type", "num_lidar_points_in_box", "difficulty_level.detection")]
OPTIONAL_BOX_COLUMNS = [f"{BOX}.speed.x", f"{BOX}.speed.y"]


def _pq():
    try:
        import pyarrow.parquet as pq
    except ImportError as error:  # pragma: no cover - pyarrow is a dependency
        from pc3d.errors import BackendUnavailableError

        raise BackendUnavailableError("Waymo v2 needs pyarrow (pip install pyarrow)") from error
    return pq


def _open(path: Path):
    if not path.is_file():
        raise DataFormatError(path, "file does not exist")
    try:
        return _pq().ParquetFile(path)
    except Exception as error:  # pyarrow raises ArrowInvalid / OSError on non-parquet bytes
        raise DataFormatError(path, f"not a readable parquet file ({type(error).__name__}: {error})") from None


def _require(path: Path, parquet, columns: list[str]) -> None:
    missing = sorted(set(columns) - set(parquet.schema_arrow.names))
    if missing:
        raise DataFormatError(path, f"missing expected columns {missing}")


def _read(path: Path, parquet, columns: list[str], row_group: int | None = None):
    try:
        if row_group is None:
            return parquet.read(columns=columns)
        return parquet.read_row_group(row_group, columns=columns)
    except Exception as error:
        raise DataFormatError(path, f"cannot read columns ({type(error).__name__}: {error})") from None


def segment_index(root: str | PathLike, split: str) -> list[dict]:
    """[{"segment", "timestamps": [...], "row_groups": [...]}] of a split, from the lidar files' key
    columns only (laser 1 = TOP rows; a frame is a timestamp)."""
    folder = Path(root) / split / "lidar"
    if not folder.is_dir():
        raise DataFormatError(folder, "no lidar/ folder (expected Waymo v2 parquet layout)")
    out = []
    for path in sorted(folder.glob("*.parquet")):
        parquet = _open(path)
        _require(path, parquet, [TIMESTAMP, LASER])
        stamps, groups = [], []
        for g in range(parquet.num_row_groups):
            table = _read(path, parquet, [TIMESTAMP, LASER], g)
            ts = np.asarray(table.column(TIMESTAMP).to_numpy(), np.int64)
            top = np.asarray(table.column(LASER).to_numpy()) == 1
            for t in np.unique(ts[top]):
                stamps.append(int(t))
                groups.append(g)
        order = np.argsort(stamps, kind="stable")
        out.append({"segment": path.stem, "timestamps": [stamps[i] for i in order],
                    "row_groups": [groups[i] for i in order]})
    return out


def write_box_predictions(path: Path, segment: str, frames: list[tuple[int, dict]], class_names) -> Path:
    """One parquet file in the v2 ``lidar_box`` layout (plus a ``score`` column) of a segment's detections:
    frames [(timestamp, {"boxes" [K, 7+], "scores" [K], "labels" 1..K})]."""
    import pyarrow as pa

    type_ids = {name: i for i, name in WAYMO_TYPES.items()}
    rows: dict[str, list] = {SEGMENT: [], TIMESTAMP: [], "key.laser_object_id": []}
    fields = ("box.center.x", "box.center.y", "box.center.z", "box.size.x", "box.size.y", "box.size.z", "box.heading")
    for name in (*fields, "type", "score"):
        rows[f"{BOX}.{name}"] = []
    for timestamp, pred in frames:
        boxes = np.asarray(pred["boxes"], np.float64).reshape(len(pred["scores"]), -1)
        for k, (box, score, label) in enumerate(zip(boxes, pred["scores"], pred["labels"], strict=True)):
            rows[SEGMENT].append(segment)
            rows[TIMESTAMP].append(int(timestamp))
            rows["key.laser_object_id"].append(f"pred_{timestamp}_{k}")
            for j, name in enumerate(fields):
                rows[f"{BOX}.{name}"].append(float(box[j]))
            rows[f"{BOX}.type"].append(type_ids.get(str(class_names[int(label) - 1]), 0))
            rows[f"{BOX}.score"].append(float(score))
    table = pa.table({k: pa.array(v, pa.int64() if k in (TIMESTAMP, f"{BOX}.type") else
                                  pa.string() if k in (SEGMENT, "key.laser_object_id") else pa.float64())
                      for k, v in rows.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    _pq().write_table(table, path)
    return path


def _rotation_from_euler(rpy: np.ndarray) -> np.ndarray:
    """[..., 3, 3] from (roll, pitch, yaw) [..., 3], R = Rz(yaw) Ry(pitch) Rx(roll) (Waymo's convention)."""
    r, p, y = rpy[..., 0], rpy[..., 1], rpy[..., 2]
    cr, sr, cp, sp, cy, sy = np.cos(r), np.sin(r), np.cos(p), np.sin(p), np.cos(y), np.sin(y)
    return np.stack([np.stack([cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr], -1),
                     np.stack([sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr], -1),
                     np.stack([-sp, cp * sr, cp * cr], -1)], -2)


class WaymoDataset(PointCloudDataset):
    """Frames of Waymo v2 segments as detection samples (gt_boxes [M, 9] with velocity).

    root: the folder holding training/, validation/, testing/. split: one of those. class_names:
    training classes among Vehicle, Pedestrian, Sign, Cyclist. returns: which range-image returns
    to use. drop_no_label_zone: drop points in no-label zones. min_box_points: boxes with fewer
    LiDAR points are not training boxes (they stay in metadata["annos"]). index: a create_data index
    JSON (default <root>/waymo_infos_<split>.json when present, else built from the key columns).
    """

    feature_names = ("intensity", "elongation")

    def __init__(self, root: str | PathLike, split: str = "training", class_names=WAYMO_CLASSES,
                 returns=(1, 2), drop_no_label_zone: bool = True, min_box_points: int = 1, index=None,
                 transforms=None, augmentations=None, voxelizer=None, point_cloud_range=None, voxel_size=None,
                 seed: int | None = None, skip_bad_frames: bool = False, training: bool | None = None):
        super().__init__(transforms, augmentations, voxelizer, point_cloud_range, voxel_size, seed, skip_bad_frames,
                         training)
        self.root, self.split = Path(root), SPLIT_ALIASES.get(split, split)
        split = self.split
        self.class_names = list(class_names)
        self.returns = tuple(int(r) for r in returns)
        self.drop_no_label_zone = drop_no_label_zone
        self.min_box_points = int(min_box_points)
        index_path = Path(index) if index else self.root / f"waymo_infos_{split}.json"
        if index_path.is_file():
            header = json.loads(index_path.read_text())
            if header.get("format") != INDEX_FORMAT or header.get("version") != INDEX_VERSION:
                raise DataFormatError(index_path, f"expected {INDEX_FORMAT} version {INDEX_VERSION}")
            segments = header["segments"]
        else:
            segments = segment_index(self.root, split)
        self.frames = [(s["segment"], t, g) for s in segments for t, g in zip(s["timestamps"], s["row_groups"],
                                                                               strict=True)]
        self._segment: str | None = None
        self._cache: dict = {}

    def frame_id(self, index: int) -> str:
        segment, ts, _ = self.frames[index]
        return f"{segment}/{ts}"

    def component(self, name: str, segment: str) -> Path:
        return self.root / self.split / name / f"{segment}.parquet"

    def _segment_tables(self, segment: str) -> dict:
        """Calibration per laser and the segment's box table, read once; the row-group cache is reset."""
        if self._segment == segment:
            return self._cache
        self._segment, self._cache = segment, {}
        path = self.component("lidar_calibration", segment)
        parquet = _open(path)
        cols = [LASER, f"{CALIB}.extrinsic.transform", f"{CALIB}.beam_inclination.min",
                f"{CALIB}.beam_inclination.max"]
        _require(path, parquet, cols)
        values_col = f"{CALIB}.beam_inclination.values"
        has_values = values_col in parquet.schema_arrow.names
        table = _read(path, parquet, cols + ([values_col] if has_values else [])).to_pydict()
        calib = {}
        for k, laser in enumerate(table[LASER]):
            extrinsic = np.asarray(table[cols[1]][k], np.float64)
            if extrinsic.shape != (16,):
                raise DataFormatError(path, f"laser {laser}: extrinsic must have 16 values, got {extrinsic.shape}")
            calib[int(laser)] = (extrinsic.reshape(4, 4), table[values_col][k] if has_values else None,
                                 table[cols[2]][k], table[cols[3]][k])
        self._cache["calib"] = calib
        box_path = self.component("lidar_box", segment)
        if box_path.is_file():
            parquet = _open(box_path)
            _require(box_path, parquet, BOX_COLUMNS)
            extra = [c for c in OPTIONAL_BOX_COLUMNS if c in parquet.schema_arrow.names]
            self._cache["boxes"] = _read(box_path, parquet, BOX_COLUMNS + extra)
        pose_path = self.component("lidar_pose", segment)
        self._cache["lidar_pose"] = pose_path if pose_path.is_file() else None
        return self._cache

    def _row_group(self, segment: str, group: int):
        key = ("lidar", group)
        if key not in self._cache:
            self._cache.pop(next((k for k in self._cache if isinstance(k, tuple)), None), None)
            path = self.component("lidar", segment)
            parquet = _open(path)
            cols = [TIMESTAMP, LASER] + [f"{LIDAR}.range_image_return{r}.{f}" for r in self.returns
                                         for f in ("values", "shape")]
            _require(path, parquet, cols)
            self._cache[key] = _read(path, parquet, cols, group)
        return self._cache[key]

    def read_points(self, segment: str, timestamp: int, group: int) -> np.ndarray:
        """float32 [N, 5 (+1)] vehicle-frame points of every laser and return of one frame."""
        tables = self._segment_tables(segment)
        table = self._row_group(segment, group)
        path = self.component("lidar", segment)
        rows = np.flatnonzero(np.asarray(table.column(TIMESTAMP).to_numpy()) == timestamp)
        if not len(rows):
            raise DataFormatError(path, f"no lidar rows for timestamp {timestamp} in row group {group}")
        clouds = []
        for row in rows:
            laser = int(table.column(LASER)[int(row)].as_py())
            if laser not in tables["calib"]:
                raise DataFormatError(self.component("lidar_calibration", segment), f"no calibration of laser {laser}")
            extrinsic, values, lo, hi = tables["calib"][laser]
            for r in self.returns:
                shape = table.column(f"{LIDAR}.range_image_return{r}.shape")[int(row)].as_py()
                flat = table.column(f"{LIDAR}.range_image_return{r}.values")[int(row)].values.to_numpy()
                if shape is None or len(shape) != 3 or shape[2] < 4 or int(np.prod(shape)) != len(flat):
                    raise DataFormatError(path, f"frame {timestamp} laser {laser} return {r}: range image of "
                                                f"{len(flat)} values does not match shape {shape}")
                image = flat.reshape(shape)
                if not np.isfinite(image).all():
                    raise DataFormatError(path, f"frame {timestamp} laser {laser} return {r}: NaN in range image")
                incl = beam_inclinations(shape[0], values, lo, hi)
                xyz, pixels = range_image_to_points(image, incl, extrinsic)
                if laser == 1 and tables["lidar_pose"] is not None:
                    xyz = self._rolling_shutter(segment, timestamp, r, xyz, image, pixels, incl, extrinsic)
                feats = image[pixels[:, 0], pixels[:, 1]]
                cloud = np.concatenate([xyz, feats[:, 1:3], feats[:, 3:4]], 1).astype(np.float32)
                clouds.append(cloud)
        return np.concatenate(clouds) if clouds else np.zeros((0, 5), np.float32)

    def _rolling_shutter(self, segment, timestamp, ret, xyz, image, pixels, incl, extrinsic) -> np.ndarray:
        """Per-pixel vehicle poses (lidar_pose component) move each TOP point to the frame's vehicle pose."""
        path = self.tables_pose_path(segment)
        parquet = _open(path)
        col = f"[LiDARPoseComponent].range_image_return{ret}.values"
        if col not in parquet.schema_arrow.names:
            return xyz
        table = parquet.read(columns=[TIMESTAMP, LASER, col])
        ts = np.asarray(table.column(TIMESTAMP).to_numpy())
        lasers = np.asarray(table.column(LASER).to_numpy())
        rows = np.flatnonzero((ts == timestamp) & (lasers == 1))
        pose_path = self.component("vehicle_pose", segment)
        if not len(rows) or not pose_path.is_file():
            return xyz
        pixel_pose = table.column(col)[int(rows[0])].values.to_numpy().reshape(*image.shape[:2], 6)
        vp = _open(pose_path).read(columns=[TIMESTAMP, "[VehiclePoseComponent].world_from_vehicle.transform"])
        k = int(np.flatnonzero(np.asarray(vp.column(TIMESTAMP).to_numpy()) == timestamp)[0])
        frame_pose = np.asarray(vp.column(1)[k].as_py(), np.float64).reshape(4, 4)
        p = pixel_pose[pixels[:, 0], pixels[:, 1]].astype(np.float64)
        rot = _rotation_from_euler(p[:, :3])
        world = np.einsum("nij,nj->ni", rot, xyz.astype(np.float64)) + p[:, 3:]
        inv = np.linalg.inv(frame_pose)
        return (world @ inv[:3, :3].T + inv[:3, 3]).astype(np.float32)

    def tables_pose_path(self, segment: str) -> Path:
        return self.component("lidar_pose", segment)

    def read_boxes(self, segment: str, timestamp: int) -> dict[str, np.ndarray]:
        """The frame's boxes: box float32 [M, 9] (x, y, z, l, w, h, heading, vx, vy), name, difficulty
        int8 (1 LEVEL_1, 2 LEVEL_2), num_points int64."""
        boxes = self._segment_tables(segment).get("boxes")
        if boxes is None:
            return {"box": np.zeros((0, 9), np.float32), "name": np.zeros(0, str),
                    "difficulty": np.zeros(0, np.int8), "num_points": np.zeros(0, np.int64)}
        rows = np.flatnonzero(np.asarray(boxes.column(TIMESTAMP).to_numpy()) == timestamp)

        def col(name: str) -> np.ndarray:
            full = f"{BOX}.{name}"
            if full not in boxes.schema.names:
                return np.zeros(len(rows))
            return np.asarray(boxes.column(full).take(rows).to_numpy(zero_copy_only=False), np.float64)

        box = np.stack([col(c) for c in ("box.center.x", "box.center.y", "box.center.z", "box.size.x",
                                          "box.size.y", "box.size.z", "box.heading", "speed.x", "speed.y")], 1)
        if not np.isfinite(box).all():
            raise DataFormatError(self.component("lidar_box", segment), f"frame {timestamp}: NaN in boxes")
        box[:, 6] = (box[:, 6] + np.pi) % (2 * np.pi) - np.pi
        types = col("type").astype(np.int64)
        return {"box": box.astype(np.float32), "name": np.asarray([WAYMO_TYPES.get(int(t), "Unknown") for t in types],
                                                                   dtype=str).reshape(-1),
                "difficulty": col("difficulty_level.detection").astype(np.int8),
                "num_points": col("num_lidar_points_in_box").astype(np.int64)}

    def annotations(self, index: int) -> dict:
        """The frame's evaluation ground truth without reading its range images: ``{"annos": read_boxes(...)}``."""
        segment, timestamp, _ = self.frames[index]
        return {"annos": self.read_boxes(segment, timestamp)}

    def write_predictions(self, predictions: list[dict], out_dir) -> Path:
        """`tools/test.py` hook: ``<out_dir>/<split>/lidar_box/<segment>.parquet`` per segment, the v2 box
        component's columns plus ``[LiDARBoxComponent].score`` (boxes in the vehicle frame)."""
        if len(predictions) != len(self.frames):
            raise DataFormatError(self.root, f"{len(predictions)} predictions for {len(self.frames)} frames")
        per_segment: dict[str, list] = {}
        for (segment, timestamp, _), pred in zip(self.frames, predictions, strict=True):
            per_segment.setdefault(segment, []).append((timestamp, pred))
        out = Path(out_dir) / self.split / "lidar_box"
        for segment, frames in per_segment.items():
            write_box_predictions(out / f"{segment}.parquet", segment, frames, self.class_names)
        return out

    def load(self, index: int) -> dict:
        segment, timestamp, group = self.frames[index]
        points = self.read_points(segment, timestamp, group)
        nlz = points[:, 5] > 0
        points = points[~nlz, :5] if self.drop_no_label_zone else points[:, :5]
        annos = self.read_boxes(segment, timestamp)
        train = np.isin(annos["name"], self.class_names) & (annos["num_points"] >= self.min_box_points)
        return {"frame_id": f"{segment}/{timestamp}", "points": np.ascontiguousarray(points),
                "gt_boxes": annos["box"][train],
                "gt_labels": np.asarray([self.class_names.index(n) + 1 for n in annos["name"][train]], np.int64),
                "metadata": {"annos": annos, "segment": segment, "timestamp": timestamp,
                             "num_no_label_zone_points": int(nlz.sum()),
                             "source": str(self.component("lidar", segment))}}
