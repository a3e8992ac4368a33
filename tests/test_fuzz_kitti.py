"""Fuzzing the KITTI object loader: velodyne scans, label_2 and calib text, image_2, ImageSets lists.
Every case must end as fuzz_helpers.outcome allows (a pc3d error naming the file, or losses counted).
"""
from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest
from fuzz_helpers import FEW, FUZZ, corrupted, fuzz_fixtures, mutate, mutate_text, outcome
from hypothesis import given
from hypothesis import strategies as st

from pc3d.data import KittiDataset
from pc3d.data.create import create_data
from pc3d.data.dataset import DataWarning
from pc3d.errors import DataFormatError, Pc3dError
from pc3d.sim.labels import KITTI_TYPES

pristine, work, copy = fuzz_fixtures("kitti")


KITTI_FILES = ("training/velodyne/000000.bin", "training/label_2/000000.txt", "training/calib/000000.txt",
               "training/image_2/000000.png", "ImageSets/train.txt")


@FUZZ
@given(data=st.data(), which=st.sampled_from(KITTI_FILES), delete=st.booleans())
def test_fuzz_kitti_bytes(work, data, which, delete):
    path = work["kitti"] / which
    content = None if delete and data.draw(st.integers(0, 4)) == 0 else mutate(path.read_bytes(), data)
    # a damaged id list may name another frame, whose missing files are then the error
    names = (path.name, "training/velodyne/") if which.startswith("ImageSets") else (path.name,)
    with corrupted(path, content):
        kind, value = outcome(lambda: KittiDataset(work["kitti"], "train").load(0), names)
    if kind == "ok" and which.endswith(".bin"):
        sample, _ = value
        assert len(sample["points"]), "a labelled frame loaded without points"


@FUZZ
@given(data=st.data(), which=st.sampled_from(["training/label_2/000000.txt", "training/calib/000000.txt"]))
def test_fuzz_kitti_text(work, data, which):
    path = work["kitti"] / which
    with corrupted(path, mutate_text(path.read_text(), data).encode()):
        kind, value = outcome(lambda: KittiDataset(work["kitti"], "train").load(0), (path.name,))
    if kind == "ok" and "label_2" in which:  # whatever loads is what the file says: nothing vanished
        annos = value[0]["metadata"]["annos"]
        assert set(annos["name"]) <= set(KITTI_TYPES)
        assert (annos["dimensions"][annos["name"] != "DontCare"] >= 0).all()


@FEW
@given(name=st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=12).filter(
    lambda n: n not in KITTI_TYPES), line=st.integers(0, 5))
def test_kitti_unknown_class_names_the_file_and_line(work, name, line):
    path = work["kitti"] / "training" / "label_2" / "000000.txt"
    lines = path.read_text().splitlines()
    lines[line] = " ".join([name, *lines[line].split()[1:]])
    with corrupted(path, ("\n".join(lines) + "\n").encode()):
        kind, error = outcome(lambda: KittiDataset(work["kitti"], "train").load(0), (path.name,))
    assert kind == "error" and f"line {line + 1}: unknown class" in str(error)


@FEW
@given(line=st.integers(0, 5), column_value=st.one_of(
    st.tuples(st.integers(8, 10), st.sampled_from(["-0.01", "-1.65", "nan", "-inf", "0", "0.0"])),  # sizes
    st.tuples(st.just(2), st.sampled_from(["4", "9", "-2", "1.5"])),  # occluded outside 0..3
    st.tuples(st.just(1), st.sampled_from(["1.2", "-0.5", "7"]))))  # truncated outside [0, 1]
def test_kitti_object_values_out_of_the_devkit_ranges(work, line, column_value):
    column, value = column_value
    path = work["kitti"] / "training" / "label_2" / "000000.txt"
    lines = path.read_text().splitlines()
    fields = lines[line].split()
    assert fields[0] != "DontCare"
    fields[column] = value
    lines[line] = " ".join(fields)
    with corrupted(path, ("\n".join(lines) + "\n").encode()):
        kind, error = outcome(lambda: KittiDataset(work["kitti"], "train").load(0), (path.name,))
    assert kind == "error" and f"line {line + 1}" in str(error)


def test_kitti_duplicates_are_errors(copy):
    root = copy("kitti")
    (root / "ImageSets" / "trainval.txt").write_text("000000\n000001\n\n000000\n")
    with pytest.raises(DataFormatError, match=r"trainval.txt: line 4: id '000000' is listed twice \(first on line 1"):
        KittiDataset(root, "trainval")
    label = root / "training" / "label_2" / "000000.txt"
    lines = label.read_text().splitlines()
    label.write_text("\n".join([*lines, lines[0]]) + "\n")
    with pytest.raises(DataFormatError, match=f"000000.txt: line {len(lines) + 1}: the object of line 1 again"):
        KittiDataset(root, "train").load(0)
    with pytest.raises(DataFormatError, match="kitti_infos|train.txt|000000"):  # create_data never multiplies
        (root / "ImageSets" / "train.txt").write_text("000000\n000000\n")
        create_data("kitti", root)


def test_kitti_empty_scan(copy):
    root = copy("kitti")
    velodyne = root / "training" / "velodyne" / "000000.bin"
    velodyne.write_bytes(b"")
    with pytest.raises(DataFormatError, match=r"000000.bin: no points .*, but label_2/000000.txt labels \d+ objects"):
        KittiDataset(root, "train").load(0)
    velodyne.write_bytes(np.array([[-5.0, 0.0, 0.0, 0.5]], np.float32).tobytes())  # one point, behind the camera
    with pytest.raises(DataFormatError, match=r"000000.bin: no points in the camera's field of view, but"):
        KittiDataset(root, "train").load(0)
    shutil.rmtree(root / "training" / "label_2")  # unlabelled: counted and warned once per dataset
    (root / "training" / "velodyne" / "000001.bin").write_bytes(b"")
    ds = KittiDataset(root, "trainval")
    with pytest.warns(DataWarning, match=r"empty scans \(0 points\): 1 \(.*000000.bin\)"):
        assert len(ds.load(0)["points"]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds.load(1)
    assert len(ds.notes["empty scans (0 points)"]) == 2 and "empty scans (0 points): 2" in ds.skip_report()


def test_kitti_config_and_image_checks(copy):
    root = copy("kitti")
    with pytest.raises(Pc3dError, match="Carr"):
        KittiDataset(root, "train", class_names=("Carr", "Pedestrian"))
    (root / "training" / "image_2" / "000000.png").unlink()
    with pytest.raises(DataFormatError, match="000000.png: missing or not a PNG"):
        KittiDataset(root, "train").load(0)
