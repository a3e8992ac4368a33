"""Fuzzing tools/create_data.py: empty folders of every layout, damaged KITTI frames.
A one-line error (exit 2) or the frame listed as skipped, never a traceback.
"""
from __future__ import annotations

import importlib.util
import json

import pytest
from fuzz_helpers import FEW, ROOT, corrupted, fuzz_fixtures, mutate
from hypothesis import given
from hypothesis import strategies as st

pristine, work, copy = fuzz_fixtures("kitti")


KITTI_FILES = ("training/velodyne/000000.bin", "training/label_2/000000.txt", "training/calib/000000.txt")


def _create_data_main():
    spec = importlib.util.spec_from_file_location("create_data_tool", ROOT / "tools" / "create_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.mark.parametrize("dataset", ["kitti", "waymo", "semantickitti", "scannet", "sceneflow"])
def test_create_data_on_an_empty_folder(tmp_path, capsys, monkeypatch, dataset):
    monkeypatch.setenv("PC3D_DEBUG", "0")
    assert _create_data_main()([dataset, str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"create_data: error: {tmp_path}: nothing to index: expected")
    assert not list(tmp_path.iterdir())


@FEW
@given(data=st.data(), which=st.sampled_from(KITTI_FILES))
def test_fuzz_create_data_kitti(work, data, which, capsys):
    """create_data over a damaged frame: a one-line error (exit 2) or the frame listed as skipped."""
    path = work["kitti"] / which
    with corrupted(path, mutate(path.read_bytes(), data)):
        status = _create_data_main()(["kitti", str(work["kitti"])])
        out = capsys.readouterr()
        report = json.loads(out.out) if status == 0 else None
    for name in ("kitti_infos_train.json", "kitti_infos_val.json", "kitti_infos_trainval.json",
                 "kitti_infos_test.json", "kitti_gt_database_train.json", "kitti_gt_database_train.npz",
                 "kitti_gt_database_train.bin"):
        (work["kitti"] / name).unlink(missing_ok=True)
    if status:
        assert status == 2 and out.err.count("\n") == 1 and "create_data: error:" in out.err
    elif report["train"]["skipped"]:
        assert "000000" in report["train"]["skipped"] and "skipped 1 bad frame" in out.err
    else:
        assert report["train"]["frames"] == 1
