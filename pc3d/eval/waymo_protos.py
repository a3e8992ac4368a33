"""The Waymo Open Dataset messages pc3d reads and writes, built at run time from their field numbers (no
TensorFlow, no waymo-open-dataset package): protobuf serialises and parses them, and skips every field of a file
that is not listed here. Numbers from waymo_open_dataset's ``label.proto``, ``dataset.proto`` and
``protos/{metrics,segmentation_metrics,submission,segmentation_submission}.proto``; every field optional unless
marked repeated:

- Objects: objects (1, repeated Object);
- Object: object (1, Label), score (2, float, default 1), overlap_with_nlz (3), context_name (4),
  frame_timestamp_micros (5), camera_name (6);
- Label: box (1, Box), metadata (2, Metadata), type (3), id (4), detection_difficulty_level (5),
  tracking_difficulty_level (6), num_lidar_points_in_box (7);
- Label.Box: center_x (1), center_y (2), center_z (3), width (4), length (5), height (6), heading (7), doubles;
- Label.Metadata: speed_x (1), speed_y (2), doubles;
- SegmentationFrameList: frames (1, repeated SegmentationFrame);
- SegmentationFrame: segmentation_labels (1, repeated Laser), context_name (2), frame_timestamp_micros (3);
- Laser: name (1; TOP = 1), ri_return1 (2, RangeImage), ri_return2 (3, RangeImage);
- RangeImage: segmentation_label_compressed (6, bytes: a zlib-compressed serialised MatrixInt32);
- MatrixInt32: data (1, repeated packed int32), shape (2, MatrixShape); MatrixShape: dims (1, repeated int32);
- Submission (detection / tracking): task (1), unique_method_name (2), authors (3, repeated), affiliation (4),
  description (5), method_link (6), number_past_frames_exclude_current (9), number_future_frames_exclude_current
  (10), inference_results (11, Objects), sensor_type (12), account_name (13), object_types (14, repeated),
  latency_second (15, float), docker_image_source (16);
- SemanticSegmentationSubmission: account_name (1), unique_method_name (2), authors (3, repeated), affiliation (4),
  description (5), method_link (6), sensor_type (7), number_past_frames_exclude_current (8),
  number_future_frames_exclude_current (9), inference_results (10, SegmentationFrameList).

Enums are read and written as their int32 numbers (the same bytes on the wire).
"""
from __future__ import annotations

from functools import cache

_DOUBLE, _FLOAT, _INT64, _INT32, _BOOL, _STRING, _MESSAGE, _BYTES = 1, 2, 3, 5, 8, 9, 11, 12  # FieldDescriptor.Type
_OPTIONAL, _REPEATED = 1, 3  # FieldDescriptorProto.Label
_PACKAGE = "waymo.open_dataset"

# message: [(field, number, scalar type or message name[, "repeated"])]; a nested message is "Outer.Inner",
# listed after its outer one
MESSAGES = {
    "Label": [("box", 1, "Label.Box"), ("metadata", 2, "Label.Metadata"), ("type", 3, _INT32), ("id", 4, _STRING),
              ("detection_difficulty_level", 5, _INT32), ("tracking_difficulty_level", 6, _INT32),
              ("num_lidar_points_in_box", 7, _INT32)],
    "Label.Box": [("center_x", 1, _DOUBLE), ("center_y", 2, _DOUBLE), ("center_z", 3, _DOUBLE),
                  ("width", 4, _DOUBLE), ("length", 5, _DOUBLE), ("height", 6, _DOUBLE), ("heading", 7, _DOUBLE)],
    "Label.Metadata": [("speed_x", 1, _DOUBLE), ("speed_y", 2, _DOUBLE)],
    "Object": [("object", 1, "Label"), ("score", 2, _FLOAT), ("overlap_with_nlz", 3, _BOOL),
               ("context_name", 4, _STRING), ("frame_timestamp_micros", 5, _INT64), ("camera_name", 6, _INT32)],
    "Objects": [("objects", 1, "Object", "repeated")],
    "MatrixShape": [("dims", 1, _INT32, "repeated")],
    "MatrixInt32": [("data", 1, _INT32, "repeated"), ("shape", 2, "MatrixShape")],
    "RangeImage": [("segmentation_label_compressed", 6, _BYTES)],
    "Laser": [("name", 1, _INT32), ("ri_return1", 2, "RangeImage"), ("ri_return2", 3, "RangeImage")],
    "SegmentationFrame": [("segmentation_labels", 1, "Laser", "repeated"), ("context_name", 2, _STRING),
                          ("frame_timestamp_micros", 3, _INT64)],
    "SegmentationFrameList": [("frames", 1, "SegmentationFrame", "repeated")],
    "Submission": [("task", 1, _INT32), ("unique_method_name", 2, _STRING), ("authors", 3, _STRING, "repeated"),
                   ("affiliation", 4, _STRING), ("description", 5, _STRING), ("method_link", 6, _STRING),
                   ("number_past_frames_exclude_current", 9, _INT32),
                   ("number_future_frames_exclude_current", 10, _INT32), ("inference_results", 11, "Objects"),
                   ("sensor_type", 12, _INT32), ("account_name", 13, _STRING), ("object_types", 14, _INT32, "repeated"),
                   ("latency_second", 15, _FLOAT), ("docker_image_source", 16, _STRING)],
    "SemanticSegmentationSubmission": [
        ("account_name", 1, _STRING), ("unique_method_name", 2, _STRING), ("authors", 3, _STRING, "repeated"),
        ("affiliation", 4, _STRING), ("description", 5, _STRING), ("method_link", 6, _STRING),
        ("sensor_type", 7, _INT32), ("number_past_frames_exclude_current", 8, _INT32),
        ("number_future_frames_exclude_current", 9, _INT32), ("inference_results", 10, "SegmentationFrameList")],
}


@cache
def _pool():
    from google.protobuf import descriptor_pb2, descriptor_pool

    proto = descriptor_pb2.FileDescriptorProto(name="pc3d_waymo.proto", package=_PACKAGE, syntax="proto2")
    made: dict[str, descriptor_pb2.DescriptorProto] = {}
    for name, fields in MESSAGES.items():
        outer, _, inner = name.rpartition(".")
        message = (made[outer].nested_type if outer else proto.message_type).add(name=inner)
        made[name] = message
        for field, number, kind, *repeated in fields:
            spec = message.field.add(name=field, number=number, label=_REPEATED if repeated else _OPTIONAL)
            if isinstance(kind, str):
                spec.type, spec.type_name = _MESSAGE, f".{_PACKAGE}.{kind}"
            else:
                spec.type = kind
            if repeated and kind == _INT32 and field == "data":
                spec.options.packed = True  # MatrixInt32.data is [packed = true]
    made["Object"].field[1].default_value = "1"  # score: 1.0 for ground truth, as metrics.proto says
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return pool


@cache
def message_class(name: str):
    """The protobuf class of a message of MESSAGES (``"Objects"``, ``"SegmentationFrameList"``, ...)."""
    from google.protobuf import message_factory

    return message_factory.GetMessageClass(_pool().FindMessageTypeByName(f"{_PACKAGE}.{name}"))


def parse(name: str, data: bytes, path) -> object:
    """A `name` message parsed from `data`; DataFormatError naming `path` when protobuf cannot."""
    from pc3d.errors import DataFormatError

    message = message_class(name)()
    try:
        message.ParseFromString(data)
    except Exception as error:  # google.protobuf.message.DecodeError, from the C++ or the Python runtime
        raise DataFormatError(path, f"not a Waymo {name} protobuf ({error})") from None
    return message
