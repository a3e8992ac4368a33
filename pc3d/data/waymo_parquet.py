"""The Waymo Open Dataset v2 parquet layer: component column names, checked column readers, the segment index
(``tools/create_data.py waymo`` writes it as JSON) and the writer of detections in the ``lidar_box`` layout.
Every reader raises a DataFormatError naming the file (a missing file, non-parquet bytes, a missing column,
nulls where a value is required, or non-finite numbers). pyarrow is imported on first use.

Box speeds: Waymo's files give them in world axes (the ``vehicle_pose`` frame; the dataset's authors, issue
#39, and OpenPCDet's converter, which turns them into the vehicle frame); pc3d's boxes carry (vx, vy) in the
vehicle frame, the frame of their centres. ``turn_velocities`` converts between the two at every file boundary:
the readers take a frame's world_from_vehicle pose, and so do the writers.
"""
from __future__ import annotations

import json
from os import PathLike
from pathlib import Path

import numpy as np

from pc3d.errors import DataFormatError

LIDAR, CALIB, BOX = "[LiDARComponent]", "[LiDARCalibrationComponent]", "[LiDARBoxComponent]"
SEGMENT, TIMESTAMP, LASER = "key.segment_context_name", "key.frame_timestamp_micros", "key.laser_name"
WAYMO_TYPES = {0: "Unknown", 1: "Vehicle", 2: "Pedestrian", 3: "Sign", 4: "Cyclist"}
WAYMO_CLASSES = ("Vehicle", "Pedestrian", "Cyclist")
# a model's class names that name a Waymo type besides Waymo's own (any case): KITTI's Car, which cross-dataset
# work pairs with Vehicle (OpenPCDet's MAP_CLASS_TO_KITTI)
TYPE_ALIASES = {"car": "vehicle"}
SPLIT_ALIASES = {"train": "training", "val": "validation", "test": "testing"}
INDEX_FORMAT, INDEX_VERSION = "pc3d-waymo-index", 2  # 2: every row group a frame's lasers lie in
BOX_COLUMNS = [SEGMENT, TIMESTAMP] + [f"{BOX}.{c}" for c in (
    "box.center.x", "box.center.y", "box.center.z", "box.size.x", "box.size.y", "box.size.z", "box.heading",
    "type", "num_lidar_points_in_box")]
OBJECT_ID = "key.laser_object_id"
# optional in v2's box component (speed, difficulty_level: a column may be missing or hold nulls)
OPTIONAL_BOX_COLUMNS = [f"{BOX}.speed.x", f"{BOX}.speed.y", f"{BOX}.speed.z", f"{BOX}.difficulty_level.detection",
                        f"{BOX}.difficulty_level.tracking", OBJECT_ID]


def parquet_module():
    try:
        import pyarrow.parquet as pq
    except ImportError as error:  # pragma: no cover - pyarrow is a dependency
        from pc3d.errors import BackendUnavailableError

        raise BackendUnavailableError("Waymo v2 needs pyarrow (pip install pyarrow)") from error
    return pq


def open_parquet(path: Path):
    if not path.is_file():
        raise DataFormatError(path, "file does not exist")
    try:
        return parquet_module().ParquetFile(path)
    except Exception as error:  # pyarrow raises ArrowInvalid / OSError on non-parquet bytes
        raise DataFormatError(path, f"not a readable parquet file ({type(error).__name__}: {error})") from None


def require_columns(path: Path, parquet, columns: list[str]) -> None:
    missing = sorted(set(columns) - set(parquet.schema_arrow.names))
    if missing:
        raise DataFormatError(path, f"missing expected columns {missing}")


def read_columns(path: Path, parquet, columns: list[str], row_group: int | None = None):
    try:
        if row_group is None:
            return parquet.read(columns=columns)
        return parquet.read_row_group(row_group, columns=columns)
    except Exception as error:
        raise DataFormatError(path, f"cannot read columns ({type(error).__name__}: {error})") from None


