"""SemanticKITTI submission writer: predicted train ids -> raw label ids in ``.label`` files.

Layout (the semantic-kitti-api's): ``<out_dir>/sequences/SS/predictions/NNNNNN.label``, uint32 little
endian, one raw semantic id per point of the scan (instance bits 0), raw = learning_map_inv[train id].
The predictions must cover every point of the original scan, in file order: evaluate without
RangeCrop / shuffling transforms and with ``unmapped="nearest"`` so points outside the grid get a label.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from os import PathLike
from pathlib import Path

import numpy as np

from pc3d.errors import DataFormatError


def inverse_lookup(learning_map_inv: Mapping[int, int]) -> np.ndarray:
    """uint32 [max train id + 1]: raw id of every train id."""
    lut = np.zeros(max(int(k) for k in learning_map_inv) + 1, np.uint32)
    for train, raw in learning_map_inv.items():
        lut[int(train)] = int(raw)
    return lut


def write_semantickitti_labels(predictions: Iterable[Mapping], out_dir: str | PathLike,
                               learning_map_inv: Mapping[int, int] | None = None) -> Path:
    """Write each prediction {"frame_id": "SS/NNNNNN", "pred_labels": int [N] train ids} as a ``.label``
    file; learning_map_inv default: pc3d/data/learning_maps/semantic-kitti.yaml. Returns out_dir."""
    if learning_map_inv is None:
        from pc3d.data.learning_maps import LEARNING_MAPS, load_learning_map

        learning_map_inv = load_learning_map(str(LEARNING_MAPS / "semantic-kitti.yaml"))["learning_map_inv"]
    lut = inverse_lookup(learning_map_inv)
    out_dir = Path(out_dir)
    for pred in predictions:
        frame = str(pred["frame_id"])
        seq, _, name = frame.rpartition("/")
        if not seq or not name:
            raise DataFormatError(frame, "frame_id must be 'SS/NNNNNN' to write SemanticKITTI predictions")
        labels = np.asarray(pred["pred_labels"]).astype(np.int64)
        if labels.size and (labels.min() < 0 or labels.max() >= len(lut)):
            raise DataFormatError(frame, f"train ids must be in [0, {len(lut)}), got [{labels.min()}, {labels.max()}]")
        path = out_dir / "sequences" / seq / "predictions" / f"{name}.label"
        path.parent.mkdir(parents=True, exist_ok=True)
        lut[labels].astype("<u4").tofile(path)
    return out_dir
