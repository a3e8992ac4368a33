"""Waymo ``Objects`` protobuf files (``metrics_pb2.Objects``, serialised: the "*.bin" files), read and written
without TensorFlow or the waymo-open-dataset package.

They are what Waymo's own evaluators read (``compute_detection_metrics_main pd.bin gt.bin``, and the tracking
one) and what the leaderboard's ``create_submission`` packs. The messages and their field numbers are listed in
pc3d.eval.waymo_protos.

Conventions: boxes are pc3d's x, y, z, dx, dy, dz, heading with dx = length and dy = width, in the vehicle frame
(Waymo's own frame: nothing is converted); types 1 vehicle, 2 pedestrian, 3 sign, 4 cyclist (0 unknown);
difficulty levels 0 unset, 1, 2. A frame is (context_name, frame_timestamp_micros): the v2 parquet's
``key.segment_context_name`` and ``key.frame_timestamp_micros``. ``camera_name`` marks camera objects; pc3d's
boxes are LiDAR boxes, so a file with camera objects is refused rather than merged by frame.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from pc3d.errors import DataFormatError
from pc3d.eval.waymo import TYPE_IDS
from pc3d.eval.waymo_protos import message_class, parse

TYPE_NAMES = {0: "unknown", **TYPE_IDS}  # label.proto's Label.Type
TYPE_NUMBERS = {name: i for i, name in TYPE_NAMES.items()}
BOX_FIELDS = ("center_x", "center_y", "center_z", "length", "width", "height", "heading")  # pc3d's box order


def _type_ids(types, where: str) -> np.ndarray:
    types = np.asarray(types).reshape(-1)
    if types.dtype.kind in "iu":
        ids = types.astype(np.int64)
        bad = sorted(set(ids.tolist()) - set(TYPE_NAMES))
    else:
        names = np.char.lower(types.astype(str))
        bad = sorted(set(names.tolist()) - set(TYPE_NUMBERS))
        ids = np.array([TYPE_NUMBERS.get(n, -1) for n in names.tolist()], np.int64)
    if bad:
        raise DataFormatError(where, f"unknown Waymo object types {bad[:5]} (expected {TYPE_NAMES})")
    return ids


def write_objects(path: str | os.PathLike, frames: Iterable[Mapping]) -> Path:
    """Write an Objects file of `frames`, each ``{"context_name": str, "timestamp": int (µs), "boxes" [K, 7 (+2)],
    "types" [K] (names, any case, or type ids)}`` with optional ``"scores"`` [K] (predictions; without, the field
    stays unset: 1.0, a ground truth's), ``"ids"`` [K] (object / track ids, written as strings),
    ``"num_points"``, ``"difficulty"``, ``"tracking_difficulty"`` [K] (ground truth), ``"overlap_with_nlz"`` [K]
    (predictions in a no-label zone: an unmatched one is not a false positive). Boxes of 9 columns also
    fill ``metadata.speed_x / speed_y`` (not where both speeds are NaN: unknown, as `read_objects` gives them).
    Written atomically (a temporary file, then renamed); returns the path."""
    path = Path(path)
    objects = message_class("Objects")()
    for n, frame in enumerate(frames):
        where = f"{path} (frame {n}: {frame.get('context_name')} {frame.get('timestamp')})"
        count = len(frame["types"])
        boxes = np.asarray(frame["boxes"], np.float64)
        boxes = boxes.reshape(count, -1) if count else boxes.reshape(0, 7)
        if boxes.shape[1] not in (7, 9):
            raise DataFormatError(where, f"boxes must be [K, 7] or [K, 9], got {boxes.shape}")
        speed_known = np.isfinite(boxes[:, 7:]).all(1)  # both NaN: unknown, left unset (read back as NaN)
        bad = ~np.isfinite(boxes[:, :7]).all(1) | ~(speed_known | np.isnan(boxes[:, 7:]).all(1))
        if bad.any():
            raise DataFormatError(where, f"box {int(np.flatnonzero(bad)[0])} is not finite")
        types = _type_ids(frame["types"], where)
        columns = {key: np.asarray(frame[key]).reshape(-1) for key in
                   ("scores", "ids", "num_points", "difficulty", "tracking_difficulty", "overlap_with_nlz")
                   if frame.get(key) is not None}
        for key, values in columns.items():
            if len(values) != count:
                raise DataFormatError(where, f"{len(values)} {key} for {count} boxes")
        context, timestamp = str(frame["context_name"]), int(frame["timestamp"])
        for k in range(count):
            o = objects.objects.add(context_name=context, frame_timestamp_micros=timestamp)
            label, box = o.object, o.object.box
            for field, value in zip(BOX_FIELDS, boxes[k, :7].tolist(), strict=True):
                setattr(box, field, value)
            if boxes.shape[1] == 9 and speed_known[k]:
                label.metadata.speed_x, label.metadata.speed_y = boxes[k, 7:9].tolist()
            label.type = int(types[k])
            if "scores" in columns:
                o.score = float(columns["scores"][k])
            if "ids" in columns:
                label.id = str(columns["ids"][k])
            if "num_points" in columns:
                label.num_lidar_points_in_box = int(columns["num_points"][k])
            if "difficulty" in columns:
                label.detection_difficulty_level = int(columns["difficulty"][k])
            if "tracking_difficulty" in columns:
                label.tracking_difficulty_level = int(columns["tracking_difficulty"][k])
            if "overlap_with_nlz" in columns and columns["overlap_with_nlz"][k]:
                o.overlap_with_nlz = True
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(objects.SerializeToString())
    os.replace(tmp, path)
    return path


def prediction_frames(per_segment: Mapping[str, list], class_names,
                      poses: Mapping[str, Mapping[int, np.ndarray] | None] | None = None) -> Iterable[dict]:
    """write_objects' frames of detections ``{segment: [(timestamp, {"boxes" [K, 7 (+2)], "scores", "labels" 1..K
    (, "track_ids")})]}``, labels naming `class_names`; ids are the track ids where a frame has them. Vehicle-frame
    velocities (boxes of 9 columns) are turned into world axes, the axes of Waymo's speeds, by poses
    ``{segment: {timestamp: world_from_vehicle}}``, which they then need (a DataFormatError without). Types are
    those of `waymo_type_ids` (KITTI's Car is Vehicle); a class that names no Waymo type is written as TYPE_UNKNOWN,
    which Waymo's evaluators skip, with a warning naming it and counting its boxes."""
    from pc3d.data.waymo_parquet import pose_of, turn_velocities, waymo_type_ids

    types, unmapped = waymo_type_ids(class_names)
    if unmapped:
        missed = sum(int(np.isin(np.asarray(pred["labels"], np.int64), np.flatnonzero(types == 0) + 1).sum())
                     for frames in per_segment.values() for _, pred in frames)
        warnings.warn(f"classes {unmapped} name no Waymo object type: their {missed} box(es) are written as "
                      "TYPE_UNKNOWN, which Waymo's evaluators skip", stacklevel=2)

    def frame(segment: str, timestamp: int, pred: dict) -> dict:
        labels = np.asarray(pred["labels"], np.int64).reshape(-1)
        tracks = pred.get("track_ids")
        boxes = np.asarray(pred["boxes"], np.float64)
        if boxes.ndim == 2 and boxes.shape[1] >= 9 and len(boxes):
            boxes = turn_velocities(boxes, pose_of(segment, (poses or {}).get(segment), timestamp)[:3, :3])
        return {"context_name": segment, "timestamp": timestamp, "boxes": boxes, "scores": pred["scores"],
                "types": types[labels - 1], "ids": None if tracks is None else np.asarray(tracks, np.int64)}

    return (frame(segment, timestamp, pred) for segment, frames in per_segment.items() for timestamp, pred in frames)


def read_objects(path: str | os.PathLike) -> dict[tuple[str, int], dict]:
    """The objects of an Objects file by frame, ``{(context_name, timestamp): {"boxes" float64 [K, 7] ([K, 9] when
    any object of the file has speeds; an object without them gets NaN speeds, which AVE skips), "types" [K]
    (lower-case names), "scores" float64 [K], "ids" [K] (str), "num_points" int64 [K], "difficulty" int64 [K],
    "tracking_difficulty" int64 [K], "overlap_with_nlz" bool [K]}}``, frames in file order. A file protobuf cannot
    parse, a camera object, an unknown type or a non-finite box value is a DataFormatError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, "no such file")
    objects = parse("Objects", path.read_bytes(), path)
    count = len(objects.objects)
    boxes = np.zeros((count, 9))
    types, num_points, difficulty, tracking = (np.zeros(count, np.int64) for _ in range(4))
    scores, nlz = np.zeros(count), np.zeros(count, bool)
    ids, keys, cameras = [], [], 0
    for i, o in enumerate(objects.objects):
        label, box = o.object, o.object.box
        speed = (label.metadata.speed_x, label.metadata.speed_y) if label.HasField("metadata") else (np.nan, np.nan)
        boxes[i] = (box.center_x, box.center_y, box.center_z, box.length, box.width, box.height, box.heading, *speed)
        types[i], scores[i], nlz[i] = label.type, o.score, o.overlap_with_nlz
        num_points[i], difficulty[i] = label.num_lidar_points_in_box, label.detection_difficulty_level
        tracking[i] = label.tracking_difficulty_level
        ids.append(label.id)
        keys.append((o.context_name, o.frame_timestamp_micros))
        cameras += o.HasField("camera_name")
    if cameras:
        raise DataFormatError(path, f"{cameras} camera objects (camera_name set): pc3d reads 3D LiDAR objects only")
    finite = np.isfinite(boxes[:, :7]).all(1) & ~np.isinf(boxes[:, 7:]).any(1)
    if not finite.all():
        raise DataFormatError(path, f"object {int(np.flatnonzero(~finite)[0])}: non-finite box")
    unknown = sorted(set(types.tolist()) - set(TYPE_NAMES))
    if unknown:
        raise DataFormatError(path, f"unknown object types {unknown[:5]} (expected {TYPE_NAMES})")
    with_speed = any(o.object.HasField("metadata") for o in objects.objects)
    names = np.array([TYPE_NAMES[t] for t in types.tolist()], dtype="<U10")
    ids_array = np.array(ids, dtype=str)
    rows_of: dict[tuple[str, int], list[int]] = {}
    for i, key in enumerate(keys):
        rows_of.setdefault(key, []).append(i)
    return {key: {"boxes": boxes[rows, :9 if with_speed else 7], "types": names[rows], "scores": scores[rows],
                  "ids": ids_array[rows], "num_points": num_points[rows], "difficulty": difficulty[rows],
                  "tracking_difficulty": tracking[rows], "overlap_with_nlz": nlz[rows]}
            for key, rows in ((k, np.asarray(r, np.int64)) for k, r in rows_of.items())}
