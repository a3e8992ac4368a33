"""SemanticKITTI-MOS submission writer: per-point moving flags -> ``.label`` files of the benchmark.

Layout (the semantic-kitti-api's ``evaluate_mos.py`` and the LiDAR-MOS CodaLab benchmark):
``<out_dir>/sequences/SS/predictions/NNNNNN.label``, uint32 little endian, one id per point of the raw
scan in file order: 9 (static) or 251 (moving), instance bits 0. The api maps them through
semantic-kitti-mos.yaml (9 -> static, 251 -> moving); a file with another point count is rejected, so
the flags must cover every point of the scan (a MOS prediction's ``moving`` covers the current scan).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from os import PathLike
from pathlib import Path

import numpy as np

from pc3d.errors import DataFormatError

STATIC_ID, MOVING_ID = 9, 251


def mos_label_ids(moving: np.ndarray, frame: str | None = None) -> np.ndarray:
    """uint32 [N]: 251 where moving is 1 (or True), 9 where it is 0; DataFormatError naming the frame for
    any other value."""
    flags = np.asarray(moving)
    if flags.ndim != 1 or flags.dtype.kind not in "biu":
        raise DataFormatError(frame, f"moving must be 0 / 1 integers [N], got {flags.dtype} {flags.shape}")
    if flags.size and not np.isin(flags, (0, 1)).all():
        raise DataFormatError(frame, f"moving must be 0 or 1, got values {np.unique(flags)[:5].tolist()}")
    return np.where(flags.astype(bool), np.uint32(MOVING_ID), np.uint32(STATIC_ID)).astype(np.uint32)


def mos_label_path(out_dir: str | PathLike, frame_id: str) -> Path:
    """``<out_dir>/sequences/SS/predictions/NNNNNN.label`` of frame "SS/NNNNNN"."""
    seq, _, name = str(frame_id).rpartition("/")
    if not seq or not name:
        raise DataFormatError(frame_id, "frame_id must be 'SS/NNNNNN' to write SemanticKITTI-MOS predictions")
    return Path(out_dir) / "sequences" / seq / "predictions" / f"{name}.label"


def write_mos_predictions(predictions: Iterable[Mapping], out_dir: str | PathLike) -> Path:
    """Write each prediction {"frame_id": "SS/NNNNNN", "moving": 0 / 1 [N]} as its ``.label`` file;
    returns ``<out_dir>/sequences``."""
    for pred in predictions:
        frame = str(pred["frame_id"])
        path = mos_label_path(out_dir, frame)
        ids = mos_label_ids(pred["moving"], frame)
        path.parent.mkdir(parents=True, exist_ok=True)
        ids.astype("<u4").tofile(path)
    return Path(out_dir) / "sequences"
