"""InsMOS's box label files (pc3d.data.insmos_boxes): pickled object arrays read without running pickled code,
InsMOS's class merge, damaged files named, and SemanticKittiDataset taking a sequence's boundingbox_label/ files."""
from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest

from pc3d.data import SemanticKittiDataset
from pc3d.data.insmos_boxes import load_object_npy, read_insmos_boxes
from pc3d.errors import DataFormatError

ROWS = [["car", 1, 1, [1.0, 2.0, -0.8, 4.0, 1.8, 1.5, 0.3]],
        ["truck", 6, 0, [9.0, 2.0, -0.5, 8.0, 2.5, 3.0, -1.2]],
        ["person", 8, 0, [3.0, -2.0, -0.9, 0.5, 0.6, 1.7, 0.0]],
        ["bicyclist", 9, 1, [5.0, 5.0, -0.9, 1.7, 0.6, 1.6, 1.0]],
        ["bicycle", 2, 0, [0.0, 7.0, -1.0, 1.6, 0.5, 1.0, 0.2]],
        ["other", 12, 0, [-4.0, 0.0, -1.0, 1.0, 1.0, 1.0, 0.0]]]


def save_rows(path, rows, ragged: bool = False):
    """As InsMOS's files may have been written: np.save of the row lists ([M, 4] objects), or of [M] row lists."""
    if ragged:
        array = np.empty(len(rows), object)
        array[:] = rows
    else:
        array = np.array(rows, dtype=object)
    np.save(path, array, allow_pickle=True)
    return path


@pytest.mark.parametrize("ragged", [False, True])
def test_rows_merge_into_insmos_three_classes(tmp_path, ragged):
    boxes, labels = read_insmos_boxes(save_rows(tmp_path / "000000.npy", ROWS, ragged))
    assert labels.tolist() == [1, 1, 2, 3]  # car, truck -> car; person -> pedestrian; bicyclist -> cyclist
    np.testing.assert_array_equal(boxes, np.array([r[3] for r in ROWS[:4]], np.float32))
    empty, none = read_insmos_boxes(save_rows(tmp_path / "000001.npy", []))
    assert empty.shape == (0, 7) and none.shape == (0,)


