"""Detections as JSON, one file per frame: the layout `tools/infer.py` writes for every source and `tools/test.py`
writes for ScanNet (whose detection benchmark has no file format of its own).

    {"frame_id": str,
     "frame":    "lidar" (the sensor frame of an outdoor sweep) | "scene" (an indoor scene's aligned frame),
     "boxes":    [[x, y, z, dx, dy, dz, heading (, vx, vy)], ...]   centre and size in metres, heading in
                                                          radians, velocity (m/s) when the model predicts it,
     "scores":   [float, ...],
     "labels":   [int, ...]                               1..K, class_names[label - 1] is the class,
     "names":    [str, ...],
     ...}                                                 extra keys of the writer (infer: "source", and
                                                          "track_ids" [int, ...] with --track)

Values are rounded to 4 decimals (0.1 mm, 1e-4 rad).
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from pc3d.errors import DataFormatError

FRAMES = ("lidar", "scene")


def write_box_json(path: Path, frame_id: str, frame: str, pred: Mapping, class_names: Sequence[str],
                   **extra) -> Path:
    """Write pred {"boxes" [K, 7 (+2)], "scores" [K], "labels" [K] in 1..len(class_names)} to path (folders
    made); boxes of another width, counts that differ or labels out of range are a DataFormatError naming path.
    Returns path."""
    if frame not in FRAMES:
        raise ValueError(f"frame must be one of {FRAMES}, got {frame!r}")
    boxes = np.asarray(pred["boxes"], np.float64)
    boxes = boxes.reshape(0, 7) if boxes.size == 0 else boxes
    if boxes.ndim != 2 or boxes.shape[1] not in (7, 9):
        raise DataFormatError(path, f"boxes must be [K, 7] or [K, 9] (with vx, vy), got {list(boxes.shape)}")
    scores = np.asarray(pred["scores"], np.float64).reshape(-1)
    labels = np.asarray(pred["labels"], np.int64).reshape(-1)
    if not len(boxes) == len(scores) == len(labels):
        raise DataFormatError(path, f"{len(boxes)} boxes, {len(scores)} scores and {len(labels)} labels")
    if labels.size and (labels.min() < 1 or labels.max() > len(class_names)):
        raise DataFormatError(path, f"box labels must be in [1, {len(class_names)}], got "
                                    f"[{labels.min()}, {labels.max()}]")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"frame_id": str(frame_id), "frame": frame, "boxes": np.round(boxes, 4).tolist(),
                                "scores": np.round(scores, 4).tolist(), "labels": labels.tolist(),
                                "names": [class_names[k - 1] for k in labels], **extra}))
    return path


def read_json_object(path: Path) -> dict:
    """The JSON object in path; DataFormatError naming it when it is not a readable JSON object."""
    try:
        payload = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataFormatError(path, f"not a readable JSON file ({type(error).__name__}: {error})") from None
    if not isinstance(payload, dict):
        raise DataFormatError(path, f"expected a JSON object, got {type(payload).__name__}")
    return payload


def read_box_json(path: Path, min_score: float = 0.0) -> dict:
    """{"boxes" float32 [K, 7 (+2)], "scores" [K], "labels" [K] (, "track_ids" [K])} of a file write_box_json wrote,
    the boxes scoring at least min_score; DataFormatError naming the file when it is not one."""
    p = read_json_object(path)
    try:
        scores = np.asarray(p["scores"], np.float32).reshape(-1)
        boxes = np.asarray(p["boxes"], np.float32)
        labels = np.asarray(p["labels"], np.int64).reshape(-1)
        boxes = boxes.reshape(0, 7) if boxes.size == 0 else boxes
        if boxes.ndim != 2 or boxes.shape[1] not in (7, 9):
            raise ValueError(f"boxes of shape {list(boxes.shape)}")
    except (KeyError, TypeError, ValueError) as error:
        raise DataFormatError(path, f"not a tools/infer.py detection file (boxes [K, 7] or [K, 9], scores [K], "
                                    f"labels [K]: {type(error).__name__}: {error})") from None
    if not len(boxes) == len(scores) == len(labels):
        raise DataFormatError(path, f"{len(boxes)} boxes, {len(scores)} scores and {len(labels)} labels")
    keep = scores >= min_score
    out = {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}
    if "track_ids" in p:
        tracks = np.asarray(p["track_ids"]).reshape(-1)
        if len(tracks) != len(boxes) or (tracks.size and tracks.dtype.kind not in "iu"):
            raise DataFormatError(path, f"track_ids must be {len(boxes)} integers, one per box")
        out["track_ids"] = tracks.astype(np.int64)[keep]
    return out
