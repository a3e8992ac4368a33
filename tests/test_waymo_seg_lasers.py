"""Waymo segmentation samples of several lasers (Pointcept reads all five; only TOP is labelled): the other lasers'
points come undefined, and the submission frames (the dataset's and tools/infer.py's) hold the TOP laser's alone."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from pc3d.data.waymo_seg import WaymoSegmentationDataset, checked_lasers
from pc3d.errors import ConfigError, DataFormatError
from pc3d.infer.outputs import range_image_frame
from pc3d.infer.sources import SourceFrame

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
LASER = "key.laser_name"


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    """(the simulated segment, a copy whose lidar file adds a FRONT laser (2): TOP's images and calibration)."""
    from pc3d.sim.api import simulate_dataset

    world = simulate_dataset("waymo", tmp_path_factory.mktemp("waymo"), frames=2, seed=3, columns=256,
                             sequence_length=2)
    copy = tmp_path_factory.mktemp("front") / "waymo"
    shutil.copytree(world, copy)
    for component in ("lidar", "lidar_calibration"):
        (path,) = (copy / "training" / component).glob("*.parquet")
        table = pq.read_table(path)
        index = table.schema.get_field_index(LASER)
        front = table.set_column(index, table.schema.field(LASER), pa.array([2] * table.num_rows, pa.int8()))
        pq.write_table(pa.concat_tables([table, front]), path)
    return world, copy


def test_other_lasers_points_come_undefined(roots):
    # in the file's laser order: the copy's FRONT rows follow its TOP rows
    world, copy = roots
    top, both = WaymoSegmentationDataset(world, "training"), WaymoSegmentationDataset(copy, "training", lasers=[2, 1])
    only_top = WaymoSegmentationDataset(copy, "training")
    assert both.lasers == (1, 2)
    for index in range(len(top)):
        one, two, same = top.load(index), both.load(index), only_top.load(index)
        n = len(one["points"])
        np.testing.assert_array_equal(same["points"], one["points"])
        np.testing.assert_array_equal(two["points"], np.concatenate([one["points"], one["points"]]))
        assert (one["point_labels"] > 0).any()
        np.testing.assert_array_equal(two["point_labels"][:n], one["point_labels"])
        assert not two["point_labels"][n:].any() and not two["instance_ids"][n:].any()


def test_submission_frames_hold_the_top_lasers_points(roots):
    world, copy = roots
    top, both = WaymoSegmentationDataset(world, "training"), WaymoSegmentationDataset(copy, "training", lasers=(1, 2))
    rng = np.random.default_rng(0)
    predictions = [rng.integers(1, 23, len(top.load(i)["points"])) for i in range(len(top))]
    doubled = [np.concatenate([p, rng.integers(1, 23, len(p))]) for p in predictions]  # FRONT's: anything
    for want, got in zip(top.range_image_frames(predictions), both.range_image_frames(doubled), strict=True):
        assert want["timestamp"] == got["timestamp"]
        for (r1, image1), (r2, image2) in zip(want["returns"].items(), got["returns"].items(), strict=True):
            assert r1 == r2
            np.testing.assert_array_equal(image1, image2)
    with pytest.raises(DataFormatError, match="labels for its"):
        next(both.range_image_frames(predictions))  # the TOP points' labels alone are too few
    for want, got in zip(top.range_image_frames(), both.range_image_frames(), strict=True):  # ground truth
        for image1, image2 in zip(want["returns"].values(), got["returns"].values(), strict=True):
            np.testing.assert_array_equal(image1, image2)


def test_infer_frames_keep_the_top_lasers_pixels():
    pixels = {(1, 1): (np.array([[0, 0], [1, 2]]), (2, 3)), (2, 1): (np.array([[0, 1]]), (2, 3)),
              (1, 2): (np.array([[1, 1]]), (2, 3))}
    frame = SourceFrame("seg/5", "seg", np.zeros((4, 3), np.float32), "x.parquet",
                        extra={"segment": "seg", "timestamp": 5, "range_pixels": pixels})
    out = range_image_frame(frame, np.array([7, 8, 9, 10]))  # 9 is FRONT's
    first, second = out["returns"][1], out["returns"][2]
    assert first[0, 0] == 7 and first[1, 2] == 8 and second[1, 1] == 10 and 9 not in first and 9 not in second
    with pytest.raises(DataFormatError, match="3 labels for the 4 points"):
        range_image_frame(frame, np.array([7, 8, 9]))
    front = SourceFrame("seg/5", "seg", np.zeros((1, 3), np.float32), "x.parquet",
                        extra={"segment": "seg", "timestamp": 5, "range_pixels": {(2, 1): pixels[(2, 1)]}})
    with pytest.raises(DataFormatError, match="TOP laser"):
        range_image_frame(front, np.array([9]))


@pytest.mark.parametrize("lasers", [(2,), (1, 1), (1, 6), (), "top", None])
def test_lasers_must_name_top_and_real_lasers(lasers):
    with pytest.raises(ConfigError, match="including TOP"):
        checked_lasers(lasers)


def test_infer_feeds_the_lasers_of_the_models_dataset_config(roots, tmp_path, capsys):
    from conftest import experiment_checkpoint

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    import infer

    from pc3d.data.io import read_label

    _, copy = roots
    ckpt = experiment_checkpoint(tmp_path / "runs", "sim_waymo_seg", f"dataset.root={copy}", "dataset.lasers=[1,2]")
    assert infer.main([str(ckpt), str(copy / "training"), "--out", str(tmp_path), "--device", "cpu"]) == 0
    both = WaymoSegmentationDataset(copy, "training", lasers=(1, 2))
    assert f"SegmentationFrameList of {len(both)} frames" in capsys.readouterr().out
    for index in range(len(both)):  # a label per point of both lasers
        count = len(both.load(index)["points"])
        assert len(read_label(tmp_path / "labels" / f"{both.frame_id(index)}.label", count)) == count
