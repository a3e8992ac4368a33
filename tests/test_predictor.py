"""pc3d.infer.predictor.Predictor on untrained models of the experiment configs: the same prediction as
tools/infer.py gives for the same frame, per task, and clear errors for bad clouds."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import experiment_checkpoint

import pc3d
from pc3d.errors import ConfigError, DataFormatError
from pc3d.infer.outputs import label_space
from pc3d.infer.predictor import Predictor
from pc3d.sim.api import simulate_dataset

ROOT = Path(__file__).resolve().parents[1]


def read_scan(path: Path) -> np.ndarray:
    return np.fromfile(path, np.float32).reshape(-1, 4)
sys.path.insert(0, str(ROOT / "tools"))

import infer  # noqa: E402


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sim")
    simulate_dataset("kitti", root / "kitti", frames=2, seed=0, columns=512)
    simulate_dataset("semantickitti", root / "semantickitti", frames=2, seed=0, columns=512, sequence_length=2)
    return root


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runs")


def kitti_detector(runs: Path, data: Path) -> Path:
    # every candidate kept: an untrained head scores under the recipe's 0.1
    return experiment_checkpoint(runs, "pointpillars_sim_kitti", f"dataset.root={data / 'kitti'}",
                                 "model.dense_head.score_threshold=0.0", "model.post_process.score_threshold=0.0",
                                 "model.post_process.post_max_size=50")


def test_detection_equals_tools_infer_with_the_camera_crop(data, runs, tmp_path):
    ckpt = kitti_detector(runs, data)
    assert infer.main([str(ckpt), str(data / "kitti"), "--split", "train", "--out", str(tmp_path),
                       "--device", "cpu"]) == 0
    frame = (data / "kitti" / "ImageSets" / "train.txt").read_text().split()[0]
    points = np.fromfile(data / "kitti" / "training" / "velodyne" / f"{frame}.bin", np.float32).reshape(-1, 4)
    predictor = pc3d.Predictor(ckpt.parent.parent)  # the run folder; pc3d.Predictor is imported on first use
    assert isinstance(predictor, Predictor)
    assert predictor.task == "detection" and predictor.columns == ("x", "y", "z", "intensity")
    pred = predictor(points, calib=data / "kitti" / "training" / "calib" / f"{frame}.txt", frame_id=frame)
    written = json.loads((tmp_path / "json" / f"{frame}.json").read_text())
    assert len(pred["boxes"]) == len(written["boxes"]) == 50
    np.testing.assert_allclose(pred["boxes"], written["boxes"], atol=1e-4)
    np.testing.assert_allclose(pred["scores"], written["scores"], atol=1e-4)
    assert pred["names"] == written["names"]
    assert 0 < pred["kept"].sum() < len(points) // 2  # the camera's 90 degrees of a 360-degree sweep
    without_crop = predictor(points)
    assert "kept" not in without_crop and not np.array_equal(without_crop["boxes"], pred["boxes"])


def test_segmentation_equals_tools_infer_per_point(data, runs, tmp_path):
    ckpt = experiment_checkpoint(runs, "sim_semantickitti_seg", f"dataset.root={data / 'semantickitti'}")
    sequence = data / "semantickitti" / "sequences" / "00"
    assert infer.main([str(ckpt), str(sequence), "--out", str(tmp_path / "infer"), "--device", "cpu"]) == 0
    predictor = Predictor(ckpt)
    scan = sorted((sequence / "velodyne").glob("*.bin"))[0]
    points = read_scan(scan)
    original = points.copy()
    pred = predictor(points, frame_id=f"00/{scan.stem}")
    assert np.array_equal(points, original)  # the caller's array is not touched
    assert pred["pred_labels"].shape == (len(points),)
    mine = label_space(dict(predictor.config.dataset), 20).write(f"00/{scan.stem}", pred["pred_labels"],
                                                                  tmp_path / "mine")
    theirs = tmp_path / "infer" / "labels" / "sequences" / "00" / "predictions" / f"{scan.stem}.label"
    assert mine.read_bytes() == theirs.read_bytes()


def test_bad_clouds_are_clear_errors_and_nan_rows_drop_on_request(data, runs):
    predictor = Predictor(experiment_checkpoint(runs, "sim_semantickitti_seg",
                                                f"dataset.root={data / 'semantickitti'}"))
    points = read_scan(sorted((data / "semantickitti" / "sequences" / "00" / "velodyne").glob("*.bin"))[0])
    with pytest.raises(DataFormatError, match=r"\[N, 4\] of columns x, y, z, intensity, got float32 \[\d+, 3\]"):
        predictor(points[:, :3])
    with pytest.raises(DataFormatError, match="empty"):
        predictor(points[:0])
    bad = points.copy()
    bad[[5, 9]] = np.nan
    with pytest.raises(DataFormatError, match=r"2 of \d+ rows have NaN / inf values \(the first: row 5\); "
                                              "drop_nonfinite=True"):
        predictor(bad)
    pred = predictor(bad, drop_nonfinite=True)
    assert pred["kept"].sum() == len(points) - 2 and not pred["kept"][[5, 9]].any()
    assert len(pred["pred_labels"]) == len(points) - 2
    np.testing.assert_array_equal(pred["pred_labels"], predictor(points[pred["kept"]])["pred_labels"])
    with pytest.raises(DataFormatError, match=r"4 of 4 rows .*row 0\)$"):
        predictor(np.full((4, 4), np.nan, np.float32), drop_nonfinite=True)
    with pytest.raises(ConfigError, match="points2 is for scene-flow models"):
        predictor(points, points)


def test_scene_flow_takes_a_pair_and_windowed_mos_is_refused(runs):
    flow = Predictor(experiment_checkpoint(runs, "sctn_sim"))
    rng = np.random.default_rng(0)
    first = rng.uniform(-10, 10, (512, 3)).astype(np.float32)
    pred = flow(first, first + np.float32([0.5, 0.0, 0.0]))
    assert pred["flow"].shape == (512, 3) and np.isfinite(pred["flow"]).all()
    with pytest.raises(ConfigError, match="two clouds"):
        flow(first)
    with pytest.raises(ConfigError, match="past scans"):
        Predictor(experiment_checkpoint(runs, "mos_sim"))
