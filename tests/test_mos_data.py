"""SemanticKITTI-MOS data: pose chaining, the 4D window and its voxels, label mapping, boxes, the moving IoU
over a sequence, and bad pose / calibration files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from pc3d.data import SemanticKittiDataset
from pc3d.data.batch import Collate, check_sample, sparse_input
from pc3d.data.semantickitti import (
    fit_box,
    instance_boxes,
    lidar_poses,
    reduce_scan,
    relative_pose,
    voxel_mode,
)
from pc3d.errors import DataFormatError
from pc3d.eval.hooks import MosEvaluator
from pc3d.voxel import TemporalVoxelizer

ROOT = Path(__file__).resolve().parents[1]
# velodyne -> camera: x_cam = -y_velo, y_cam = -z_velo, z_cam = x_velo, then a small offset
TR = np.array([[0.0, -1, 0, 0.1], [0, 0, -1, -0.2], [1, 0, 0, 0.3], [0, 0, 0, 1]])


def rigid(yaw: float, t) -> np.ndarray:
    m = np.eye(4)
    c, s = np.cos(yaw), np.sin(yaw)
    m[:2, :2] = [[c, -s], [s, c]]
    m[:3, 3] = t
    return m


def write_sequence(root: Path, scans, raw_labels, camera_poses, tr=TR, seq: str = "00") -> Path:
    folder = root / "sequences" / seq
    (folder / "velodyne").mkdir(parents=True)
    (folder / "labels").mkdir()
    for i, (points, labels) in enumerate(zip(scans, raw_labels, strict=True)):
        np.asarray(points, "<f4").tofile(folder / "velodyne" / f"{i:06d}.bin")
        np.asarray(labels, "<u4").tofile(folder / "labels" / f"{i:06d}.label")
    (folder / "poses.txt").write_text("".join(" ".join(f"{v:.17g}" for v in p[:3].ravel()) + "\n"
                                              for p in camera_poses))
    (folder / "calib.txt").write_text("P0: " + " ".join(["0"] * 12) + "\nTr: " +
                                      " ".join(f"{v:.17g}" for v in tr[:3].ravel()) + "\n")
    (folder / "times.txt").write_text("".join(f"{0.1 * i}\n" for i in range(len(scans))))
    return folder


def two_frames(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """Scan 0 sees a point at (5, 0, 0); between the scans the LiDAR turns 90 degrees left and moves by
    (2, 1, 0) (in scan 0's frame). Camera poses: P_i = P0 Tr M_i Tr^-1 with a P0 that is not the identity
    (poses.txt need not start at the origin)."""
    p0 = rigid(0.3, (1.0, 2.0, 3.0))
    motion = rigid(np.pi / 2, (2.0, 1.0, 0.0))
    poses = [p0, p0 @ TR @ motion @ np.linalg.inv(TR)]
    scans = [np.array([[5.0, 0, 0, 0.5]]), np.array([[1.0, 1, 1, 0.25]])]
    write_sequence(tmp_path, scans, [np.array([252]), np.array([40])], poses)
    return tmp_path, motion


def test_pose_chaining_two_frames(tmp_path):
    root, motion = two_frames(tmp_path)
    folder = root / "sequences" / "00"
    poses = lidar_poses(folder / "poses.txt", folder / "calib.txt")
    np.testing.assert_allclose(poses[0], np.eye(4), atol=1e-12)  # Tr^-1 P0^-1 P0 Tr
    np.testing.assert_allclose(poses[1], motion, atol=1e-12)
    # the past point (5, 0, 0) in the current frame: R^T ((5, 0, 0) - (2, 1, 0)) = (-1, -3, 0)
    np.testing.assert_allclose(relative_pose(poses[1], poses[0]) @ [5, 0, 0, 1], [-1, -3, 0, 1], atol=1e-12)
    ds = SemanticKittiDataset(root, sequences=[0], mode="mos", n_past_scans=1, scan_period=0.1)
    s = ds.load(1)
    check_sample(s)
    np.testing.assert_allclose(s["points"], [[1, 1, 1, 0.25, 0], [-1, -3, 0, 0.5, -0.1]], atol=1e-6)
    assert s["num_current_points"] == 1 and s["point_frame"].tolist() == [0, 1]
    assert s["point_labels"].tolist() == [1, 2] and s["moving_labels"].tolist() == [0, 1]
    first = ds.load(0)  # the first scan of a sequence has no past
    assert first["points"].shape == (1, 5) and first["point_frame"].tolist() == [0]


def test_full_windows_leave_a_sequences_first_scans_out_of_training_only(tmp_path):
    poses = [rigid(0.0, (k, 0, 0)) for k in range(4)]
    scans = [np.array([[5.0 + k, 0, 0, 0.5]]) for k in range(4)]
    write_sequence(tmp_path, scans, [np.array([40])] * 4, poses)
    root = tmp_path
    frames = {training: SemanticKittiDataset(root, sequences=[0], mode="mos", n_past_scans=2, scan_period=0.1,
                                             full_windows=True, training=training).frames for training in (True, False)}
    assert frames[True] == [("00", "000002"), ("00", "000003")]  # scans 0 and 1 have fewer than 2 before them
    assert len(frames[False]) == 4  # evaluation scores every scan
    assert len(SemanticKittiDataset(root, sequences=[0], mode="mos", n_past_scans=2, scan_period=0.1,
                                    training=True).frames) == 4


def test_times_follow_the_scan_index_with_a_scan_period(tmp_path):
    root, _ = two_frames(tmp_path)
    (root / "sequences" / "00" / "times.txt").write_text("0.0\n0.1036\n")  # KITTI's real spacing
    assert SemanticKittiDataset(root, sequences=[0], n_past_scans=1).load(1)["point_time"][1] == np.float32(-0.1036)
    with_period = SemanticKittiDataset(root, sequences=[0], n_past_scans=1, scan_period=0.1)
    assert with_period.load(1)["point_time"].tolist() == [0.0, np.float32(-0.1)]
    (root / "sequences" / "00" / "times.txt").unlink()  # not read with a scan period
    assert with_period.load(1)["points"].shape == (2, 5)


def test_label_mapping_of_the_mos_learning_map(tmp_path):
    raw = np.array([0, 1, 9, 10, 11, 30, 40, 44, 50, 70, 80, 99, 251, 252, 253, 254, 255, 256, 257, 258, 259])
    instance = np.arange(len(raw), dtype=np.uint32) << 16  # instance bits must not matter
    points = np.zeros((len(raw), 4))
    points[:, 0] = np.arange(len(raw))
    write_sequence(tmp_path, [points], [raw.astype(np.uint32) | instance], [np.eye(4)])
    s = SemanticKittiDataset(tmp_path, sequences=[0], mode="mos").load(0)
    expected = np.where(raw >= 251, 2, np.where(raw <= 1, 0, 1))
    np.testing.assert_array_equal(s["point_labels"], expected)
    np.testing.assert_array_equal(s["moving_labels"], expected - 1)  # 1 moving, 0 static, -1 ignored
    assert SemanticKittiDataset(tmp_path, sequences=[0], mode="mos").class_names == ["unlabeled", "static", "moving"]


def test_moving_iou_counts_all_points_of_the_sequence(tmp_path):
    # frame 0: gt moving moving static unlabelled, pred 1 0 0 1 -> tp 1, fn 1 (unlabelled ignored)
    # frame 1: gt static static moving,          pred 1 1 1   -> tp 1, fp 2
    # pooled: tp 2, fp 2, fn 1 -> IoU 2 / 5 = 40 % (a mean of per-frame IoUs would be (1/2 + 1/3) / 2)
    raws = [np.array([252, 254, 40, 0]), np.array([50, 10, 259])]
    scans = [np.zeros((4, 4)), np.zeros((3, 4))]
    write_sequence(tmp_path, scans, raws, [np.eye(4)] * 2)
    ds = SemanticKittiDataset(tmp_path, sequences=[0], mode="mos", n_past_scans=1, scan_period=0.1)
    preds = [{"frame_id": "00/000000", "moving": np.array([1, 0, 0, 1], np.uint8)},
             {"frame_id": "00/000001", "moving": np.array([1, 1, 1], np.uint8)}]
    m = MosEvaluator()(ds, preds)
    assert m["moving_IoU"] == pytest.approx(40.0)
    assert m["num_points"] == 7 and m["num_moving"] == 3


def test_window_4d_voxels_against_numpy(tmp_path):
    """The MOS config's 4D voxels (0.1 m x 0.1 s, 10 scans) of a window: every scan k in time cell 9 - k,
    coords and mean features as a numpy reference computes them."""
    cfg = OmegaConf.load(ROOT / "configs" / "dataset" / "semantickitti_mos.yaml")
    vox_cfg = OmegaConf.to_container(cfg.voxelizer, resolve=True)
    voxelizer = TemporalVoxelizer(vox_cfg["voxel_size"], vox_cfg["point_range"], vox_cfg["dt"],
                                  vox_cfg["time_range"], vox_cfg["time_column"])
    rng = np.random.default_rng(0)
    n_scans = cfg.n_past_scans + 1
    scans = [np.concatenate([rng.uniform(-3, 3, (200, 3)), rng.uniform(0, 1, (200, 1))], 1) for _ in range(n_scans)]
    poses = [rigid(0.02 * i, (0.5 * i, 0.1 * i, 0.0)) for i in range(n_scans)]
    write_sequence(tmp_path, scans, [np.full(200, 40)] * n_scans, [TR @ p @ np.linalg.inv(TR) for p in poses])
    ds = SemanticKittiDataset(tmp_path, sequences=[0], mode="mos", n_past_scans=cfg.n_past_scans,
                              scan_period=cfg.scan_period, past_voxel_size=cfg.past_voxel_size)
    sample = ds.load(n_scans - 1)
    batch = Collate(voxelizer)([sample])
    coords, p2v = batch["voxel_coords"].numpy(), batch["point_to_voxel"].numpy()
    pts = sample["points"]
    inside = (pts[:, 2] >= -3) & (pts[:, 2] < 1)  # z over [-3, 1): the rest is left out (-1)
    assert 0 < inside.sum() < len(pts) and ((p2v >= 0) == inside).all()
    assert (coords[p2v[inside], 1] == 9 - sample["point_frame"][inside]).all()
    # numpy reference: float32 cells of (x, y, z, t), unique (t, z, y, x), mean of every column
    pts = pts[inside]
    lower = np.array([*vox_cfg["point_range"][:3], vox_cfg["time_range"][0]], np.float32)
    size = np.array([*vox_cfg["voxel_size"], vox_cfg["dt"]], np.float32)
    cells = np.floor((pts[:, [0, 1, 2, 4]] - lower) / size).astype(np.int64)
    ref, inverse = np.unique(cells[:, ::-1], axis=0, return_inverse=True)
    np.testing.assert_array_equal(coords[:, 1:], ref)
    means = np.stack([np.bincount(inverse.ravel(), pts[:, c].astype(np.float64)) for c in range(5)], 1)
    means /= np.bincount(inverse.ravel())[:, None]
    np.testing.assert_allclose(sparse_input(batch).features.numpy(), means, rtol=1e-5, atol=1e-6)


def test_reduce_scan_and_voxel_mode():
    points = np.array([[0.01, 0.01, 0.01, 1.0], [0.05, 0.02, 0.03, 3.0], [0.5, 0.5, 0.5, 2.0]], np.float32)
    reduced, inverse = reduce_scan(points, 0.1)
    assert len(reduced) == 2 and inverse[0] == inverse[1] != inverse[2]
    np.testing.assert_allclose(reduced[inverse[0]], [0.03, 0.015, 0.02, 2.0], atol=1e-7)
    np.testing.assert_array_equal(reduced[inverse[2]], points[2])
    # majority per voxel, ties to the smaller value
    assert voxel_mode(np.array([2, 1, 2, 5, 7]), np.array([0, 0, 0, 1, 1]), 2).tolist() == [2, 5]


def test_fitted_boxes():
    rng = np.random.default_rng(1)
    # a 4 x 2 x 1.5 m box turned by 0.5 rad, sampled on a symmetric grid: its BEV covariance has the box
    # axes as eigenvectors, so the fit is exact (hand-computed: centre (10, 5, -0.25), heading 0.5)
    local = np.stack(np.meshgrid(np.linspace(-2, 2, 20), np.linspace(-1, 1, 10), [0.0, 1.5]), -1).reshape(-1, 3)
    c, s = np.cos(0.5), np.sin(0.5)
    xyz = local @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]).T + [10, 5, -1]
    np.testing.assert_allclose(fit_box(xyz), [10, 5, -0.25, 4, 2, 1.5, 0.5], atol=1e-4)
    raw = np.concatenate([np.full(400, 252), np.full(3, 30), np.full(6, 40)])
    inst = np.concatenate([np.full(400, 7), np.full(3, 8), np.zeros(6, np.int64)])
    xyz = xyz[rng.permutation(len(xyz))]
    cloud = np.concatenate([xyz, rng.normal(size=(9, 3))])
    boxes, labels, ids = instance_boxes(cloud, raw, inst)  # the 3-point pedestrian is too small, road is no box
    assert labels.tolist() == [1] and ids.tolist() == [7] and boxes.shape == (1, 7)
    line = fit_box(np.array([[0.0, 0, 0], [1, 0, 0], [2, 0, 0]]))  # one scan line: no width, no height
    np.testing.assert_allclose(line, [1, 0, 0, 2, 0.1, 0.1, 0], atol=1e-6)


def test_simulated_sequences_carry_exact_boxes(tmp_path):
    from pc3d.sim.api import simulate_dataset

    root = simulate_dataset("semantickitti_mos", tmp_path, frames=2, seed=3, columns=512, sequence_length=2)
    ds = SemanticKittiDataset(root, sequences=[0], mode="mos", n_past_scans=1, scan_period=0.1, past_voxel_size=0.1)
    s = ds.load(1)
    check_sample(s)
    rows = np.loadtxt(root / "sequences" / "00" / "boxes" / "000001.txt", ndmin=2)
    assert s["gt_boxes"].shape[1] == 7 and len(s["gt_boxes"]) > 0 and set(s["gt_labels"].tolist()) <= {1, 2, 3}
    for box in s["gt_boxes"]:  # every box is a row of the simulator's file
        assert np.abs(rows[:, 2:9] - box).max(1).min() < 1e-5
    batch = Collate()([s])
    assert batch["gt_boxes"].shape[2] == 8 and int(batch["num_gt"][0]) == len(s["gt_boxes"])


@pytest.mark.parametrize("damage", ["missing poses", "fewer poses", "non-numeric pose", "missing Tr",
                                    "missing calib"])
def test_bad_poses_name_the_file(tmp_path, damage):
    root, _ = two_frames(tmp_path)
    folder = root / "sequences" / "00"
    poses, calib = folder / "poses.txt", folder / "calib.txt"
    if damage == "missing poses":
        poses.unlink()
        culprit = poses
    elif damage == "fewer poses":
        poses.write_text(poses.read_text().splitlines()[0] + "\n")
        culprit = poses
    elif damage == "non-numeric pose":
        poses.write_text(poses.read_text().replace("1", "x", 1))
        culprit = poses
    elif damage == "missing Tr":
        calib.write_text("P0: " + " ".join(["0"] * 12) + "\n")
        culprit = calib
    else:
        calib.unlink()
        culprit = calib
    ds = SemanticKittiDataset(root, sequences=[0], mode="mos", n_past_scans=1, scan_period=0.1)
    with pytest.raises(DataFormatError) as info:
        ds.load(0)  # even the first scan: the sequence's poses are read and checked as a whole
    assert info.value.path == str(culprit)


def test_past_scan_cache_gives_the_same_samples(tmp_path):
    rng = np.random.default_rng(2)
    scans = [np.concatenate([rng.uniform(-3, 3, (100, 3)), rng.uniform(0, 1, (100, 1))], 1) for _ in range(5)]
    raws = [rng.choice([40, 252, 0], 100) for _ in range(5)]
    write_sequence(tmp_path, scans, raws, [TR @ rigid(0.1 * i, (i, 0, 0)) @ np.linalg.inv(TR) for i in range(5)])
    settings = {"sequences": [0], "mode": "mos", "n_past_scans": 2, "scan_period": 0.1, "past_voxel_size": 0.5}
    plain = SemanticKittiDataset(tmp_path, **settings)
    cached = SemanticKittiDataset(tmp_path, past_scan_cache=2, **settings)
    for i in (4, 3, 4, 2, 1, 4):
        a, b = plain.load(i), cached.load(i)
        for key in ("points", "point_labels", "instance_ids", "moving_labels", "point_time", "point_frame"):
            assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), key
    assert list(cached._reduced) == [("00", "000003"), ("00", "000002")]  # the two most recent past scans
    (tmp_path / "sequences" / "00" / "velodyne" / "000003.bin").unlink()
    cached.load(4)  # scans 3 and 2 come from the cache: no file read
    with pytest.raises(DataFormatError, match="000003.bin"):
        plain.load(4)
