"""Waymo v2 3D segmentation: range-image label mapping, the simulated lidar_segmentation component, the loader
and its bad inputs."""
from __future__ import annotations

import numpy as np
import pytest

from pc3d.data.waymo_seg import WAYMO_SEG_CLASSES, WaymoSegmentationDataset, range_image_labels
from pc3d.errors import DataFormatError
from pc3d.sim.api import simulate_dataset


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