def numeric_column(path: Path, table, column: str, rows=None, where: str = "", null: float | None = None) -> np.ndarray:
    """float64 [R] of a numeric column (the `rows` of it); DataFormatError on non-finite values, and on nulls
    unless `null` is given: the value of an empty entry of an optional field (v2's speed, difficulty level)."""
    values = table.column(column)
    if rows is not None:
        values = values.take(rows)
    if values.null_count and null is None:
        raise DataFormatError(path, f"{where}{values.null_count} null values in {column}")
    try:
        out = np.asarray(values.to_numpy(zero_copy_only=False), np.float64).reshape(-1)
    except (TypeError, ValueError) as error:
        raise DataFormatError(path, f"{where}{column} is not numeric ({error})") from None
    empty = (np.asarray(values.is_null().to_numpy(zero_copy_only=False), bool).reshape(-1) if values.null_count
             else np.zeros(len(out), bool))
    if not np.isfinite(out[~empty]).all():
        raise DataFormatError(path, f"{where}NaN or infinite values in {column}")
    if empty.any():
        out[empty] = null
    return out


def turn_velocities(boxes: np.ndarray, rotation: np.ndarray, vz: np.ndarray | None = None) -> np.ndarray:
    """Boxes [K, 9] with (vx, vy, vz) turned by rotation [3, 3], vz 0 unless given: a world_from_vehicle pose's
    rotation takes pc3d's vehicle-frame velocities to the world axes of Waymo's speed columns, its transpose back
    (with the file's ``speed.z``). Boxes without velocities ([K, 7]) come back as they are; unknown (NaN)
    velocities stay NaN."""
    boxes = np.asarray(boxes, np.float64)
    if boxes.ndim != 2 or boxes.shape[1] < 9:
        return boxes
    v = np.concatenate([boxes[:, 7:9], np.zeros((len(boxes), 1)) if vz is None else np.reshape(vz, (-1, 1))], 1)
    out = boxes.copy()
    out[:, 7:9] = (v @ np.asarray(rotation, np.float64).T)[:, :2]
    return out


def pose_of(where, poses, timestamp: int) -> np.ndarray:
    """world_from_vehicle of a frame from {timestamp: pose} (or None), for turning boxes' velocities; a
    DataFormatError naming `where` when it is missing."""
    pose = None if poses is None else poses.get(int(timestamp))
    if pose is None:
        raise DataFormatError(where, f"frame {timestamp}: boxes with velocities need the frame's world_from_vehicle "
                                     "pose (Waymo's speed columns are in world axes)")
    return np.asarray(pose, np.float64)


def segment_index(root: str | PathLike, split: str) -> list[dict]:
    """[{"segment", "timestamps": [...], "row_groups": [...]}] of a split, from the lidar files' key
    columns only: a frame is a timestamp with a TOP row (laser 1), its row groups every group holding one of its
    lasers' rows (an int, or a list where the frame spans groups: nothing in the format keeps a frame in one)."""
    folder = Path(root) / split / "lidar"
    if not folder.is_dir():
        raise DataFormatError(folder, "no lidar/ folder (expected Waymo v2 parquet layout)")
    out = []
    for path in sorted(folder.glob("*.parquet")):
        parquet = open_parquet(path)
        require_columns(path, parquet, [TIMESTAMP, LASER])
        stamps, tops, groups = [], [], []
        for g in range(parquet.num_row_groups):
            table = read_columns(path, parquet, [TIMESTAMP, LASER], g)
            stamps.append(numeric_column(path, table, TIMESTAMP).astype(np.int64))
            tops.append(numeric_column(path, table, LASER) == 1)
            groups.append(np.full(table.num_rows, g))
        stamps, tops, groups = (np.concatenate(a) if a else np.zeros(0, np.int64) for a in (stamps, tops, groups))
        frames, count = np.unique(stamps[tops], return_counts=True)
        if not len(frames):
            raise DataFormatError(path, f"no frames: {parquet.metadata.num_rows} rows, none of the TOP laser "
                                        f"({LASER} = 1)")
        if (count > 1).any():
            raise DataFormatError(path, f"timestamps {frames[count > 1][:3].tolist()} have more than one TOP row (a "
                                        "frame listed twice)")
        spans = [np.unique(groups[stamps == t]).tolist() for t in frames]
        out.append({"segment": path.stem, "timestamps": frames.tolist(),
                    "row_groups": [span[0] if len(span) == 1 else span for span in spans]})
    return out


