"""Waymo v2 3D segmentation: range-image label mapping, the simulated lidar_segmentation component, the loader
and its bad inputs."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from pc3d.data.waymo_seg import WAYMO_SEG_CLASSES, WaymoSegmentationDataset, range_image_labels
from pc3d.errors import DataFormatError
from pc3d.sim.api import simulate_dataset

ROOT = Path(__file__).resolve().parents[1]


def test_range_image_label_mapping_on_a_tiny_image():
    labels = np.zeros((2, 3, 2), np.int32)
    labels[0, 1] = (7, 18)   # instance 7, road
    labels[1, 2] = (0, 15)   # vegetation
    semantic, instance = range_image_labels(labels, np.array([[0, 1], [1, 2], [1, 0]]))
    assert semantic.tolist() == [18, 15, 0] and instance.tolist() == [7, 0, 0]
    assert len(WAYMO_SEG_CLASSES) == 23 and WAYMO_SEG_CLASSES[18] == "road"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    path = tmp_path_factory.mktemp("waymo")
    simulate_dataset("waymo", path, frames=2, seed=0, columns=512, sequence_length=1)
    return path


def test_simulated_segmentation_labels_every_top_point(root):
    data = WaymoSegmentationDataset(root, "training")
    sample = data.load(0)
    n = len(sample["points"])
    assert n > 1000 and sample["point_labels"].shape == (n,) and sample["instance_ids"].shape == (n,)
    present = {WAYMO_SEG_CLASSES[c] for c in np.unique(sample["point_labels"])}
    assert {"road", "building", "vegetation"} <= present
    cars = sample["point_labels"] == 1
    assert cars.any() and (sample["instance_ids"][cars] > 0).all()  # things carry their instance


def test_a_segmentation_file_without_the_label_column_names_the_file(root, tmp_path):
    import shutil

    import pyarrow.parquet as pq

    bad = tmp_path / "waymo"
    shutil.copytree(root, bad)
    path = next((bad / "training" / "lidar_segmentation").glob("*.parquet"))
    table = pq.read_table(path)
    pq.write_table(table.drop([c for c in table.column_names if c.endswith("return1.values")]), path)
    with pytest.raises(DataFormatError, match=path.name):
        WaymoSegmentationDataset(bad, "training").load(0)


def test_predictions_are_written_one_class_per_point(root, tmp_path):
    data = WaymoSegmentationDataset(root, "training")
    sample = data.load(0)
    written = data.write_predictions([{"pred_labels": sample["point_labels"]}] * len(data), tmp_path)
    path = written / f"{data.frame_id(0)}.label"
    assert np.array_equal(np.fromfile(path, "<u4").astype(np.int64), sample["point_labels"])
    with pytest.raises(DataFormatError, match="classes must be"):
        data.label_space().write("x/1", np.array([23]), tmp_path)
    space = data.label_space()  # read back as tools/visualize.py reads it
    assert np.array_equal(space.read(path, len(sample["point_labels"])), sample["point_labels"])
    with pytest.raises(DataFormatError, match="expected 3"):
        space.read(path, 3)


def test_label_rows_are_found_in_any_row_group_layout(tmp_path):
    """The loader reads one label row group a frame, found by timestamp: the labels are the same when the file
    holds its rows in another order, two to a row group; a timestamp labelled twice is named."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = simulate_dataset("waymo", tmp_path / "waymo", frames=3, seed=1, columns=256, sequence_length=3)
    before = [WaymoSegmentationDataset(root, "training").load(i)["point_labels"] for i in range(3)]
    path = next((root / "training" / "lidar_segmentation").glob("*.parquet"))
    table = pq.read_table(path)
    pq.write_table(table.take([2, 0, 1]), path, row_group_size=2)
    assert pq.ParquetFile(path).metadata.row_group(0).num_rows == 2
    data = WaymoSegmentationDataset(root, "training")
    for i in range(3):
        np.testing.assert_array_equal(data.load(i)["point_labels"], before[i])
    pq.write_table(pa.concat_tables([table, table.slice(1, 1)]), path)
    with pytest.raises(DataFormatError, match=f"{path.name}.*2 TOP label rows"):
        WaymoSegmentationDataset(root, "training")


