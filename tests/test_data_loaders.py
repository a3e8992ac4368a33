"""Round trips from every simulated-world writer through its pc3d.data loader, and the real samples."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import sample_path

from pc3d.data import (
    KittiDataset,
    ScanNetDataset,
    SceneFlowDataset,
    SemanticKittiDataset,
    SimulatedKittiDataset,
    WaymoDataset,
)
from pc3d.data.io import read_bin
from pc3d.data.kitti import IMAGE_SHAPE, camera_boxes, fov_mask, parse_label
from pc3d.data.ply import read_ply_vertices
from pc3d.data.scannet import nyu40_to_scannet20
from pc3d.data.semantickitti import LEARNING_MAPS, load_learning_map, lookup_table
from pc3d.errors import ConfigError, DataFormatError
from pc3d.eval.sceneflow import project
from pc3d.geometry import boxes_lidar_to_camera, points_in_boxes_count
from pc3d.sim.api import outdoor_frames, sensor_spec, simulate_dataset
from pc3d.sim.ground_truth import kitti_calib, kitti_objects
from pc3d.sim.labels import KITTI_TYPE, SCANNET20_IDS, WAYMO_TYPE
from pc3d.sim.sensor import velodyne_file_order


def _sim_frames(n, seed, sensor, frames_per_scene, spacing=0.1):
    return [f for _, _, f in outdoor_frames(n, seed, sensor_spec(sensor), frames_per_scene=frames_per_scene,
                                            spacing=spacing)]


def test_kitti_round_trip(tmp_path):
    root = simulate_dataset("kitti", tmp_path, frames=2, seed=0)
    ds = KittiDataset(root, "trainval", fov_only=False)
    calib = kitti_calib()
    for frame, i in zip(_sim_frames(2, 0, "kitti", 5, spacing=1.0), range(2), strict=True):
        raw = ds.load(i)
        np.testing.assert_array_equal(raw["points"], frame.points[velodyne_file_order(frame.sweep)])
        annos = raw["metadata"]["annos"]
        real = annos["name"] != "DontCare"
        # camera -> LiDAR -> camera recovers the label file within 1e-4
        back = np.asarray(boxes_lidar_to_camera(annos["gt_boxes_lidar"][real].astype(np.float64), calib))
        expected = camera_boxes(annos)[real]
        np.testing.assert_allclose(back[:, :6], expected[:, :6], atol=1e-4)
        dr = (back[:, 6] - expected[:, 6] + np.pi) % (2 * np.pi) - np.pi
        assert np.abs(dr).max() < 1e-4
        # and the simulator's own LiDAR boxes, up to the label files' two decimals
        objs = kitti_objects(frame, calib)
        rows = objs.index[objs.index >= 0]
        assert list(annos["name"][real]) == [KITTI_TYPE[frame.kinds[r]] for r in rows]
        sim = frame.boxes[rows, :7]
        np.testing.assert_allclose(annos["gt_boxes_lidar"][real, :6], sim[:, :6], atol=0.02)
        # training boxes: the configured classes, 1-based ids
        train = np.isin(annos["name"], ds.class_names)
        assert len(raw["gt_boxes"]) == train.sum()
        assert [ds.class_names[k - 1] for k in raw["gt_labels"]] == list(annos["name"][train])
        assert set(annos["difficulty"][~real].tolist()) <= {-1}
    fov = KittiDataset(root, "trainval")[0]
    assert 0 < len(fov["points"]) < len(ds.load(0)["points"])
    # predictions written in the submission format read back as the ground truth they were made from
    preds = []
    for i in range(len(ds)):
        raw = ds.load(i)
        preds.append({"frame_id": raw["frame_id"], "boxes": raw["gt_boxes"],
                      "scores": np.linspace(0.9, 0.5, len(raw["gt_boxes"])), "labels": raw["gt_labels"]})
    out = ds.write_predictions(preds, tmp_path / "pred")
    assert out == tmp_path / "pred" / "data"  # the devkit reads results/<name>/data/<frame>.txt
    for i, pred in enumerate(preds):
        written = parse_label(out / f"{ds.frames[i]}.txt")
        truth = ds.load(i)["metadata"]["annos"]
        train = np.isin(truth["name"], ds.class_names)
        assert list(written["name"]) == list(truth["name"][train])
        np.testing.assert_allclose(written["location"], truth["location"][train], atol=0.02)
        np.testing.assert_allclose(written["score"], pred["scores"], atol=1e-4)


def test_semantickitti_round_trip_semantic_mos_and_multiscan(tmp_path):
    root = simulate_dataset("semantickitti", tmp_path, frames=3, seed=1, sequence_length=3)
    frames = _sim_frames(3, 1, "kitti", 3)
    sem = SemanticKittiDataset(root, sequences=[0])
    mos = SemanticKittiDataset(root, sequences=[0], mode="mos")
    lut = lookup_table(load_learning_map(str(LEARNING_MAPS / "semantic-kitti.yaml"))["learning_map"])
    for i, frame in enumerate(frames):
        s, order = sem.load(i), velodyne_file_order(frame.sweep)
        semantic = frame.semantic[order]
        np.testing.assert_array_equal(s["points"], frame.points[order])
        np.testing.assert_array_equal(s["point_labels"], lut[semantic])
        np.testing.assert_array_equal(s["instance_ids"], frame.instance[order])
        moving = semantic >= 252
        np.testing.assert_array_equal(mos.load(i)["point_labels"], np.where(moving, 2, np.where(
            np.isin(semantic, [0, 1]), 0, 1)))
    assert sem.class_names[0] == "unlabeled" and len(sem.class_names) == 20 and mos.class_names[2] == "moving"
    multi = SemanticKittiDataset(root, sequences=[0], n_past_scans=2)
    s = multi.load(2)
    n = [len(f.points) for f in frames]
    assert multi.feature_names == ("intensity", "time") and s["points"].shape == (sum(n), 5)
    assert s["num_current_points"] == n[2]
    np.testing.assert_array_equal(s["point_frame"], np.repeat([0, 1, 2], [n[2], n[1], n[0]]))
    np.testing.assert_array_equal(s["point_time"], s["points"][:, 4])
    past = s["points"][n[2]:n[2] + n[1]]
    m = np.linalg.inv(frames[2].sensor_pose) @ frames[1].sensor_pose
    expected = frames[1].points[velodyne_file_order(frames[1].sweep), :3].astype(np.float64) @ m[:3, :3].T + m[:3, 3]
    np.testing.assert_allclose(past[:, :3], expected, atol=2e-3)
    np.testing.assert_allclose(past[:, 4], -0.1, atol=1e-6)
    assert (s["points"][:n[2], 4] == 0).all() and len(s["point_labels"]) == sum(n)


def test_waymo_round_trip(tmp_path):
    pytest.importorskip("pyarrow")
    root = simulate_dataset("waymo", tmp_path, frames=2, seed=2, sequence_length=2)
    frames = _sim_frames(2, 2, "waymo", 2)
    mount = sensor_spec("waymo").mount
    ds = WaymoDataset(root, "train", drop_no_label_zone=False)
    assert len(ds) == 2
    for i, frame in enumerate(frames):
        s = ds.load(i)
        expected = frame.points[:, :3].astype(np.float64) @ mount[:3, :3].T + mount[:3, 3]
        assert s["points"].shape == (len(frame.points), 5)
        assert np.abs(s["points"][:, :3] - expected).max() < 1e-3  # 1 mm
        np.testing.assert_array_equal(s["points"][:, 3], frame.points[:, 3])
        segment, timestamp, group = ds.frames[i]   # Waymo's flag outside no-label zones is -1, not 0
        assert (ds.read_points(segment, timestamp, group)[:, 5] == -1).all()
        keep = frame.num_points > 0
        b = frame.boxes[keep].astype(np.float64)
        centre = b[:, :3] @ mount[:3, :3].T + mount[:3, 3]
        annos = s["metadata"]["annos"]
        np.testing.assert_allclose(annos["box"][:, :3], centre, atol=1e-4)
        np.testing.assert_allclose(annos["box"][:, 3:6], b[:, 3:6], atol=1e-4)
        names = {1: "Vehicle", 2: "Pedestrian", 4: "Cyclist"}
        assert list(annos["name"]) == [names[WAYMO_TYPE[k]] for k, ok in zip(frame.kinds, keep, strict=True) if ok]
        assert s["gt_boxes"].shape[1] == 9 and set(s["gt_labels"].tolist()) <= {1, 2, 3}
        np.testing.assert_array_equal(annos["num_points"], frame.num_points[keep])
        np.testing.assert_array_equal(annos["difficulty"], np.where(frame.num_points[keep] <= 5, 2, 1))  # 5: L2
        # a box with exactly min_box_points points trains
        least = int(annos["num_points"][np.isin(annos["name"], ds.class_names)].min())
        trained = WaymoDataset(root, "train", drop_no_label_zone=False, min_box_points=least).load(i)
        assert len(trained["gt_boxes"]) == np.isin(annos["name"], ds.class_names).sum()
    # tools/test.py's parquet: the first frame's boxes as predictions, none in the second
    import pyarrow.parquet as pq

    first = ds.load(0)
    preds = [{"boxes": first["gt_boxes"], "scores": np.linspace(0.9, 0.5, len(first["gt_boxes"])),
              "labels": first["gt_labels"]}, {"boxes": np.zeros((0, 9)), "scores": np.zeros(0), "labels": np.zeros(0)}]
    (written,) = ds.write_predictions(preds, tmp_path / "pred").iterdir()
    table = pq.read_table(written).to_pydict()
    assert set(table["key.frame_timestamp_micros"]) == {ds.frames[0][1]}
    np.testing.assert_allclose(table["[LiDARBoxComponent].box.center.x"], first["gt_boxes"][:, 0], atol=1e-5)
    np.testing.assert_allclose(table["[LiDARBoxComponent].score"], preds[0]["scores"])


def test_scannet_round_trip(tmp_path):
    plyfile = pytest.importorskip("plyfile")
    root = simulate_dataset("scannet", tmp_path, frames=2, seed=3)
    ds = ScanNetDataset(root, "train", instances=True)
    s = ds.load(0)
    folder = root / "scans" / "scene0000_00"
    nyu = np.asarray(plyfile.PlyData.read(str(folder / "scene0000_00_vh_clean_2.labels.ply"))["vertex"]["label"])
    expected = np.array([SCANNET20_IDS.index(v) if v in SCANNET20_IDS else -1 for v in nyu])
    np.testing.assert_array_equal(s["point_labels"], expected)
    assert s["points"].shape == (len(nyu), 6) and s["points"][:, 3:].min() >= 0 and s["points"][:, 3:].max() <= 1
    assert s["points"][:, 2].min() > -0.01 and s["points"][:, :2].min() > -0.05  # axis-aligned room
    assert s["instance_ids"].max() > 0
    # tools/test.py's files follow the task: labels per mesh vertex, or a detector's boxes as JSON
    labels = [{"pred_labels": ds.load(i)["point_labels"]} for i in range(len(ds))]
    written = ds.write_predictions(labels, tmp_path / "seg")
    ids = np.loadtxt(written / "scene0000_00.txt", dtype=np.int64)
    np.testing.assert_array_equal(ids, np.where(np.isin(nyu, SCANNET20_IDS), nyu, 0))
    det = ScanNetDataset(root, "train", boxes=True)
    truth = [det.annotations(i) for i in range(len(det))]
    preds = [{"boxes": t["gt_boxes"], "scores": np.ones(len(t["gt_labels"])), "labels": t["gt_labels"]} for t in truth]
    scene = json.loads((det.write_predictions(preds, tmp_path / "det") / "scene0000_00.json").read_text())
    np.testing.assert_allclose(scene["boxes"], truth[0]["gt_boxes"], atol=1e-4)
    assert scene["labels"] == truth[0]["gt_labels"].tolist() and scene["frame"] == "scene"
    with pytest.raises(DataFormatError, match="scene0000_00_vh_clean_2.ply.*detection prediction needs"):
        det.write_predictions([{"pred_labels": np.zeros(3)}] * len(det), tmp_path / "wrong")
    # a test scene where ScanNet's download script puts it: scans_test/<scene>, no labels read
    (root / "scans_test").mkdir()
    (folder.parent / "scene0001_00").rename(root / "scans_test" / "scene0001_00")
    (root / "scannetv2_test.txt").write_text("scene0001_00\n")
    test = ScanNetDataset(root, "test")
    sample = test.load(0)
    assert "point_labels" not in sample and sample["metadata"]["source"].startswith(str(root / "scans_test"))
    written = test.write_predictions([{"pred_labels": np.zeros(len(sample["points"]), np.int64)}], tmp_path / "t")
    assert len(np.loadtxt(written / "scene0001_00.txt")) == len(sample["points"])


def test_sceneflow_round_trip(tmp_path):
    root = simulate_dataset("sceneflow", tmp_path, frames=2, seed=4, sequence_length=2)
    for variant, folder, to_lidar in (
            ("kitti", root / "KITTI_processed_occ_final" / "000000", lambda p: p[:, [2, 0, 1]]),
            ("flyingthings3d", root / "FlyingThings3D_subset_processed_35m" / "train" / "0000000",
             lambda p: np.stack([-p[:, 2], -p[:, 0], p[:, 1]], 1))):
        ds = SceneFlowDataset(root, variant, "train", num_points=None)
        s = ds.load(0)
        pc1, pc2 = np.load(folder / "pc1.npy"), np.load(folder / "pc2.npy")
        np.testing.assert_allclose(s["points"], to_lidar(pc1), atol=1e-6)
        np.testing.assert_allclose(s["flow"], to_lidar(pc2 - pc1), atol=1e-5)
        assert s["flow_mask"].all() and (s["points"][:, 0] > 0).all()  # in front of the sensor
        sampled = SceneFlowDataset(root, variant, "train", seed=0)[0]
        assert sampled["points"].shape == sampled["points2"].shape == sampled["flow"].shape == (8192, 3)
    per_mode = {"train": 1024, "test": 4096}  # OpenPCDet's NUM_POINTS by mode: the split, or `training`, decides
    assert len(SceneFlowDataset(root, split="train", num_points=per_mode, seed=0)[0]["points"]) == 1024
    assert len(SceneFlowDataset(root, split="val", num_points=per_mode, seed=0)[0]["points"]) == 4096
    assert len(SceneFlowDataset(root, split="train", num_points=per_mode, seed=0, training=False)[0]["points"]) == 4096
    with pytest.raises(ConfigError, match="train and test"):
        SceneFlowDataset(root, split="train", num_points={"train": 1024})
    # PointPWC's 2D evaluation cameras, written out on the disk axes (its geometry.project_3d_to_2d)
    ft3d = SceneFlowDataset(root, "flyingthings3d", num_points=None)
    kitti_calibs = SceneFlowDataset(root, "kitti", num_points=None, calib_dir=root / "calib_cam_to_cam")
    p2 = np.array(next(line for line in (root / "calib_cam_to_cam" / "000000.txt").read_text().splitlines()
                       if line.startswith("P_rect_02:")).split()[1:], float).reshape(3, 4)
    for ds, folder, f, cx, cy, tx, ty, tz in (
            (ft3d, root / "FlyingThings3D_subset_processed_35m" / "train" / "0000000", -1050, 479.5, 269.5, 0, 0, 0),
            (kitti_calibs, root / "KITTI_processed_occ_final" / "000000", -p2[0, 0], p2[0, 2], p2[1, 2], p2[0, 3],
             p2[1, 3], p2[2, 3])):
        disk, disk2 = np.load(folder / "pc1.npy").astype(np.float64), np.load(folder / "pc2.npy")
        u = (disk[:, 0] * f + cx * disk[:, 2] + tx) / (disk[:, 2] + tz)
        v = (disk[:, 1] * f + cy * disk[:, 2] + ty) / (disk[:, 2] + tz)
        kept = ~((disk[:, 1] < -1.4) & (disk2[:, 1] < -1.4)) if ds is kitti_calibs else np.ones(len(disk), bool)
        pixels = project(ds.load(0)["points"], ds.projection(0))  # the loader's filters keep these rows
        np.testing.assert_allclose(pixels, np.stack([u, v], 1)[kept], atol=1e-6)
    assert (pixels[:, 0] >= 0).all() and (pixels[:, 0] < 1242).all() and (pixels[:, 1] < 375).all()  # image 2
    assert SceneFlowDataset(root, "kitti", num_points=None).projection(1) is None
    with pytest.raises(DataFormatError, match="calib_dir does not exist"):
        SceneFlowDataset(root, "kitti", calib_dir=tmp_path / "nowhere")
    mapping = tmp_path / "KITTI_mapping.txt"  # HPLFlowNet's: a pair without a raw-data line is not evaluated
    mapping.write_text("\n2011_09_26_drive_0001_sync 0000000010\n")
    kitti = SceneFlowDataset(root, "kitti", num_points=None)
    assert len(kitti) == 2 and SceneFlowDataset(root, "kitti", mapping_file=mapping).frames == ["000001"]
    mapping.write_text("\n")
    with pytest.raises(DataFormatError, match="none for the pair folder '000001'"):
        SceneFlowDataset(root, "kitti", mapping_file=mapping)


def test_simulated_dataset_on_the_fly():
    ds = SimulatedKittiDataset("train", frames=2, columns=512, seed=0)
    s = ds[1]
    assert s["points"].dtype == np.float32 and s["points"].shape[1] == 4 and len(s["gt_boxes"])
    assert (points_in_boxes_count(s["points"], s["gt_boxes"]) > 0).all()
    np.testing.assert_array_equal(ds[1]["points"], s["points"])
    assert SimulatedKittiDataset("val", frames=1, columns=512)[0]["frame_id"] != ds[0]["frame_id"]


def test_real_kitti_frame(tmp_path):
    src = sample_path("kitti/000008.bin")
    (tmp_path / "training" / "velodyne").mkdir(parents=True)
    (tmp_path / "training" / "calib").mkdir()
    (tmp_path / "ImageSets").mkdir()
    shutil.copy(src, tmp_path / "training" / "velodyne" / "000008.bin")
    (tmp_path / "training" / "calib" / "000008.txt").write_text(kitti_calib().to_text())
    (tmp_path / "ImageSets" / "val.txt").write_text("000008\n")
    s = KittiDataset(tmp_path, "val", fov_only=False)[0]
    assert s["points"].shape == (17238, 4) and s["points"].dtype == np.float32
    assert s["points"][:, 3].min() >= 0 and s["points"][:, 3].max() <= 1
    assert "gt_boxes" not in s  # no label_2 folder: an unlabelled frame


def test_real_semantickitti_label(tmp_path):
    seq = tmp_path / "sequences" / "00"
    (seq / "velodyne").mkdir(parents=True)
    (seq / "labels").mkdir()
    shutil.copy(sample_path("semantickitti/000000.bin"), seq / "velodyne" / "000000.bin")
    shutil.copy(sample_path("semantickitti/000000.label"), seq / "labels" / "000000.label")
    s = SemanticKittiDataset(tmp_path, sequences=[0]).load(0)
    assert s["points"].shape == (50, 4)
    raw = np.fromfile(seq / "labels" / "000000.label", "<u4") & 0xFFFF
    assert sorted(set(raw.tolist())) == [0, 50, 52, 70, 71, 80]
    # building 13, other-structure -> unlabelled 0, vegetation 15, trunk 16, pole 18 (semantic-kitti.yaml)
    expected = {0: 0, 50: 13, 52: 0, 70: 15, 71: 16, 80: 18}
    np.testing.assert_array_equal(s["point_labels"], [expected[r] for r in raw])
    assert (SemanticKittiDataset(tmp_path, sequences=[0], mode="mos").load(0)["point_labels"] == np.where(
        raw == 0, 0, 1)).all()


def test_ply_vertices_fast_path_equals_plyfile(tmp_path):
    """Binary meshes are read with numpy alone (faces skipped); ascii files go through plyfile; both agree
    with plyfile, and a truncated binary file is an error naming it."""
    from plyfile import PlyData, PlyElement

    rng = np.random.default_rng(0)
    vertex = np.array([tuple(v) for v in zip(rng.normal(size=50), rng.normal(size=50), rng.integers(0, 255, 50),
                                             strict=True)], dtype=[("x", "f4"), ("y", "f8"), ("red", "u1")])
    faces = np.array([([0, 1, 2],), ([2, 3, 4],)], dtype=[("vertex_indices", "i4", (3,))])
    for text in (False, True):
        path = tmp_path / f"mesh_{text}.ply"
        PlyData([PlyElement.describe(vertex, "vertex"), PlyElement.describe(faces, "face")], text=text).write(str(path))
        got = read_ply_vertices(path, ("x", "y", "red"))
        for name in ("x", "y", "red"):
            np.testing.assert_array_equal(got[name], vertex[name])
            assert got[name].dtype == vertex[name].dtype
    data = (tmp_path / "mesh_False.ply").read_bytes()
    (tmp_path / "cut.ply").write_bytes(data[: data.index(b"end_header") + 200])
    with pytest.raises(DataFormatError, match="cut.ply"):
        read_ply_vertices(tmp_path / "cut.ply", ("x",))


def test_real_scannet_scene():
    points = read_bin(sample_path("scannet/scene0000_00.bin"), 6)
    assert points.shape == (40684, 6)
    assert points[:, 3:].min() >= 0 and points[:, 3:].max() <= 255
    ids = nyu40_to_scannet20(np.arange(41))
    assert ids[1] == 0 and ids[39] == 19 and ids[13] == -1 and ids[40] == -1 and ids[0] == -1
    assert (ids >= 0).sum() == 20


def test_fov_mask_equals_the_projection_in_float64():
    """The one-pass kernel keeps the points a float64 projection keeps (real frame plus points on the
    camera plane and behind it); only points within float32 rounding of an image edge may differ."""
    calib = kitti_calib()
    rng = np.random.default_rng(0)
    extra = np.concatenate([rng.uniform([-5, -40, -3], [5, 40, 2], (2000, 3)), np.zeros((2000, 1))], 1)
    points = np.concatenate([read_bin(sample_path("kitti/000008.bin"), 4), extra.astype(np.float32)])
    r0, tr = np.eye(4), np.eye(4)
    r0[:3, :3], tr[:3] = calib.R0_rect, calib.Tr_velo_to_cam
    hom = np.concatenate([points[:, :3].astype(np.float64), np.ones((len(points), 1))], 1) @ (calib.P2 @ r0 @ tr).T
    h, w = IMAGE_SHAPE
    with np.errstate(divide="ignore", invalid="ignore"):
        u, v = hom[:, 0] / hom[:, 2], hom[:, 1] / hom[:, 2]
    expected = (hom[:, 2] - calib.P2[2, 3] > 0) & (u >= 0) & (u < w) & (v >= 0) & (v < h)
    got = fov_mask(points, calib, IMAGE_SHAPE)
    near_edge = (np.minimum(np.abs(u), np.abs(u - w)) < 1e-2) | (np.minimum(np.abs(v), np.abs(v - h)) < 1e-2)
    assert 1000 < expected.sum() < len(points) - 1000
    np.testing.assert_array_equal(got[~near_edge], expected[~near_edge])
    assert fov_mask(points[:0], calib, IMAGE_SHAPE).shape == (0,)


def test_label_conventions_by_hand(tmp_path):
    """KITTI's difficulty reads the 2D box's height (a 10 px wide, 60 px tall pedestrian, neither occluded nor
    truncated, is easy); ScanNet's instance is 1 + objectId (objectId 0 is an object, 0 none); SemanticKITTI's
    train ids come from the lower 16 bits, -1 for a class the learning map does not know (2, 300), 1 for car."""
    from pc3d.data.scannet import instance_ids
    from pc3d.data.semantickitti import train_ids

    (tmp_path / "label_2").mkdir()
    (tmp_path / "label_2" / "000000.txt").write_text(
        "Pedestrian 0.00 0 0.00 100.00 100.00 110.00 160.00 1.70 0.60 0.80 1.00 1.50 20.00 0.00\n")
    ds = object.__new__(KittiDataset)  # load_annos reads ds.path only
    ds.base = tmp_path
    assert ds.load_annos("000000", kitti_calib(), IMAGE_SHAPE)["difficulty"].tolist() == [0]
    (tmp_path / "s_vh_clean_2.0.010000.segs.json").write_text(json.dumps({"segIndices": [5, 5, 7, 7, 9]}))
    (tmp_path / "s.aggregation.json").write_text(json.dumps(
        {"segGroups": [{"objectId": 0, "segments": [5]}, {"objectId": 1, "segments": [7]}]}))
    assert instance_ids(tmp_path, "s", 5).tolist() == [1, 1, 2, 2, 0]
    lut = lookup_table(load_learning_map(str(LEARNING_MAPS / "semantic-kitti.yaml"))["learning_map"])
    raw = np.array([2 | 7 << 16, 300 | 7 << 16, 10 | 3 << 16], np.uint32)
    assert train_ids(raw, lut).tolist() == [-1, -1, 1]