def row_groups_of(entry) -> int | tuple[int, ...] | None:
    """An index entry's row groups (an int, or a non-empty list of ints: a tuple), None when it is neither."""
    if isinstance(entry, int) and not isinstance(entry, bool):
        return entry
    if isinstance(entry, list) and entry and all(isinstance(g, int) and not isinstance(g, bool) for g in entry):
        return tuple(entry)
    return None


def read_index(path: Path) -> list[dict]:
    """The segments of a create_data index JSON, checked: {"segment", "timestamps", "row_groups"} each,
    no segment or timestamp listed twice; DataFormatError naming the file otherwise."""
    try:
        header = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise DataFormatError(path, f"not a readable JSON index ({error}); rerun tools/create_data.py") from None
    if not isinstance(header, dict) or header.get("format") != INDEX_FORMAT or header.get("version") != INDEX_VERSION:
        raise DataFormatError(path, f"expected {INDEX_FORMAT} version {INDEX_VERSION}; rerun tools/create_data.py")
    segments, seen = header.get("segments"), set()
    for k, entry in enumerate(segments if isinstance(segments, list) else [None]):
        try:
            name, stamps, groups = str(entry["segment"]), list(entry["timestamps"]), list(entry["row_groups"])
            ok = (len(stamps) == len(groups) and all(isinstance(v, int) for v in stamps)
                  and all(row_groups_of(g) is not None for g in groups))
        except (TypeError, KeyError):
            ok = False
        if not ok:
            raise DataFormatError(path, f"segments[{k}]: expected {{segment, timestamps, row_groups}} with the "
                                        "row group (an integer, or a list of them) of each integer timestamp")
        if name in seen or len(set(stamps)) < len(stamps):
            raise DataFormatError(path, f"segment {name!r} or one of its timestamps is listed twice")
        seen.add(name)
    return segments


def waymo_type_ids(class_names) -> tuple[np.ndarray, list[str]]:
    """(int64 [C]: the Waymo type of each class name, matched in any case, KITTI's Car as Vehicle (TYPE_ALIASES),
    0 (TYPE_UNKNOWN) for a name that is no Waymo type; those names, in class order)."""
    numbers = {name.lower(): i for i, name in WAYMO_TYPES.items() if i}
    lowered = [TYPE_ALIASES.get(str(c).lower(), str(c).lower()) for c in class_names]
    ids = np.array([numbers.get(name, 0) for name in lowered], np.int64)
    return ids, [str(c) for c, i in zip(class_names, ids.tolist(), strict=True) if i == 0]