def test_infer_reads_the_top_laser_and_writes_range_images(root, tmp_path, capsys):
    """A Waymo segmentation model gets the points its dataset class reads (the TOP laser, outside no-label zones,
    in the loader's order) and its labels also go into segmentation.bin, on the range images' pixels: scored by
    tools/eval_waymo.py --segmentation against the dataset's own labels they give the hook's Waymo mIoU of the
    per-point label files."""
    from conftest import experiment_checkpoint

    sys.path.insert(0, str(ROOT / "tools"))
    import eval_waymo
    import infer

    from pc3d.data.io import read_label
    from pc3d.eval.hooks import SegmentationEvaluator
    from pc3d.eval.waymo_segmentation import write_segmentation_frames

    ckpt = experiment_checkpoint(tmp_path / "runs", "sim_waymo_seg", f"dataset.root={root}")
    split = root / "training"
    dataset = WaymoSegmentationDataset(root, "training")
    assert infer.main([str(ckpt), str(split), "--out", str(tmp_path), "--device", "cpu"]) == 0
    assert f"segmentation.bin (Waymo's SegmentationFrameList of {len(dataset)} frames)" in capsys.readouterr().out
    preds = []
    for index in range(len(dataset)):
        sample = dataset.load(index)
        labels = read_label(tmp_path / "labels" / f"{sample['frame_id']}.label", len(sample["points"])) & 0xFFFF
        preds.append({"pred_labels": labels.astype(np.int64), "point_labels": sample["point_labels"]})
    expected = SegmentationEvaluator(official="waymo")(dataset, preds)["mIoU_official"] / 100
    truth = write_segmentation_frames(tmp_path / "gt.bin", dataset.range_image_frames())
    assert eval_waymo.main([str(tmp_path / "segmentation.bin"), str(truth), "--segmentation"]) == 0
    assert f"miou={expected:.6g}" in capsys.readouterr().out


def test_test_set_frames_without_labels_come_from_a_frames_file(root, tmp_path):
    """The testing split has no labels: Waymo's frames file names the frames; their points are the labelled
    loader's, every label undefined, and the predictions' SegmentationFrameList holds exactly those frames."""
    import shutil

    from pc3d.eval.waymo_segmentation import read_segmentation_frames

    copy = tmp_path / "waymo"
    shutil.copytree(root, copy)
    shutil.rmtree(copy / "training" / "lidar_segmentation")
    labelled = WaymoSegmentationDataset(root, "training")
    segment, timestamp, _ = labelled.frames[0]
    listed = tmp_path / "3d_semseg_test_set_frames.txt"
    listed.write_text(f"{segment},{timestamp}\n")
    with pytest.raises(DataFormatError, match="lidar_segmentation"):
        WaymoSegmentationDataset(copy, "training")
    data = WaymoSegmentationDataset(copy, "training", frames_file=listed)
    sample = data.load(0)
    np.testing.assert_array_equal(sample["points"], labelled.load(0)["points"])
    assert len(data) == 1 and not sample["point_labels"].any()
    data.write_predictions([{"pred_labels": labelled.load(0)["point_labels"]}], tmp_path / "out")
    frames = read_segmentation_frames(tmp_path / "out" / "segmentation.bin")
    assert list(frames) == [(segment, timestamp)] and (frames[(segment, timestamp)][1] == 18).any()
    listed.write_text(f"{segment},{timestamp + 1}\n")
    with pytest.raises(DataFormatError, match=f"{listed}.*not in"):
        WaymoSegmentationDataset(copy, "training", frames_file=listed)
