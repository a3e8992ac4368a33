"""How a segmentation dataset names, colours and writes per-point predictions (its submission format).

A dataset class with per-point labels offers ``label_space(**config) -> LabelSpace`` (a classmethod: no
dataset root needed), which ``tools/infer.py`` and ``tools/test.py`` write through, so each format has
one writer, and ``tools/visualize.py`` reads back through (one reader).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pc3d.data.io import load_npy
from pc3d.errors import DataFormatError


@dataclass
class LabelSpace:
    """names [K] of the train ids; colors float32 [K, 3] RGB in 0..1 (None: a generated palette);
    write(frame_id, train_ids int64 [N], out_dir) -> the written file, in the dataset's submission layout;
    read(path, count) -> the train ids int64 [count] of a file `write` wrote (-1 where the file holds an id
    with no train id: unlabelled), a DataFormatError naming it when it is not one of `count` labels."""

    names: list[str]
    write: Callable[[str, np.ndarray, Path], Path]
    read: Callable[[Path, int], np.ndarray]
    colors: np.ndarray | None = None


def checked_ids(path: Path, ids: np.ndarray, count: int, num_classes: int) -> np.ndarray:
    """int64 ids [count] in [-1, num_classes) of a label file, else a DataFormatError naming it."""
    ids = np.asarray(ids)
    if ids.ndim != 1 or ids.dtype.kind not in "iu":
        raise DataFormatError(path, f"expected a 1-D integer array of labels, got {ids.dtype} {ids.shape}")
    if len(ids) != count:
        raise DataFormatError(path, f"{len(ids)} labels for a cloud of {count} points")
    ids = ids.astype(np.int64)
    if ids.size and (ids.min() < -1 or ids.max() >= num_classes):
        raise DataFormatError(path, f"labels must be in [-1, {num_classes}), got [{ids.min()}, {ids.max()}]")
    return ids


def npy_label_space(num_classes: int) -> LabelSpace:
    """Train ids saved as ``<out_dir>/<frame_id>.npy`` (a frame id "seq/name" makes a sub-folder) for
    datasets without a submission format of their own."""

    def write(frame_id: str, ids: np.ndarray, out_dir: Path) -> Path:
        path = Path(out_dir) / f"{frame_id}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, np.asarray(ids, np.int64))
        return path

    def read(path: Path, count: int) -> np.ndarray:
        return checked_ids(path, load_npy(path), count, num_classes)

    return LabelSpace([str(i) for i in range(num_classes)], write, read)
