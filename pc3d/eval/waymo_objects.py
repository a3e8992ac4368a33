"""Waymo ``Objects`` protobuf files (``metrics_pb2.Objects``, serialised: the "*.bin" files), read and written
without TensorFlow or the waymo-open-dataset package.

They are what Waymo's own evaluators read (``compute_detection_metrics_main pd.bin gt.bin``, and the tracking
one) and what the leaderboard's ``create_submission`` packs. The messages are built at run time from a descriptor
of the fields pc3d uses, numbered as in waymo_open_dataset's ``protos/metrics.proto`` and ``label.proto``;
protobuf serialises and parses them, and skips every other field of a file it reads (field numbers):

- Objects: objects (1, repeated Object);
- Object: object (1, Label), score (2, float, default 1), overlap_with_nlz (3), context_name (4),
  frame_timestamp_micros (5), camera_name (6);
- Label: box (1, Box), metadata (2, Metadata), type (3), id (4), detection_difficulty_level (5),
  tracking_difficulty_level (6), num_lidar_points_in_box (7);
- Box: center_x (1), center_y (2), center_z (3), width (4), length (5), height (6), heading (7), doubles;
- Metadata: speed_x (1), speed_y (2), doubles.

Conventions: boxes are pc3d's x, y, z, dx, dy, dz, heading with dx = length and dy = width, in the vehicle frame
(Waymo's own frame: nothing is converted); types 1 vehicle, 2 pedestrian, 3 sign, 4 cyclist (0 unknown);
difficulty levels 0 unset, 1, 2. A frame is (context_name, frame_timestamp_micros): the v2 parquet's
``key.segment_context_name`` and ``key.frame_timestamp_micros``. ``camera_name`` marks camera objects; pc3d's
boxes are LiDAR boxes, so a file with camera objects is refused rather than merged by frame.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path

import numpy as np

from pc3d.errors import DataFormatError

TYPE_NAMES = {0: "unknown", 1: "vehicle", 2: "pedestrian", 3: "sign", 4: "cyclist"}
TYPE_IDS = {name: i for i, name in TYPE_NAMES.items()}
BOX_FIELDS = ("center_x", "center_y", "center_z", "length", "width", "height", "heading")  # pc3d's box order

# message: [(field, number, scalar type or message name)], every field optional but Objects.objects (repeated);
# a nested message is "Outer.Inner", listed after its outer one
_DOUBLE, _FLOAT, _INT64, _INT32, _BOOL, _STRING, _MESSAGE = 1, 2, 3, 5, 8, 9, 11  # FieldDescriptorProto.Type
_OPTIONAL, _REPEATED = 1, 3  # FieldDescriptorProto.Label
_MESSAGES = {
    "Label": [("box", 1, "Label.Box"), ("metadata", 2, "Label.Metadata"), ("type", 3, _INT32), ("id", 4, _STRING),
              ("detection_difficulty_level", 5, _INT32), ("tracking_difficulty_level", 6, _INT32),
              ("num_lidar_points_in_box", 7, _INT32)],
    "Label.Box": [("center_x", 1, _DOUBLE), ("center_y", 2, _DOUBLE), ("center_z", 3, _DOUBLE),
                  ("width", 4, _DOUBLE), ("length", 5, _DOUBLE), ("height", 6, _DOUBLE), ("heading", 7, _DOUBLE)],
    "Label.Metadata": [("speed_x", 1, _DOUBLE), ("speed_y", 2, _DOUBLE)],
    "Object": [("object", 1, "Label"), ("score", 2, _FLOAT), ("overlap_with_nlz", 3, _BOOL),
               ("context_name", 4, _STRING), ("frame_timestamp_micros", 5, _INT64), ("camera_name", 6, _INT32)],
    "Objects": [("objects", 1, "Object")],
}
_PACKAGE = "waymo.open_dataset"


@cache
def objects_class():
    """The ``Objects`` message class (protobuf, built once from the descriptor above in a private pool)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    proto = descriptor_pb2.FileDescriptorProto(name="pc3d_waymo_objects.proto", package=_PACKAGE, syntax="proto2")
    made: dict[str, descriptor_pb2.DescriptorProto] = {}
    for name, fields in _MESSAGES.items():
        outer, _, inner = name.rpartition(".")
        message = (made[outer].nested_type if outer else proto.message_type).add(name=inner)
        made[name] = message
        for field, number, kind in fields:
            spec = message.field.add(name=field, number=number, label=_OPTIONAL)
            if isinstance(kind, str):
                spec.type, spec.type_name = _MESSAGE, f".{_PACKAGE}.{kind}"
            else:
                spec.type = kind
        if name == "Object":
            message.field[1].default_value = "1"  # score: 1.0 for ground truth, as metrics.proto
        if name == "Objects":
            message.field[0].label = _REPEATED
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.Objects"))


def _type_ids(types, where: str) -> np.ndarray:
    types = np.asarray(types).reshape(-1)
    if types.dtype.kind in "iu":
        ids = types.astype(np.int64)
        bad = sorted(set(ids.tolist()) - set(TYPE_NAMES))
    else:
        names = np.char.lower(types.astype(str))
        bad = sorted(set(names.tolist()) - set(TYPE_IDS))
        ids = np.array([TYPE_IDS.get(n, -1) for n in names.tolist()], np.int64)
    if bad:
        raise DataFormatError(where, f"unknown Waymo object types {bad[:5]} (expected {TYPE_NAMES})")
    return ids


