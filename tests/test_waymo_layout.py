"""Waymo v2 files laid out as real ones may be and the simulated world never writes them: a frame's lasers in
different row groups, a second return left absent (null), per-pixel TOP poses (rolling shutter) in a file of
several row groups. Each test rewrites a simulated segment's parquet files and compares against the original.
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from pc3d.data import WaymoDataset
from pc3d.errors import DataFormatError

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
LASER, TIMESTAMP = "key.laser_name", "key.frame_timestamp_micros"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from pc3d.sim.api import simulate_dataset

    return simulate_dataset("waymo", tmp_path_factory.mktemp("waymo"), frames=2, seed=5, columns=256,
                            sequence_length=2)


@pytest.fixture
def copy(world, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(world, root)
    return root


def _file(root, component):
    (path,) = (root / "training" / component).glob("*.parquet")
    return path


def test_a_frame_whose_lasers_span_row_groups_keeps_every_laser(world, copy):
    """TOP rows in one row group, a second laser (FRONT, the same image and calibration) in the next: both
    lasers' points come back, in every frame."""
    lidar, calib = _file(copy, "lidar"), _file(copy, "lidar_calibration")
    table = pq.read_table(lidar)
    front = table.set_column(table.schema.get_field_index(LASER), table.schema.field(LASER),
                             pa.array([2] * table.num_rows, pa.int8()))
    pq.write_table(pa.concat_tables([table, front]), lidar, row_group_size=table.num_rows)
    assert pq.ParquetFile(lidar).num_row_groups == 2
    table = pq.read_table(calib)
    pq.write_table(pa.concat_tables([table, table.set_column(table.schema.get_field_index(LASER),
                                                             table.schema.field(LASER), pa.array([2], pa.int8()))]),
                   calib)
    original, spanning = WaymoDataset(world, "training"), WaymoDataset(copy, "training")
    assert [f[2] for f in spanning.frames] == [(0, 1), (0, 1)]
    for (segment, timestamp, group), (_, _, groups) in zip(original.frames, spanning.frames, strict=True):
        one = original.read_points(segment, timestamp, group)
        both = spanning.read_points(segment, timestamp, groups)
        np.testing.assert_array_equal(both, np.concatenate([one, one]))


def test_an_absent_second_return_reads_as_no_points(world, copy):
    lidar = _file(copy, "lidar")
    table = pq.read_table(lidar)
    for field in ("values", "shape"):
        name = f"[LiDARComponent].range_image_return2.{field}"
        index = table.schema.get_field_index(name)
        field = table.schema.field(index)
        table = table.set_column(index, field, pa.nulls(table.num_rows, field.type))
    pq.write_table(table, lidar)
    original, absent = WaymoDataset(world, "training", returns=(1,)), WaymoDataset(copy, "training")
    segment, timestamp, group = original.frames[0]
    with pytest.warns(UserWarning, match="absent"):
        points = absent.read_points(segment, timestamp, group)
    np.testing.assert_array_equal(points, original.read_points(segment, timestamp, group))
    half = table.set_column(index, table.schema.field(index), pq.read_table(_file(world, "lidar")).column(index))
    pq.write_table(half, lidar)  # shape present, values null: a damaged file, not an absent return
    with pytest.raises(DataFormatError, match=f"{lidar}.*null range image values"):
        WaymoDataset(copy, "training").read_points(segment, timestamp, group)


def _euler(rotation: np.ndarray) -> np.ndarray:
    """(roll, pitch, yaw) of R = Rz(yaw) Ry(pitch) Rx(roll)."""
    return np.array([np.arctan2(rotation[2, 1], rotation[2, 2]), -np.arcsin(rotation[2, 0]),
                     np.arctan2(rotation[1, 0], rotation[0, 0])])


def test_pixel_poses_in_a_file_of_several_row_groups_correct_each_point(world, copy):
    """Every pixel posed at the frame's vehicle pose leaves the points where they were; posed 1 m further along
    the world's x axis moves each point by that metre, turned into the vehicle frame."""
    original = WaymoDataset(world, "training")
    segment = original.frames[0][0]

    def write_poses(shift: float) -> None:
        rows = []
        for _, timestamp, group in original.frames:
            pose = original.vehicle_pose(segment, timestamp)
            h, w = original.range_image_shape(segment, timestamp, group, 1, 1)
            pixel = np.concatenate([_euler(pose[:3, :3]), pose[:3, 3] + [shift, 0.0, 0.0]])
            rows.append(np.tile(pixel, (h, w, 1)).astype(np.float32))
        table = pa.table({"key.segment_context_name": [segment] * len(rows),
                          TIMESTAMP: pa.array([t for _, t, _ in original.frames], pa.int64()),
                          LASER: pa.array([1] * len(rows), pa.int8()),
                          "[LiDARPoseComponent].range_image_return1.values": pa.array(
                              [r.ravel() for r in rows], pa.list_(pa.float32())),
                          "[LiDARPoseComponent].range_image_return1.shape": pa.array(
                              [list(r.shape) for r in rows], pa.list_(pa.int32(), 3))})
        path = copy / "training" / "lidar_pose" / f"{segment}.parquet"
        path.parent.mkdir(exist_ok=True)
        pq.write_table(table, path, row_group_size=1)

    for shift in (0.0, 1.0):
        write_poses(shift)
        posed = WaymoDataset(copy, "training")
        for _, timestamp, group in original.frames:
            before = original.read_points(segment, timestamp, group)
            after = posed.read_points(segment, timestamp, group)
            move = original.vehicle_pose(segment, timestamp)[:3, :3].T @ [shift, 0.0, 0.0]
            np.testing.assert_allclose(after[:, :3] - before[:, :3], np.broadcast_to(move, before[:, :3].shape),
                                       atol=2e-3)
            np.testing.assert_array_equal(after[:, 3:], before[:, 3:])
