"""Waymo v2 conventions pc3d reads and writes: box speeds in world axes (vehicle frame inside pc3d), the box
component's optional fields (speed, difficulty level) left empty, predictions' velocities turned by their poses.
"""
from __future__ import annotations

import re

import numpy as np
import pytest

from pc3d.data import WaymoDataset
from pc3d.errors import DataFormatError

pq = pytest.importorskip("pyarrow.parquet")
pa = pytest.importorskip("pyarrow")
BOX = "[LiDARBoxComponent]"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from pc3d.sim.api import simulate_dataset

    return simulate_dataset("waymo", tmp_path_factory.mktemp("waymo"), frames=2, seed=4, columns=512,
                            sequence_length=2)


def test_speeds_are_world_axes_in_the_file_and_vehicle_frame_in_pc3d(world):
    """A car drives where it heads: in the file its speed points along its heading plus the ego's yaw (world
    axes), and read_boxes gives it along the vehicle-frame heading."""
    ds = WaymoDataset(world, "training")
    segment, timestamp, _ = ds.frames[1]
    table = pq.read_table(ds.component("lidar_box", segment))
    rows = np.flatnonzero(table.column("key.frame_timestamp_micros").to_numpy() == timestamp)
    speed = np.stack([table.column(f"{BOX}.speed.{a}").to_numpy()[rows] for a in "xyz"], 1)
    pose = ds.vehicle_pose(segment, timestamp)
    yaw = np.arctan2(pose[1, 0], pose[0, 0])
    box = ds.read_boxes(segment, timestamp)["box"].astype(np.float64)
    moving = np.flatnonzero((np.hypot(*speed[:, :2].T) > 2) & (ds.read_boxes(segment, timestamp)["name"] == "Vehicle"))
    assert len(moving) >= 2 and abs(yaw) > 0.05
    wrap = lambda a: (a + np.pi) % (2 * np.pi) - np.pi  # noqa: E731
    world_direction = np.arctan2(speed[moving, 1], speed[moving, 0])
    np.testing.assert_allclose(wrap(world_direction - box[moving, 6] - yaw), 0, atol=0.05)
    vehicle_direction = np.arctan2(box[moving, 8], box[moving, 7])
    np.testing.assert_allclose(wrap(vehicle_direction - box[moving, 6]), 0, atol=0.05)
    np.testing.assert_allclose(box[:, 7:9], (speed @ pose[:3, :3])[:, :2], atol=1e-4)


def test_empty_optional_box_fields_read_as_unknown(world, tmp_path):
    """v2's speed and difficulty_level are optional: an empty entry reads as NaN / 0 (UNKNOWN), not an error;
    an empty required value (a box centre) still is one, naming the file."""
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(world, root)
    ds = WaymoDataset(root, "training")
    segment, timestamp, _ = ds.frames[0]
    path = ds.component("lidar_box", segment)
    table = pq.read_table(path)
    rows = np.flatnonzero(table.column("key.frame_timestamp_micros").to_numpy() == timestamp)

    def empty(table, column, row):
        values = table.column(column).to_pylist()
        values[row] = None
        index = table.schema.get_field_index(column)
        return table.set_column(index, table.schema.field(index), pa.array(values, table.schema.field(index).type))

    damaged = table
    for column in (f"{BOX}.speed.x", f"{BOX}.speed.y", f"{BOX}.speed.z"):
        damaged = empty(damaged, column, int(rows[0]))
    for column in (f"{BOX}.difficulty_level.detection", f"{BOX}.difficulty_level.tracking"):
        damaged = empty(damaged, column, int(rows[1]))
    pq.write_table(damaged, path)
    before = WaymoDataset(world, "training").read_boxes(segment, timestamp)
    after = WaymoDataset(root, "training").read_boxes(segment, timestamp)
    assert np.isnan(after["box"][0, 7:]).all() and after["difficulty"][1] == 0 and after["tracking_difficulty"][1] == 0
    np.testing.assert_array_equal(after["box"][1:], before["box"][1:])
    np.testing.assert_array_equal(np.delete(after["difficulty"], 1), np.delete(before["difficulty"], 1))
    pq.write_table(empty(table, f"{BOX}.box.center.x", int(rows[0])), path)
    with pytest.raises(DataFormatError, match=f"{path}.*null values in {re.escape(BOX)}.box.center.x"):
        WaymoDataset(root, "training").read_boxes(segment, timestamp)


def test_prediction_velocities_are_written_in_world_axes(tmp_path):
    from pc3d.data.waymo_parquet import read_box_predictions, write_box_predictions

    yaw = 0.7
    pose = np.eye(4)
    pose[:2, :2] = [[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]]
    boxes = np.array([[10.0, 2.0, 0.5, 4.0, 2.0, 1.5, 0.2, 5.0, 0.0]])
    frames = [(7, {"boxes": boxes, "scores": np.ones(1), "labels": np.ones(1, np.int64)})]
    path = tmp_path / "segment.parquet"
    with pytest.raises(DataFormatError, match="world_from_vehicle pose"):
        write_box_predictions(path, "segment", frames, ["Vehicle"])
    write_box_predictions(path, "segment", frames, ["Vehicle"], {7: pose})
    assert pq.read_schema(path).field(f"{BOX}.type").type == pa.int8()  # as v2's box component
    np.testing.assert_allclose(read_box_predictions(path)[7]["boxes"][0, 7:], 5 * np.array([np.cos(yaw), np.sin(yaw)]))
    np.testing.assert_allclose(read_box_predictions(path, {7: pose})[7]["boxes"], boxes, atol=1e-12)


def test_a_kitti_models_classes_are_written_as_waymo_types(tmp_path):
    """A KITTI model run over Waymo frames (tools/infer.py): its Car is Vehicle in both prediction files, as
    cross-dataset work pairs them; a class that is no Waymo type is TYPE_UNKNOWN, with a warning counting its
    boxes; Waymo's own names match in any case."""
    from pc3d.data.waymo_parquet import read_box_predictions, waymo_type_ids, write_box_predictions
    from pc3d.eval.waymo_objects import prediction_frames, read_objects, write_objects

    ids, unmapped = waymo_type_ids(["Car", "Pedestrian", "Cyclist", "Van", "VEHICLE", "sign"])
    assert ids.tolist() == [1, 2, 4, 0, 1, 3] and unmapped == ["Van"]
    names = ["Car", "Pedestrian", "Van"]
    boxes = np.array([[10.0, 2.0, 0.5, 4.0, 2.0, 1.5, 0.2]] * 4)
    frames = [(7, {"boxes": boxes, "scores": np.full(4, 0.5), "labels": np.array([1, 2, 3, 3])})]
    write_box_predictions(tmp_path / "segment.parquet", "segment", frames, names)
    assert read_box_predictions(tmp_path / "segment.parquet")[7]["types"].tolist() == [
        "Vehicle", "Pedestrian", "Unknown", "Unknown"]
    with pytest.warns(UserWarning, match=r"\['Van'\] name no Waymo object type: their 2 box\(es\)"):
        write_objects(tmp_path / "objects.bin", prediction_frames({"segment": frames}, names))
    assert read_objects(tmp_path / "objects.bin")["segment", 7]["types"].tolist() == [
        "vehicle", "pedestrian", "unknown", "unknown"]
