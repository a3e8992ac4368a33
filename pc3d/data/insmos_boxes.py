"""InsMOS's SemanticKITTI box labels: ``sequences/SS/boundingbox_label/NNNNNN.npy``, one pickled object array
per scan of rows ``[name, label, moving, [x, y, z, l, w, h, theta]]`` (LiDAR frame, centre of the box).

Labels (InsMOS's dataloader/boundingbox_label_readme.md): 1 car, 2 bicycle, 3 bus, 4 motorcycle, 5 on rails,
6 truck, 7 other vehicle, 8 person, 9 bicyclist, 10 motorcyclist, 12 other. InsMOS's loader merges them into its
three box classes (``INSMOS_BOX_CLASS``: car, bus and truck -> car; person -> pedestrian; bicyclist and
motorcyclist -> cyclist) and keeps the rest as class 0, which its head never learns; here they are dropped.
theta is passed on as the heading in radians, as the released loader passes it to its head (the readme gives
its range as [-90, 90]).

The files are pickles: a pickle can run code, so they are read by an unpickler that builds nothing but numpy
arrays and scalars, lists, strings and numbers (``load_object_npy``).
"""
from __future__ import annotations

import io
import pickle
from os import PathLike
from pathlib import Path

import numpy as np

from pc3d.errors import DataFormatError

from .io import NUMPY_FILE_ERRORS, _size

INSMOS_BOX_CLASS = {1: 1, 3: 1, 6: 1, 8: 2, 9: 3, 10: 3}  # InsMOS label -> box class (1 car, 2 pedestrian, 3 cyclist)
_ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar")}


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not a numpy array part")
        return super().find_class(module, name)


def load_object_npy(path: str | PathLike) -> np.ndarray:
    """A .npy array, pickled (object dtype) or not; a pickle may build numpy arrays, numpy scalars and builtin
    containers only. A damaged file or any other pickled object is a DataFormatError naming the file."""
    path = Path(path)
    _size(path)
    data = path.read_bytes()
    try:
        stream = io.BytesIO(data)
        version = np.lib.format.read_magic(stream)
        header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in header:
            raise ValueError(f"npy version {version}")
        shape, fortran, dtype = header[version](stream)
        if not dtype.hasobject:
            return np.load(io.BytesIO(data), allow_pickle=False)
        array = _ArraysOnly(stream).load()
    except (pickle.UnpicklingError, *NUMPY_FILE_ERRORS) as error:
        raise DataFormatError(path, f"not a readable .npy array of boxes ({error})") from None
    if not isinstance(array, np.ndarray) or array.shape != tuple(shape):
        raise DataFormatError(path, f"the pickled array does not match its header's shape {tuple(shape)}")
    return array


def read_insmos_boxes(path: str | PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(boxes float32 [M, 7] (x, y, z, l, w, h, heading), labels int64 [M] 1..3) of one InsMOS box file, the rows
    of other classes dropped; an empty file holds no boxes."""
    path = Path(path)
    rows = load_object_npy(path)
    if rows.ndim not in (1, 2):  # [M] of row lists, or [M, 4] objects
        raise DataFormatError(path, f"expected one row per box, got an array of shape {rows.shape}")
    boxes, labels = [], []
    for k, row in enumerate(rows):
        try:
            label, box = int(row[1]), np.asarray(row[3], np.float64).reshape(-1)
        except (TypeError, ValueError, IndexError) as error:
            raise DataFormatError(path, f"row {k}: expected [name, label, moving, [x, y, z, l, w, h, theta]] "
                                        f"({error})") from None
        if len(box) != 7 or not np.isfinite(box).all() or (box[3:6] <= 0).any():
            raise DataFormatError(path, f"row {k}: a box is 7 finite values with sizes > 0, got {box.tolist()}")
        if label in INSMOS_BOX_CLASS:
            boxes.append(box)
            labels.append(INSMOS_BOX_CLASS[label])
    return np.asarray(boxes, np.float32).reshape(-1, 7), np.asarray(labels, np.int64)
