"""How a segmentation dataset names, colours and writes per-point predictions (its submission format).

A dataset class with per-point labels offers ``label_space(**config) -> LabelSpace`` (a classmethod: no
dataset root needed), which ``tools/infer.py`` and ``tools/test.py`` write through, so each format has
one writer.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class LabelSpace:
    """names [K] of the train ids; colors float32 [K, 3] RGB in 0..1 (None: a generated palette);
    write(frame_id, train_ids int64 [N], out_dir) -> the written file, in the dataset's submission layout."""

    names: list[str]
    write: Callable[[str, np.ndarray, Path], Path]
    colors: np.ndarray | None = None


def npy_label_space(num_classes: int) -> LabelSpace:
    """Train ids saved as ``<out_dir>/<frame_id>.npy`` (a frame id "seq/name" makes a sub-folder) for
    datasets without a submission format of their own."""

    def write(frame_id: str, ids: np.ndarray, out_dir: Path) -> Path:
        path = Path(out_dir) / f"{frame_id}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, np.asarray(ids, np.int64))
        return path

    return LabelSpace([str(i) for i in range(num_classes)], write)