def test_numpy_1_pickles_read_and_other_pickled_objects_are_refused(tmp_path):
    # numpy 1.x saved object arrays as protocol-3 pickles naming numpy.core.multiarray (numpy 2: numpy._core)
    header = save_rows(tmp_path / "template.npy", ROWS).read_bytes()
    prefix = header[:header.index(b"\n") + 1]
    old = pickle.dumps(np.array(ROWS, dtype=object), protocol=3)
    assert b"numpy._core.multiarray\n" in old  # protocol 3 names its globals as text lines
    path = tmp_path / "old.npy"
    path.write_bytes(prefix + old.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"))
    assert read_insmos_boxes(path)[1].tolist() == [1, 1, 2, 3]  # (numpy may warn that numpy.core is deprecated)

    class Payload:
        def __reduce__(self):
            return (shutil.rmtree, (str(tmp_path / "victim"),))

    (tmp_path / "victim").mkdir()
    bad = tmp_path / "bad.npy"
    array = np.empty(1, object)
    array[0] = Payload()
    header = save_rows(tmp_path / "template.npy", [0]).read_bytes()  # a [1] object array's header
    prefix = header[:header.index(b"\n") + 1]
    bad.write_bytes(prefix + pickle.dumps(array, protocol=3))
    with pytest.raises(DataFormatError, match=f"{bad.name}.*shutil.rmtree is not a numpy array part"):
        load_object_npy(bad)
    assert (tmp_path / "victim").is_dir()


@pytest.mark.parametrize("damage, message", [
    ("truncated", "not a readable"), ("six values", "7 finite values"), ("negative size", "sizes > 0"),
    ("no box", "expected \\[name, label"), ("scalar", "one row per box")])
def test_damaged_box_files_name_the_file(tmp_path, damage, message):
    path = tmp_path / "000000.npy"
    if damage == "truncated":
        data = save_rows(path, ROWS).read_bytes()
        path.write_bytes(data[:len(data) - 20])
    elif damage == "six values":
        save_rows(path, [["car", 1, 0, [1.0, 2.0, 3.0, 4.0, 1.8, 1.5]]], ragged=True)
    elif damage == "negative size":
        save_rows(path, [["car", 1, 0, [1.0, 2.0, 3.0, -4.0, 1.8, 1.5, 0.0]]])
    elif damage == "no box":
        save_rows(path, [["car", 1]])
    else:
        np.save(path, np.array("car", dtype=object), allow_pickle=True)
    with pytest.raises(DataFormatError, match=f"{path.name}.*{message}"):
        read_insmos_boxes(path)


def test_a_sequence_with_insmos_box_files_gives_them_as_ground_truth(tmp_path):
    from pc3d.sim.api import simulate_dataset

    root = simulate_dataset("semantickitti_mos", tmp_path, frames=2, seed=3, columns=512, sequence_length=2)
    folder = root / "sequences" / "00"
    shutil.rmtree(folder / "boxes")
    (folder / "boundingbox_label").mkdir()
    for name in ("000000", "000001"):
        save_rows(folder / "boundingbox_label" / f"{name}.npy", ROWS)
    sample = SemanticKittiDataset(root, sequences=[0], mode="mos", n_past_scans=1, scan_period=0.1,
                                  past_voxel_size=0.1).load(1)
    np.testing.assert_array_equal(sample["gt_boxes"], np.array([r[3] for r in ROWS[:4]], np.float32))
    assert sample["gt_labels"].tolist() == [1, 1, 2, 3]


def _crafted(path, payload, descr="|O", shape=(1,)):
    """An .npy file whose header says `descr` / `shape` and whose pickle is `payload`'s (protocol 3)."""
    import io

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": descr, "fortran_order": False, "shape": shape})
    path.write_bytes(header.getvalue() + pickle.dumps(payload, protocol=3))
    return path


class _Reduce:
    """A pickled call: func(*args), then BUILD with state (None: no BUILD)."""

    def __init__(self, func, args, state=None):
        self.func, self.args, self.state = func, args, state

    def __reduce__(self):
        return (self.func, self.args) if self.state is None else (self.func, self.args, self.state)


def _array(dtype, data, shape=(1,)):
    from numpy._core.multiarray import _reconstruct

    return _Reduce(_reconstruct, (np.ndarray, (0,), b"b"), (1, shape, dtype, False, data))


@pytest.mark.parametrize("case", ["object field in a void dtype", "object field set on a float dtype",
                                  "object dtype without its flags", "object array of raw bytes",
                                  "object scalar", "ndarray called directly"])
def test_numpy_parts_bent_to_read_memory_are_refused(tmp_path, case):
    """numpy's own pickled parts can make an array read file bytes as object pointers (a dtype state that hides an
    object field, an object array given bytes): every such state is refused before numpy applies it. The pointer
    here is the id of a string of this process (harmless)."""
    import struct

    from numpy._core.multiarray import scalar

    target = "a string of this process"
    raw = struct.pack("<Q", id(target))
    hidden = (3, "|", None, ("a",), {"a": (np.dtype("O"), 0)}, 8, 1, 0)
    payload = {
        "object field in a void dtype": _array(_Reduce(np.dtype, ("V8", False, True), hidden), raw),
        "object field set on a float dtype": _array(_Reduce(np.dtype, ("f8", False, True), hidden), raw),
        "object dtype without its flags": _array(_Reduce(np.dtype, ("O8", False, True),
                                                         (3, "|", None, None, None, -1, -1, 0)), raw),
        "object array of raw bytes": _array(np.dtype("O"), raw),
        "object scalar": _Reduce(scalar, (np.dtype("O"), raw)),
        "ndarray called directly": _Reduce(np.ndarray, ((1,), np.dtype("O"), raw)),
    }[case]
    path = _crafted(tmp_path / "bad.npy", payload)
    with pytest.raises(DataFormatError, match="bad.npy"):
        load_object_npy(path)


def test_an_array_whose_dtype_is_not_its_headers_is_refused(tmp_path):
    path = _crafted(tmp_path / "x.npy", np.array([1.0, 2.0]), shape=(2,))  # header: objects; pickle: floats
    with pytest.raises(DataFormatError, match="does not match its header"):
        load_object_npy(path)


def test_a_degenerate_box_of_a_dropped_class_does_not_fail_its_file(tmp_path):
    rows = [*ROWS[:2], ["other", 12, 0, [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]], ["bus", 3, 1, [1.0] * 6 + [0.0]]]
    boxes, labels = read_insmos_boxes(save_rows(tmp_path / "000000.npy", rows))
    assert labels.tolist() == [1, 1, 1] and len(boxes) == 3  # the bus is a car too
