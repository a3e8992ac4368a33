"""Fuzzing the SemanticKITTI loader: scans, labels, poses.txt, calib.txt, times.txt, split folders.
Every case must end as fuzz_helpers.outcome allows (a pc3d error naming the file, or losses counted).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fuzz_helpers import FUZZ, corrupted, fuzz_fixtures, mutate, mutate_text, outcome
from hypothesis import given
from hypothesis import strategies as st

from pc3d.data import SemanticKittiDataset
from pc3d.data.dataset import DataWarning
from pc3d.errors import DataFormatError, Pc3dError

pristine, work, copy = fuzz_fixtures("semantickitti")


SK_FILES = ("velodyne/000001.bin", "labels/000001.label", "velodyne/000000.bin", "labels/000000.label",
            "poses.txt", "calib.txt", "times.txt")


@FUZZ
@given(data=st.data(), which=st.sampled_from(SK_FILES), delete=st.booleans())
def test_fuzz_semantickitti_bytes(work, data, which, delete):
    root = work["semantickitti"]
    path = root / "sequences" / "00" / which
    content = None if delete and data.draw(st.integers(0, 4)) == 0 else mutate(path.read_bytes(), data)
    with corrupted(path, content):  # a scan and its label file disagree: either may be named
        kind, value = outcome(lambda: SemanticKittiDataset(root, sequences=[0], n_past_scans=1).load(1),
                              (path.name, f"{Path(which).stem}.bin", f"{Path(which).stem}.label"))
    if kind == "ok":
        sample, _ = value
        assert len(sample["point_labels"]) == len(sample["points"])


@FUZZ
@given(data=st.data(), which=st.sampled_from(["poses.txt", "calib.txt", "times.txt"]))
def test_fuzz_semantickitti_text(work, data, which):
    root = work["semantickitti"]
    path = root / "sequences" / "00" / which
    with corrupted(path, mutate_text(path.read_text(), data).encode()):
        outcome(lambda: SemanticKittiDataset(root, sequences=[0], n_past_scans=1).load(1), (path.name,))


def test_semantickitti_missing_sequences(copy):
    root = copy("semantickitti")
    with pytest.raises(DataFormatError, match=r"sequences: sequences \['03'\] have no scans"):
        SemanticKittiDataset(root, sequences=[0, 3])
    (root / "sequences" / "01" / "velodyne").mkdir(parents=True)  # an empty folder is missing too
    with pytest.raises(DataFormatError, match=r"\['01'\] have no scans"):
        SemanticKittiDataset(root, sequences=[0, 1])
    with pytest.warns(DataWarning, match=r"sequences of split 'train' missing or empty: 9 \(.*sequences/01"):
        ds = SemanticKittiDataset(root, split="train")  # the devkit's 00-07, 09, 10: only 00 is here
    assert len(ds) == 2 and len(ds.notes["sequences of split 'train' missing or empty"]) == 9
    with pytest.raises(Pc3dError, match="listed twice"):
        SemanticKittiDataset(root, sequences=[0, "00"])


def test_semantickitti_half_labelled_split(copy):
    root = copy("semantickitti")
    shutil.copytree(root / "sequences" / "00", root / "sequences" / "01")
    shutil.rmtree(root / "sequences" / "01" / "labels")
    with pytest.raises(DataFormatError, match="sequences/01: no labels/ folder"):
        SemanticKittiDataset(root, sequences=[0, 1])
    assert len(SemanticKittiDataset(root, sequences=[1])) == 2  # a test sequence alone has no labels


def test_semantickitti_label_count_and_poses(copy):
    root = copy("semantickitti")
    seq = root / "sequences" / "00"
    label = seq / "labels" / "000000.label"
    label.write_bytes(label.read_bytes() + b"\0\0\0\0")
    with pytest.raises(DataFormatError, match="000000.label: .* expected"):
        SemanticKittiDataset(root, sequences=[0]).load(0)
    (seq / "times.txt").write_text("0.0\n")
    with pytest.raises(DataFormatError, match="times.txt: 1 times for 2 poses"):
        SemanticKittiDataset(root, sequences=[0], n_past_scans=1).load(1)
    (seq / "poses.txt").write_text("0 0 0 0 0 0 0 0 0 0 0 0\n" * 2)
    with pytest.raises(DataFormatError, match="poses.txt: pose 1: singular"):
        SemanticKittiDataset(root, sequences=[0], n_past_scans=1).load(1)
