"""Fuzzing the scene-flow loader: pc1.npy / pc2.npy / mask.npy of HPLFlowNet's KITTI layout.
Every case must end as fuzz_helpers.outcome allows (a pc3d error naming the file, or losses counted).
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest
from fuzz_helpers import FUZZ, corrupted, fuzz_fixtures, mutate, outcome
from hypothesis import given
from hypothesis import strategies as st

from pc3d.data import SceneFlowDataset
from pc3d.errors import DataFormatError

pristine, work, copy = fuzz_fixtures("sceneflow")


@FUZZ
@given(data=st.data(), which=st.sampled_from(["pc1.npy", "pc2.npy", "mask.npy"]))
def test_fuzz_sceneflow(work, data, which):
    folder = work["sceneflow"] / "KITTI_processed_occ_final" / "000000"
    path = folder / which
    if which == "mask.npy":
        np.save(path, np.ones(len(np.load(folder / "pc1.npy")), bool))
    mode = data.draw(st.sampled_from(["bytes", "array"]))
    if mode == "bytes":
        content = mutate(path.read_bytes(), data)
    else:
        shape = (data.draw(st.integers(0, 40)), data.draw(st.integers(0, 5)))
        array = data.draw(st.sampled_from([np.zeros(shape, np.float32), np.full(shape, np.nan, np.float32),
                                           np.full(shape, np.inf), np.zeros(shape, np.int32),
                                           np.array(["a"] * shape[0])]))
        path_buffer = folder / "buffer.npy"
        np.save(path_buffer, array)
        content = path_buffer.read_bytes()
        path_buffer.unlink()
    try:
        with corrupted(path, content):
            kind, value = outcome(lambda: SceneFlowDataset(work["sceneflow"], "kitti", seed=0)[0],
                                  (which, folder.name))
    finally:
        if which == "mask.npy":
            path.unlink()
    if kind == "ok":
        assert len(value[0]["points"]) == 8192


def test_sceneflow_empty_cloud_is_a_skippable_frame(copy):
    root = copy("sceneflow")
    folder = root / "KITTI_processed_occ_final"
    shutil.copytree(folder / "000000", folder / "000001")
    for name in ("pc1.npy", "pc2.npy"):
        np.save(folder / "000000" / name, np.zeros((0, 3), np.float32))
    with pytest.raises(DataFormatError, match="000000/pc1.npy: no points"):
        SceneFlowDataset(root, "kitti", seed=0)[0]
    skipping = SceneFlowDataset(root, "kitti", seed=0, skip_bad_frames=True, training=True)
    with pytest.warns(UserWarning, match="000000"):
        assert skipping[0]["frame_id"] == "kitti/000001"
    np.save(folder / "000000" / "pc1.npy", np.full((10, 3), 50.0, np.float32))  # all beyond 35 m
    np.save(folder / "000000" / "pc2.npy", np.full((10, 3), 50.0, np.float32))
    with pytest.raises(DataFormatError, match="000000: none of the 10 points is left"):
        SceneFlowDataset(root, "kitti", seed=0)[0]
