"""Multi-sweep Waymo input (WaymoDataset n_past_scans): past sweeps of the segment moved into the current vehicle
frame by the vehicle poses, a time column, never across segments; the stream (ScanWindow over a Waymo source)
gives the same cloud bit for bit; GT sampling pastes single-sweep objects with time 0; a two-sweep detector
streams a segment through tools/infer.py as pc3d.Predictor does."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from pc3d.data import WaymoDataset
from pc3d.errors import ConfigError
from pc3d.infer.scan_window import window_of_dataset
from pc3d.infer.sources import WaymoSegments

CONFIG = {"n_past_scans": 2, "scan_period": 0.1}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    from pc3d.sim.api import simulate_dataset

    root = simulate_dataset("waymo", tmp_path_factory.mktemp("waymo"), frames=8, seed=3, columns=512,
                            sequence_length=4)  # two segments of four frames (one training, one validation)
    from pc3d.data.create import create_data

    create_data("waymo", str(root))
    create_data("waymo", str(root), sweeps=3)
    return root


def test_past_sweeps_move_into_the_current_frame_within_their_segment(world):
    single, multi = WaymoDataset(world, "training"), WaymoDataset(world, "training", **CONFIG)
    assert multi.feature_names == ("intensity", "elongation", "time") and single.feature_names[-1] == "elongation"
    segment = multi.frames[0][0]
    poses = multi.vehicle_poses(segment)
    stamps = sorted(poses)
    speed = np.linalg.norm(poses[stamps[1]][:3, 3] - poses[stamps[0]][:3, 3]) / ((stamps[1] - stamps[0]) * 1e-6)
    assert speed > 2.0  # the ego drives: moving the sweeps matters
    for index in range(len(multi)):
        points, current = multi.load(index)["points"], single.load(index)["points"]
        past = multi.past_frames(index)
        assert [p for p, _ in past] == [t for s, t, _ in multi.frames[max(index - 2, 0):index][::-1] if s == segment]
        times = np.unique(points[:, -1])
        np.testing.assert_allclose(np.sort(times)[::-1], -0.1 * np.arange(len(past) + 1), rtol=1e-6)
        np.testing.assert_array_equal(points[:len(current), :5], current)  # the current sweep first, unchanged
        assert (points[:len(current), 5] == 0).all()
    # the poses' convention: the previous frame's parked cars, moved by inv(world_from_current) world_from_past,
    # land on the current frame's (exactly: the world is static there), and the previous sweep is moved so
    from pc3d.data.semantickitti import relative_pose, transform_points

    (before, group), = multi.past_frames(index)[:1]
    move = relative_pose(multi.vehicle_pose(segment, multi.frames[index][1]), multi.vehicle_pose(segment, before))
    now, then = multi.read_boxes(segment, multi.frames[index][1])["box"], multi.read_boxes(segment, before)["box"]
    parked = now[np.hypot(now[:, 7], now[:, 8]) < 0.01, :3]
    moved = then[:, :3] @ move[:3, :3].T + move[:3, 3]
    gaps = np.linalg.norm(parked[:, None] - moved[None], axis=2).min(1)
    assert len(parked) >= 5 and np.median(gaps) < 1e-3 < np.linalg.norm(move[:3, 3]) * 0.5
    previous = points[np.isclose(points[:, 5], -0.1), :5]
    np.testing.assert_array_equal(previous, transform_points(multi.sweep(segment, before, group)[0], move))


def test_past_sweeps_are_merged_without_a_time_column_too(world):
    """time_channel=False drops the column, not the past sweeps (as SemanticKITTI's n_past_scans)."""
    timed = WaymoDataset(world, "training", **CONFIG)
    untimed = WaymoDataset(world, "training", **CONFIG, time_channel=False)
    assert untimed.feature_names == ("intensity", "elongation")
    for index in (1, 2):
        np.testing.assert_array_equal(untimed.load(index)["points"], timed.load(index)["points"][:, :5])


def test_a_segment_streamed_gives_the_dataset_cloud_bitwise(world):
    dataset = WaymoDataset(world, "training", labels=False, **CONFIG)
    source = WaymoSegments(world / "training", ("intensity", "elongation"))
    source.with_poses = True
    window = window_of_dataset(CONFIG)
    for item in source.items:
        sample = window(source.read(item))
        expected = dataset.load(item)["points"]
        assert sample["points"].dtype == np.float32 and np.array_equal(sample["points"], expected)


def test_gt_sampling_fills_the_time_column_of_pasted_objects(world):
    from pc3d.data.create import create_data
    from pc3d.data.gt_database import GTDatabase
    from pc3d.data.transforms import GTSampling

    dataset = WaymoDataset(world, "training", **CONFIG)
    database = world / "waymo_gt_database_training.json"
    sample = {**dataset.load(1), "gt_boxes": np.zeros((0, 9), np.float32), "gt_labels": np.zeros(0, np.int64)}
    rows = len(sample["points"])  # no box of its own: the database's objects (from this world) find room
    with pytest.raises(ConfigError, match="fill_time=true"):
        GTSampling(database, dataset.class_names, {"Vehicle": 30})(dict(sample), np.random.default_rng(0))
    pasted = GTSampling(database, dataset.class_names, {"Vehicle": 30}, min_points=1, fill_time=True)(
        {**sample, "points": sample["points"].copy()}, np.random.default_rng(0))
    assert len(pasted["gt_boxes"]) > 0 and pasted["points"].shape[1] == 6
    assert (pasted["points"][-5:, 5] == 0).all() and len(pasted["points"]) != rows
    # the database of three-sweep frames: objects keep their older sweeps' points and time
    three = world / "waymo_3sweeps_gt_database_training.json"
    database = GTDatabase.load(three)
    assert tuple(database.columns) == ("x", "y", "z", "intensity", "elongation", "time")
    np.testing.assert_allclose(np.unique(np.asarray(database.points)[:, 5]), [-0.2, -0.1, 0.0], rtol=1e-6)
    pasted = GTSampling(three, dataset.class_names, {"Vehicle": 30}, min_points=1)(
        {**sample, "points": sample["points"].copy()}, np.random.default_rng(0))
    assert len(pasted["gt_boxes"]) > 0 and pasted["points"].shape[1] == 6
    with pytest.raises(ConfigError, match="sweeps"):
        create_data("kitti", str(world), sweeps=2)


def test_a_two_sweep_detector_streams_a_segment(world, tmp_path):
    from conftest import experiment_checkpoint

    from pc3d.eval.box_json import read_box_json
    from pc3d.infer.predictor import Predictor

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    import infer

    ckpt = experiment_checkpoint(tmp_path / "runs", "centerpoint_sim_waymo_2sweeps", f"dataset.root={world}")
    segment = world / "validation"
    assert infer.main([str(ckpt), str(segment), "--out", str(tmp_path / "out"), "--device", "cpu"]) == 0
    predictor = Predictor(ckpt)
    dataset = WaymoDataset(world, "validation", labels=False)
    for name, timestamp, group in dataset.frames:
        pred = predictor(dataset.sweep(name, timestamp, group)[0], pose=dataset.vehicle_pose(name, timestamp))
        written = read_box_json(tmp_path / "out" / "json" / name / f"{timestamp}.json")
        assert len(written["boxes"]) == len(pred["boxes"]) > 0
        np.testing.assert_allclose(written["boxes"][:, :7], np.asarray(pred["boxes"])[:, :7], atol=1e-3)
    with pytest.raises(ConfigError, match="needs each scan's pose"):
        predictor(dataset.sweep(name, timestamp, group)[0])


def test_missing_or_bad_vehicle_poses_name_the_file(world, tmp_path):
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    from pc3d.errors import DataFormatError

    root = tmp_path / "copy"
    shutil.copytree(world, root)
    dataset = WaymoDataset(root, "training", **CONFIG)
    pose_file = dataset.component("vehicle_pose", dataset.frames[0][0])
    table = pq.read_table(pose_file)
    column = table.schema.get_field_index("[VehiclePoseComponent].world_from_vehicle.transform")
    values = table.column(column).to_pylist()
    values[1] = [float("nan")] * 16
    field = table.schema.field(column)
    pq.write_table(table.set_column(column, field, pa.array(values, field.type)), pose_file)
    with pytest.raises(DataFormatError, match=f"{pose_file}.*no finite 4 x 4 world_from_vehicle pose"):
        dataset.load(2)
    pose_file.unlink()
    with pytest.raises(DataFormatError, match=f"{pose_file}: file does not exist"):
        WaymoDataset(root, "training", **CONFIG).load(1)
    single = WaymoDataset(root, "training")  # one sweep needs no pose; the speeds are unknown without it
    with pytest.warns(UserWarning, match="speeds unknown without a vehicle_pose file"):
        sample = single.load(1)
    assert sample["points"].shape[1] == 5 and np.isnan(sample["metadata"]["annos"]["box"][:, 7:]).all()