def write_objects(path: str | os.PathLike, frames: Iterable[Mapping]) -> Path:
    """Write an Objects file of `frames`, each ``{"context_name": str, "timestamp": int (µs), "boxes" [K, 7 (+2)],
    "types" [K] (names, any case, or type ids)}`` with optional ``"scores"`` [K] (predictions; without, the field
    stays unset: 1.0, a ground truth's), ``"ids"`` [K] (object / track ids, written as strings),
    ``"num_points"``, ``"difficulty"``, ``"tracking_difficulty"`` [K] (ground truth). Boxes of 9 columns also
    fill ``metadata.speed_x / speed_y``. Written atomically (a temporary file, then renamed); returns the path."""
    path = Path(path)
    objects = objects_class()()
    for n, frame in enumerate(frames):
        where = f"{path} (frame {n}: {frame.get('context_name')} {frame.get('timestamp')})"
        count = len(frame["types"])
        boxes = np.asarray(frame["boxes"], np.float64)
        boxes = boxes.reshape(count, -1) if count else boxes.reshape(0, 7)
        if boxes.shape[1] not in (7, 9):
            raise DataFormatError(where, f"boxes must be [K, 7] or [K, 9], got {boxes.shape}")
        if not np.isfinite(boxes).all():
            raise DataFormatError(where, f"box {int(np.flatnonzero(~np.isfinite(boxes).all(1))[0])} is not finite")
        types = _type_ids(frame["types"], where)
        columns = {key: np.asarray(frame[key]).reshape(-1) for key in
                   ("scores", "ids", "num_points", "difficulty", "tracking_difficulty") if frame.get(key) is not None}
        for key, values in columns.items():
            if len(values) != count:
                raise DataFormatError(where, f"{len(values)} {key} for {count} boxes")
        context, timestamp = str(frame["context_name"]), int(frame["timestamp"])
        for k in range(count):
            o = objects.objects.add(context_name=context, frame_timestamp_micros=timestamp)
            label, box = o.object, o.object.box
            for field, value in zip(BOX_FIELDS, boxes[k, :7].tolist(), strict=True):
                setattr(box, field, value)
            if boxes.shape[1] == 9:
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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(objects.SerializeToString())
    os.replace(tmp, path)
    return path


def prediction_frames(per_segment: Mapping[str, list], class_names) -> Iterable[dict]:
    """write_objects' frames of detections ``{segment: [(timestamp, {"boxes" [K, 7 (+2)], "scores", "labels" 1..K
    (, "track_ids")})]}``, labels naming `class_names`; ids are the track ids where a frame has them."""
    names = np.asarray([str(c) for c in class_names])
    for segment, frames in per_segment.items():
        for timestamp, pred in frames:
            labels = np.asarray(pred["labels"], np.int64).reshape(-1)
            tracks = pred.get("track_ids")
            yield {"context_name": segment, "timestamp": timestamp, "boxes": pred["boxes"], "scores": pred["scores"],
                   "types": names[labels - 1] if len(labels) else np.zeros(0, str),
                   "ids": None if tracks is None else np.asarray(tracks, np.int64)}


def read_objects(path: str | os.PathLike) -> dict[tuple[str, int], dict]:
    """The objects of an Objects file by frame, ``{(context_name, timestamp): {"boxes" float64 [K, 7] ([K, 9] when
    any object of the file has speeds), "types" [K] (lower-case names), "scores" float64 [K], "ids" [K] (str),
    "num_points" int64 [K], "difficulty" int64 [K], "tracking_difficulty" int64 [K], "overlap_with_nlz" bool [K]}}``,
    frames in file order. A file protobuf cannot parse, a camera object, an unknown type or a non-finite box value
    is a DataFormatError naming the file."""
    path = Path(path)
    objects = objects_class()()
    try:
        objects.ParseFromString(path.read_bytes())
    except FileNotFoundError:
        raise DataFormatError(path, "no such file") from None
    except Exception as error:  # google.protobuf.message.DecodeError, from the C++ or the Python runtime
        raise DataFormatError(path, f"not a Waymo Objects protobuf ({error})") from None
    count = len(objects.objects)
    boxes = np.zeros((count, 9))
    types, num_points, difficulty, tracking = (np.zeros(count, np.int64) for _ in range(4))
    scores, nlz = np.zeros(count), np.zeros(count, bool)
    ids, keys, cameras = [], [], 0
    for i, o in enumerate(objects.objects):
        label, box = o.object, o.object.box
        boxes[i] = (box.center_x, box.center_y, box.center_z, box.length, box.width, box.height, box.heading,
                    label.metadata.speed_x, label.metadata.speed_y)
        types[i], scores[i], nlz[i] = label.type, o.score, o.overlap_with_nlz
        num_points[i], difficulty[i] = label.num_lidar_points_in_box, label.detection_difficulty_level
        tracking[i] = label.tracking_difficulty_level
        ids.append(label.id)
        keys.append((o.context_name, o.frame_timestamp_micros))
        cameras += o.HasField("camera_name")
    if cameras:
        raise DataFormatError(path, f"{cameras} camera objects (camera_name set): pc3d reads 3D LiDAR objects only")
    if not np.isfinite(boxes).all():
        raise DataFormatError(path, f"object {int(np.flatnonzero(~np.isfinite(boxes).all(1))[0])}: non-finite box")
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