def write_box_predictions(path: Path, segment: str, frames: list[tuple[int, dict]], class_names,
                          poses: dict[int, np.ndarray] | None = None) -> Path:
    """One parquet file in the v2 ``lidar_box`` layout (plus a ``score`` column) of a segment's detections:
    frames [(timestamp, {"boxes" [K, 7 (+2)], "scores" [K], "labels" 1..K (, "track_ids" [K])})]; boxes with
    vehicle-frame velocities (vx, vy) also fill ``speed.x`` / ``speed.y`` (when every frame's boxes have them),
    turned into world axes by poses {timestamp: world_from_vehicle [4, 4]}, which they then need. The object id
    (``key.laser_object_id``) is the track id where the frame has them (a tracking submission's convention),
    else ``pred_<timestamp>_<k>``, unique per box. Labels name `class_names`, whose Waymo types
    `waymo_type_ids` gives."""
    import pyarrow as pa

    type_ids, _ = waymo_type_ids(class_names)
    rows: dict[str, list] = {SEGMENT: [], TIMESTAMP: [], OBJECT_ID: []}
    fields = ("box.center.x", "box.center.y", "box.center.z", "box.size.x", "box.size.y", "box.size.z", "box.heading")
    widths = {np.shape(pred["boxes"])[-1] for _, pred in frames if len(pred["scores"])}
    if widths == {9}:
        fields += ("speed.x", "speed.y")
    for name in (*fields, "type", "score"):
        rows[f"{BOX}.{name}"] = []
    for timestamp, pred in frames:
        count = len(pred["scores"])
        boxes = np.asarray(pred["boxes"], np.float64).reshape(count, -1) if count else np.zeros((0, 7))
        if "speed.x" in fields:
            boxes = turn_velocities(boxes, pose_of(path, poses, timestamp)[:3, :3])
        tracks = pred.get("track_ids")
        for k, (box, score, label) in enumerate(zip(boxes, pred["scores"], pred["labels"], strict=True)):
            rows[SEGMENT].append(segment)
            rows[TIMESTAMP].append(int(timestamp))
            rows[OBJECT_ID].append(f"pred_{timestamp}_{k}" if tracks is None else str(int(tracks[k])))
            for j, name in enumerate(fields):
                rows[f"{BOX}.{name}"].append(float(box[j]))
            rows[f"{BOX}.type"].append(int(type_ids[int(label) - 1]))
            rows[f"{BOX}.score"].append(float(score))
    table = pa.table({k: pa.array(v, pa.int64() if k == TIMESTAMP else pa.int8() if k == f"{BOX}.type" else
                                  pa.string() if k in (SEGMENT, OBJECT_ID) else pa.float64())
                      for k, v in rows.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    parquet_module().write_table(table, path)
    return path


def read_box_predictions(path: Path, poses: dict[int, np.ndarray] | None = None) -> dict[int, dict]:
    """A prediction parquet in the v2 ``lidar_box`` layout (write_box_predictions' or a tracker's): per timestamp
    {"boxes" float64 [K, 7] ([K, 9] with ``speed.x`` / ``speed.y`` columns: world axes as in the file, or the
    vehicle frame when poses {timestamp: world_from_vehicle} are given), "types" (names), "scores" [K], "ids" [K]
    (``key.laser_object_id``, str)}; a missing column, a null or non-finite value or an unknown type is a
    DataFormatError naming the file."""
    path = Path(path)
    parquet = open_parquet(path)
    fields = ("box.center.x", "box.center.y", "box.center.z", "box.size.x", "box.size.y", "box.size.z", "box.heading")
    if {f"{BOX}.speed.x", f"{BOX}.speed.y"} <= set(parquet.schema_arrow.names):
        fields += ("speed.x", "speed.y")
    numeric = [TIMESTAMP, *(f"{BOX}.{c}" for c in (*fields, "type", "score"))]
    require_columns(path, parquet, [*numeric, OBJECT_ID])
    table = read_columns(path, parquet, [*numeric, OBJECT_ID])
    stamps, boxes, types, scores = (numeric_column(path, table, TIMESTAMP).astype(np.int64),
                                    np.stack([numeric_column(path, table, f"{BOX}.{c}") for c in fields], 1),
                                    numeric_column(path, table, f"{BOX}.type").astype(np.int64),
                                    numeric_column(path, table, f"{BOX}.score"))
    unknown = sorted(set(types.tolist()) - set(WAYMO_TYPES))
    if unknown:
        raise DataFormatError(path, f"unknown box types {unknown[:5]} (Waymo types: {WAYMO_TYPES})")
    ids = table.column(OBJECT_ID)
    if ids.null_count:
        raise DataFormatError(path, f"{ids.null_count} null values in {OBJECT_ID}")
    ids = np.asarray(ids.to_pylist(), dtype=str).reshape(-1)
    names = np.asarray([WAYMO_TYPES[t] for t in types.tolist()], dtype=str).reshape(-1)
    out = {int(t): {"boxes": boxes[rows], "types": names[rows], "scores": scores[rows], "ids": ids[rows]}
           for t in np.unique(stamps).tolist() for rows in [np.flatnonzero(stamps == t)]}
    if poses is not None and len(fields) == 9:
        for t, frame in out.items():
            frame["boxes"] = turn_velocities(frame["boxes"], pose_of(path, poses, t)[:3, :3].T)
    return out
