"""InsMOS's SemanticKITTI box labels: ``sequences/SS/boundingbox_label/NNNNNN.npy``, one pickled object array
per scan of rows ``[name, label, moving, [x, y, z, l, w, h, theta]]`` (LiDAR frame, centre of the box).

Labels (InsMOS's dataloader/boundingbox_label_readme.md): 1 car, 2 bicycle, 3 bus, 4 motorcycle, 5 on rails,
6 truck, 7 other vehicle, 8 person, 9 bicyclist, 10 motorcyclist, 12 other. InsMOS's loader merges them into its
three box classes (``INSMOS_BOX_CLASS``: car, bus and truck -> car; person -> pedestrian; bicyclist and
motorcyclist -> cyclist) and keeps the rest as class 0, which its head never learns; here they are dropped.
theta is passed on as the heading in radians, as the released loader passes it to its head (the readme gives
its range as [-90, 90]).

The files are pickles: a pickle can run code, and numpy's own pickled parts can be bent to read memory (a dtype
state whose flags hide an object field makes an array of raw bytes read as object pointers). So they are read by
an unpickler that builds nothing but numpy arrays of objects or plain numbers, numpy scalars of plain numbers,
lists, tuples, strings and numbers, and checks every state numpy would apply (``load_object_npy``).
"""
from __future__ import annotations

import io
import math
import pickle
from os import PathLike
from pathlib import Path

import numpy as np

from pc3d.errors import DataFormatError

from .io import NUMPY_FILE_ERRORS, _size

INSMOS_BOX_CLASS = {1: 1, 3: 1, 6: 1, 8: 2, 9: 3, 10: 3}  # InsMOS label -> box class (1 car, 2 pedestrian, 3 cyclist)
_MULTIARRAY = ("numpy.core.multiarray", "numpy._core.multiarray")  # numpy 1.x's module, numpy 2's
_PLAIN = frozenset("?bBhHiIlLqQefdgFDG")  # numpy type characters of plain numbers (no objects, no raw bytes)


def _ndarray(*_args):
    """What the pickle's "numpy.ndarray" global stands for: only _reconstruct may take it, never called."""
    raise pickle.UnpicklingError("numpy.ndarray called directly (numpy pickles an array through _reconstruct)")


def _plain_or_object(dtype) -> bool:
    """A dtype as numpy builds it from its type string (no fields, no sub-array, its own flags): objects or plain
    numbers. A pickled dtype state can claim other flags than its fields have (numpy then reads raw bytes as
    object pointers): its state must be the fresh dtype's."""
    if not isinstance(dtype, np.dtype) or dtype.fields is not None or dtype.subdtype is not None:
        return False
    if dtype.char != "O" and dtype.char not in _PLAIN:
        return False
    fresh = np.dtype(dtype.str)
    return dtype == fresh and dtype.flags == fresh.flags and dtype.__reduce__()[2] == fresh.__reduce__()[2]


def _dtype(spec, align=False, copy=True):
    dtype = np.dtype(spec) if isinstance(spec, str) else None
    if dtype is None or not _plain_or_object(dtype):
        raise pickle.UnpicklingError(f"dtype {spec!r} is neither objects nor plain numbers")
    return np.dtype(spec, align=bool(align), copy=bool(copy))


def _reconstruct(cls, shape, typecode):
    if cls is not _ndarray or shape != (0,) or typecode != b"b":
        raise pickle.UnpicklingError("an array must be rebuilt as numpy pickles one: _reconstruct(ndarray, (0,), b'b')")
    return np.ndarray((0,), np.uint8)


def _scalar(dtype, data=None):
    if not _plain_or_object(dtype) or dtype.hasobject or not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise pickle.UnpicklingError("a pickled numpy scalar must be a plain number of its dtype's size")
    return np.frombuffer(data, dtype)[0]


class _ArraysOnly(pickle._Unpickler):  # the Python unpickler: its BUILD step can be checked
    """Builds numpy arrays of objects or plain numbers, numpy scalars of plain numbers, and what pickle builds
    without globals (lists, tuples, strings, numbers). Every numpy global is replaced by a checked stand-in, and
    every BUILD step (the state numpy gives an array or a dtype) is checked before it is applied."""

    def find_class(self, module: str, name: str):
        if module in _MULTIARRAY and name in ("_reconstruct", "scalar"):
            return _reconstruct if name == "_reconstruct" else _scalar
        if module == "numpy" and name in ("ndarray", "dtype"):
            return _ndarray if name == "ndarray" else _dtype
        raise pickle.UnpicklingError(f"{module}.{name} is not a numpy array part")

    def load_build(self):
        obj, state = self.stack[-2], self.stack[-1]
        if isinstance(obj, np.dtype):
            ok = state == np.dtype(obj.str).__reduce__()[2]
        elif isinstance(obj, np.ndarray):
            ok = isinstance(state, tuple) and len(state) == 5 and _array_state(*state)
        else:
            ok = False
        if not ok:
            raise pickle.UnpicklingError(f"a pickled {type(obj).__name__} state that numpy never writes")
        super().load_build()

    dispatch = dict(pickle._Unpickler.dispatch)
    dispatch[pickle.BUILD[0]] = load_build


def _array_state(version, shape, dtype, fortran, data) -> bool:
    """numpy's ndarray state (1, shape, dtype, is_fortran, data): objects as a list, plain numbers as their bytes."""
    if version != 1 or not isinstance(shape, tuple) or not all(isinstance(n, int) and n >= 0 for n in shape):
        return False
    if not _plain_or_object(dtype) or not isinstance(fortran, bool):
        return False
    size = math.prod(shape)
    if dtype.hasobject:
        return isinstance(data, list) and len(data) == size
    return isinstance(data, bytes) and len(data) == size * dtype.itemsize


def load_object_npy(path: str | PathLike) -> np.ndarray:
    """A .npy array, pickled (object dtype) or not; a pickle may build numpy arrays of objects or plain numbers,
    numpy scalars and builtin containers only (`_ArraysOnly`). A damaged file, any other pickled object or an array
    whose dtype is not its header's is a DataFormatError naming the file."""
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
    except (pickle.UnpicklingError, TypeError, AttributeError, IndexError, *NUMPY_FILE_ERRORS) as error:
        raise DataFormatError(path, f"not a readable .npy array of boxes ({error})") from None
    if not isinstance(array, np.ndarray) or array.shape != tuple(shape) or array.dtype != dtype:
        raise DataFormatError(path, f"the pickled array does not match its header ({dtype}, {tuple(shape)})")
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
            label = int(row[1])
            box = np.asarray(row[3], np.float64).reshape(-1) if label in INSMOS_BOX_CLASS else None
        except (TypeError, ValueError, IndexError) as error:
            raise DataFormatError(path, f"row {k}: expected [name, label, moving, [x, y, z, l, w, h, theta]] "
                                        f"({error})") from None
        if box is None:  # a class InsMOS's head never learns: not read further (as InsMOS's loader)
            continue
        if len(box) != 7 or not np.isfinite(box).all() or (box[3:6] <= 0).any():
            raise DataFormatError(path, f"row {k}: a box is 7 finite values with sizes > 0, got {box.tolist()}")
        boxes.append(box)
        labels.append(INSMOS_BOX_CLASS[label])
    return np.asarray(boxes, np.float32).reshape(-1, 7), np.asarray(labels, np.int64)
