"""Every writer's output, parsed by minimal readers written here against the dataset specs."""
from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from pc3d.errors import ConfigError
from pc3d.geometry import points_in_boxes_count
from pc3d.sim.api import simulate_dataset
from pc3d.sim.ground_truth import kitti_calib
from pc3d.sim.indoor import ROOM_TYPES
from pc3d.sim.labels import KITTI_TYPES, SEMANTIC_KITTI_LABELS
from pc3d.sim.realism import rising_share
from pc3d.sim.sensor import velodyne_file_order
from pc3d.sim.writers.scannet import RAW_CATEGORIES

CALIB_KEYS = {"P0": 12, "P1": 12, "P2": 12, "P3": 12, "R0_rect": 9, "Tr_velo_to_cam": 12, "Tr_imu_to_velo": 12}


def _calib(path: Path) -> dict[str, np.ndarray]:
    out = {}
    for line in path.read_text().splitlines():
        key, _, values = line.partition(":")
        out[key] = np.array(values.split(), dtype=np.float64)
    return out


@pytest.fixture(scope="module")
def kitti(tmp_path_factory):
    return simulate_dataset("kitti", tmp_path_factory.mktemp("kitti"), frames=3, seed=0)


def test_kitti_object_layout(kitti):
    names = [f"{i:06d}" for i in range(3)]
    for name in names:
        raw = (kitti / "training" / "velodyne" / f"{name}.bin").read_bytes()
        assert len(raw) % 16 == 0 and len(raw) > 16 * 50_000
        pts = np.frombuffer(raw, "<f4").reshape(-1, 4)
        assert np.isfinite(pts).all() and (pts[:, 3] >= 0).all() and (pts[:, 3] <= 1).all()
        calib = _calib(kitti / "training" / "calib" / f"{name}.txt")
        assert {k: len(v) for k, v in calib.items()} == CALIB_KEYS
        lines = (kitti / "training" / "label_2" / f"{name}.txt").read_text().splitlines()
        kinds = [line.split()[0] for line in lines]  # DontCare last: converters take the first lines as objects
        assert kinds == sorted(kinds, key=lambda kind: kind == "DontCare")
        for line in lines:
            fields = line.split()
            assert len(fields) == 15 and fields[0] in KITTI_TYPES
            values = np.array(fields[1:], dtype=np.float64)
            if fields[0] != "DontCare":
                assert 0 <= values[0] <= 1 and int(values[1]) in (0, 1, 2, 3)
                assert values[3] < values[5] and values[4] < values[6]  # left < right, top < bottom
                assert (values[7:10] > 0).all() and values[11] > 0  # h w l, depth z
        png = (kitti / "training" / "image_2" / f"{name}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24]) == (1224, 370)
        plane = (kitti / "training" / "planes" / f"{name}.txt").read_text().splitlines()
        assert plane[0] == "# Plane" and len(plane[3].split()) == 4
        a, b, c, d = map(float, plane[3].split())  # as KITTI's: normal up (camera -y), d the camera's height
        assert b < -0.99 and 1.4 < d < 2.0 and abs(a) < 0.1 and abs(c) < 0.1
    assert sum(len((kitti / "training" / "label_2" / f"{n}.txt").read_text().splitlines()) for n in names) > 0
    sets = {s: (kitti / "ImageSets" / f"{s}.txt").read_text().split() for s in ("train", "val", "trainval", "test")}
    assert sorted(sets["train"] + sets["val"]) == names == sets["trainval"] and sets["test"] == []


def test_kitti_split_falls_between_scenes(tmp_path):
    """ImageSets cut between scenes of scene_length frames (no scene on both sides) once there are two."""
    from pc3d.sim.ground_truth import kitti_calib
    from pc3d.sim.writers.kitti import KittiWriter

    def split(count: int, scene_length: int) -> tuple[int, int]:
        writer = KittiWriter(tmp_path / f"{count}_{scene_length}", kitti_calib(), images=False)
        writer.count = count
        writer.close(scene_length=scene_length)
        return tuple(len((writer.root / "ImageSets" / f"{s}.txt").read_text().split()) for s in ("train", "val"))

    assert split(12, 5) == (5, 7) and split(300, 5) == (150, 150) and split(16, 5) == (10, 6)
    assert split(3, 5) == (1, 2) and split(12, 1) == (6, 6) and split(1, 5) == (1, 0)


def test_velodyne_file_order_reverses_each_ring():
    """Firing order (row-major pixels, columns clockwise from behind) -> rows kept, columns reversed."""
    pixel = np.array([0, 1, 3, 5, 6, 7, 9])  # 4 columns; row 0: cols 0 1 3; row 1: cols 1 2 3; row 2: col 1
    sweep = SimpleNamespace(pixel=pixel, range_image=np.zeros((3, 4), np.float32))
    np.testing.assert_array_equal(pixel[velodyne_file_order(sweep)], [3, 1, 0, 7, 6, 5, 9])


def test_kitti_scans_are_written_ring_by_ring_counter_clockwise_as_the_real_ones(kitti):
    """KITTI's velodyne files go ring after ring from the top beam, each ring with rising azimuth (seam behind
    the car); hard voxelization keeps a full voxel's first points in this order, so the simulated files follow."""
    real = Path(__file__).resolve().parents[2] / "shared" / "samples" / "kitti" / "000008.bin"
    if real.exists():  # the convention's source: a real scan (its camera crop)
        assert rising_share(np.fromfile(real, "<f4").reshape(-1, 4)) > 0.99
    for i in range(3):
        pts = np.fromfile(kitti / "training" / "velodyne" / f"{i:06d}.bin", "<f4").reshape(-1, 4)
        assert rising_share(pts) > 0.99
        elevation = np.arctan2(pts[:, 2], np.hypot(pts[:, 0], pts[:, 1]))
        assert elevation[:500].mean() > np.deg2rad(1.0) and elevation[-500:].mean() < np.deg2rad(-20.0)  # top first


def test_kitti_labels_project_on_lidar_points(kitti):
    """A labelled car's camera box, taken back to the LiDAR frame, contains LiDAR points."""
    calib = _calib(kitti / "training" / "calib" / "000000.txt")
    tr = np.vstack([calib["Tr_velo_to_cam"].reshape(3, 4), [0, 0, 0, 1]])
    r0 = np.eye(4)
    r0[:3, :3] = calib["R0_rect"].reshape(3, 3)
    rect_to_velo = np.linalg.inv(r0 @ tr)
    found = 0
    for i in range(3):
        pts = np.fromfile(kitti / "training" / "velodyne" / f"{i:06d}.bin", "<f4").reshape(-1, 4)
        for line in (kitti / "training" / "label_2" / f"{i:06d}.txt").read_text().splitlines():
            f = line.split()
            if f[0] not in ("Car", "Van") or float(f[2]) > 1:
                continue
            h, w, length, x, y, z, ry = map(float, f[8:15])
            centre = rect_to_velo @ np.array([x, y - h / 2, z, 1.0])
            local = pts[:, :3] - centre[:3]
            heading = -ry - np.pi / 2
            u = np.cos(heading) * local[:, 0] + np.sin(heading) * local[:, 1]
            v = -np.sin(heading) * local[:, 0] + np.cos(heading) * local[:, 1]
            inside = (np.abs(u) < length / 2) & (np.abs(v) < w / 2) & (np.abs(local[:, 2]) < h / 2)
            assert inside.sum() > 0
            found += 1
    assert found > 0


def test_kitti_label_rows_alpha_bbox_and_truncation(kitti):
    """Each object row against the devkit's definitions: alpha = ry - atan2(x, z) wrapped to [-pi, pi); the 2D box
    is the extent of the 8 box corners projected through P2 (via R0_rect and Tr_velo_to_cam), clipped to the
    1224 x 370 image (x in [0, 1223], y in [0, 369]); truncated = 1 - clipped area / unclipped area. Rows hold
    2 decimals: alpha within 0.011 and the box within 1.5 px (corners from rounded values). The boxes are upright
    in the LiDAR frame, as the other tests here and OpenPCDet's converters take them (the devkit's upright-in-rect
    corners differ by up to 1.8 px through the ~0.6 degree R0_rect tilt)."""
    truncated_rows = 0
    for i in range(3):
        calib = _calib(kitti / "training" / "calib" / f"{i:06d}.txt")
        tr = np.vstack([calib["Tr_velo_to_cam"].reshape(3, 4), [0, 0, 0, 1]])
        r0 = np.eye(4)
        r0[:3, :3] = calib["R0_rect"].reshape(3, 3)
        velo_to_image = calib["P2"].reshape(3, 4) @ r0 @ tr
        for line in (kitti / "training" / "label_2" / f"{i:06d}.txt").read_text().splitlines():
            f = line.split()
            if f[0] == "DontCare":
                continue
            v = np.array(f[1:], dtype=np.float64)
            trunc, alpha, bbox, (h, w, length), (x, y, z), ry = v[0], v[2], v[3:7], v[7:10], v[10:13], v[13]
            d = (alpha - (ry - np.arctan2(x, z)) + np.pi) % (2 * np.pi) - np.pi
            assert abs(d) < 0.011, (line, d)
            centre = np.linalg.inv(r0 @ tr) @ np.array([x, y - h / 2, z, 1.0])  # y is the bottom, y down
            heading = -ry - np.pi / 2
            su, sv, sz = np.array([[a, b, c] for a in (-1, 1) for b in (-1, 1) for c in (-1, 1)]).T
            du, dv = su * length / 2, sv * w / 2
            corners = np.stack([centre[0] + np.cos(heading) * du - np.sin(heading) * dv,
                                centre[1] + np.sin(heading) * du + np.cos(heading) * dv,
                                centre[2] + sz * h / 2, np.ones(8)])
            uvw = velo_to_image @ corners
            u, vv = uvw[0] / uvw[2], uvw[1] / uvw[2]
            full = np.array([u.min(), vv.min(), u.max(), vv.max()])
            clipped = np.clip(full, 0, [1223, 369, 1223, 369])
            assert np.allclose(bbox, clipped, atol=1.5), (line, clipped)

            def area(b):
                return (b[2] - b[0]) * (b[3] - b[1])

            assert abs(trunc - (1 - area(clipped) / area(full))) < 0.02, (line, 1 - area(clipped) / area(full))
            truncated_rows += trunc > 0
    assert truncated_rows > 0  # the frames hold at least one object cut by the image border


def test_semantickitti_layout(tmp_path):
    root = simulate_dataset("semantickitti", tmp_path, frames=3, seed=1, sequence_length=3)
    seq = root / "sequences" / "00"
    labelled = 0
    for i in range(3):
        pts = np.fromfile(seq / "velodyne" / f"{i:06d}.bin", "<f4").reshape(-1, 4)
        label = np.fromfile(seq / "labels" / f"{i:06d}.label", "<u4")
        assert label.shape == (len(pts),)
        semantic, instance = label & 0xFFFF, label >> 16
        assert set(np.unique(semantic).tolist()) <= set(SEMANTIC_KITTI_LABELS)
        things = np.isin(semantic, [10, 18, 30, 31, 252, 253, 254, 258])
        assert (instance[things] > 0).all() and (instance[~things] == 0).all()
        assert rising_share(pts) > 0.99  # KITTI's file order, the labels carried along
        for row in np.loadtxt(seq / "boxes" / f"{i:06d}.txt", ndmin=2):  # each object's points lie in its box
            own = pts[instance == row[0]]
            grown = row[None, 2:9] + [0, 0, 0, 0.2, 0.2, 0.2, 0]  # 0.1 m of slack: range noise
            assert points_in_boxes_count(own, grown)[0] == len(own)
            labelled += len(own)
    assert labelled > 100  # object points checked against their boxes
    poses = np.loadtxt(seq / "poses.txt")
    assert poses.shape == (3, 12)
    np.testing.assert_allclose(poses[0].reshape(3, 4), np.eye(3, 4), atol=1e-9)
    np.testing.assert_allclose(np.loadtxt(seq / "times.txt"), [0.0, 0.1, 0.2], atol=1e-9)
    calib = _calib(seq / "calib.txt")
    assert {k: len(v) for k, v in calib.items()} == {"P0": 12, "P1": 12, "P2": 12, "P3": 12, "Tr": 12}
    # Tr: velodyne -> the rectified camera (x = P2 Tr X, no R0_rect line): where the KITTI object files' rig,
    # P2 R0_rect Tr_velo_to_cam, projects the same points
    obj = kitti_calib()
    tr, r0 = np.vstack([calib["Tr"].reshape(3, 4), [0, 0, 0, 1]]), np.eye(4)
    r0[:3, :3] = obj.R0_rect
    np.testing.assert_allclose(tr[:3], (r0 @ np.vstack([obj.Tr_velo_to_cam, [0, 0, 0, 1]]))[:3], atol=1e-9)
    with pytest.raises(ConfigError, match="distortion"):
        simulate_dataset("semantickitti", tmp_path / "distorted", frames=1, distortion=True)


def test_semantickitti_scan_interval_spaces_the_scans(tmp_path):
    """scan_interval: the same scene, scans that many seconds apart (times.txt), so the ego drives further."""
    dense = simulate_dataset("semantickitti", tmp_path / "a", frames=3, seed=1, sequence_length=3)
    sparse = simulate_dataset("semantickitti", tmp_path / "b", frames=3, seed=1, sequence_length=3, scan_interval=1.0)
    np.testing.assert_allclose(np.loadtxt(sparse / "sequences/00/times.txt"), [0.0, 1.0, 2.0], atol=1e-9)
    step = [np.linalg.norm(np.diff(np.loadtxt(r / "sequences/00/poses.txt")[:, [3, 7, 11]], axis=0), axis=1)
            for r in (dense, sparse)]
    np.testing.assert_allclose(step[1], 10 * step[0], rtol=1e-6, atol=1e-9)  # constant speed, no stops


def _waymo_points(values, shape, extrinsic, inclinations):
    """Range image -> vehicle-frame points as the official range_image_utils (numpy transcription)."""
    image = np.asarray(values, np.float32).reshape(shape)
    h, w, _ = shape
    incl = np.asarray(inclinations)[::-1]
    e = np.asarray(extrinsic).reshape(4, 4)
    az = ((w - np.arange(w) - 0.5) / w * 2 - 1) * np.pi - np.arctan2(e[1, 0], e[0, 0])
    r = image[..., 0]
    ca, sa = np.cos(az)[None], np.sin(az)[None]
    ci, si = np.cos(incl)[:, None], np.sin(incl)[:, None]
    pts = np.stack([r * ca * ci, r * sa * ci, r * si * np.ones_like(ca)], -1)[r > 0]
    return pts @ e[:3, :3].T + e[:3, 3]


def test_waymo_v2_layout(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    root = simulate_dataset("waymo", tmp_path, frames=2, seed=2, sequence_length=2)
    (segment,) = [p.stem for p in (root / "training" / "lidar").glob("*.parquet")]
    lidar = pq.read_table(root / "training" / "lidar" / f"{segment}.parquet").to_pydict()
    boxes = pq.read_table(root / "training" / "lidar_box" / f"{segment}.parquet").to_pydict()
    calib = pq.read_table(root / "training" / "lidar_calibration" / f"{segment}.parquet").to_pydict()
    pose = pq.read_table(root / "training" / "vehicle_pose" / f"{segment}.parquet").to_pydict()
    for table in (lidar, boxes, pose):
        assert set(table["key.segment_context_name"]) == {segment}
    assert lidar["key.laser_name"] == [1, 1] and len(set(lidar["key.frame_timestamp_micros"])) == 2
    for ret in ("return1", "return2"):
        for values, shape in zip(lidar[f"[LiDARComponent].range_image_{ret}.values"],
                                 lidar[f"[LiDARComponent].range_image_{ret}.shape"], strict=True):
            assert shape == [64, 2650, 4] and len(values) == 64 * 2650 * 4
    incl = calib["[LiDARCalibrationComponent].beam_inclination.values"][0]
    assert len(incl) == 64 and np.all(np.diff(incl) > 0)
    assert np.rad2deg(calib["[LiDARCalibrationComponent].beam_inclination.max"][0]) == pytest.approx(2.4)
    extrinsic = calib["[LiDARCalibrationComponent].extrinsic.transform"][0]
    assert len(extrinsic) == 16 and len(pose["[VehiclePoseComponent].world_from_vehicle.transform"][0]) == 16
    for col in ("box.center.x", "box.center.y", "box.center.z", "box.size.x", "box.size.y", "box.size.z",
                "box.heading", "type", "num_lidar_points_in_box", "speed.x", "difficulty_level.detection"):
        assert f"[LiDARBoxComponent].{col}" in boxes
    assert set(boxes["[LiDARBoxComponent].type"]) <= {1, 2, 3, 4}
    # the official conversion puts the ground at the vehicle frame's z = 0 and boxes around their points
    pts = _waymo_points(lidar["[LiDARComponent].range_image_return1.values"][0],
                        lidar["[LiDARComponent].range_image_return1.shape"][0], extrinsic, incl)
    near = pts[np.linalg.norm(pts[:, :2], axis=1) < 20]
    assert abs(np.median(near[near[:, 2] < 0.3, 2])) < 0.05
    t0 = lidar["key.frame_timestamp_micros"][0]
    b = [i for i, t in enumerate(boxes["key.frame_timestamp_micros"]) if t == t0]
    matched = 0
    for i in b:
        c = np.array([boxes[f"[LiDARBoxComponent].box.center.{a}"][i] for a in "xyz"])
        s = np.array([boxes[f"[LiDARBoxComponent].box.size.{a}"][i] for a in "xyz"])
        h = boxes["[LiDARBoxComponent].box.heading"][i]
        local = pts - c
        u = np.cos(h) * local[:, 0] + np.sin(h) * local[:, 1]
        v = -np.sin(h) * local[:, 0] + np.cos(h) * local[:, 1]
        n = int(((np.abs(u) <= s[0] / 2) & (np.abs(v) <= s[1] / 2) & (np.abs(local[:, 2]) <= s[2] / 2)).sum())
        expected = boxes["[LiDARBoxComponent].num_lidar_points_in_box"][i]
        matched += abs(n - expected) <= max(2, 0.02 * expected)
    assert b and matched >= 0.9 * len(b)


def test_scannet_layout(tmp_path):
    plyfile = pytest.importorskip("plyfile")
    root = simulate_dataset("scannet", tmp_path, frames=2, seed=3)
    name = "scene0000_00"
    folder = root / "scans" / name
    mesh = plyfile.PlyData.read(str(folder / f"{name}_vh_clean_2.ply"))
    labelled = plyfile.PlyData.read(str(folder / f"{name}_vh_clean_2.labels.ply"))
    assert [p.name for p in mesh["vertex"].properties] == ["x", "y", "z", "red", "green", "blue", "alpha"]
    assert [p.name for p in labelled["vertex"].properties][-1] == "label"
    assert mesh["face"].properties[0].name == "vertex_indices"
    n = mesh["vertex"].count
    faces = np.stack(mesh["face"]["vertex_indices"])
    assert faces.shape[1] == 3 and faces.max() < n
    labels = np.asarray(labelled["vertex"]["label"])
    assert labels.min() >= 1 and labels.max() <= 40 and {1, 2} <= set(labels.tolist())
    segs = json.loads((folder / f"{name}_vh_clean_2.0.010000.segs.json").read_text())
    assert segs["sceneId"] == name and len(segs["segIndices"]) == n
    agg = json.loads((folder / f"{name}.aggregation.json").read_text())
    assert agg["sceneId"] == f"scannet.{name}"
    assert agg["segmentsFile"] == f"scannet.{name}_vh_clean_2.0.010000.segs.json"
    all_segs = set(segs["segIndices"])
    tsv = [line.split("\t") for line in (root / "scannetv2-labels.combined.tsv").read_text().splitlines()]
    header, nyu40_of = tsv[0], {row[1]: int(row[4]) for row in tsv[1:]}
    assert len(header) == 17 and header[:2] == ["id", "raw_category"] and header[4] == "nyu40id"  # ScanNet's columns
    for group in agg["segGroups"]:  # each raw label maps, through the tsv, to the NYU40 id its vertices carry
        vertices = np.isin(segs["segIndices"], group["segments"])
        assert set(group["segments"]) <= all_segs and np.bincount(labels[vertices]).argmax() == nyu40_of[group["label"]]
    furniture = {name for names in ROOM_TYPES.values() for name in names}
    assert furniture | {"wall", "floor", "door", "window", "pillow"} <= set(RAW_CATEGORIES)
    meta = dict(line.split(" = ") for line in (folder / f"{name}.txt").read_text().splitlines())
    align = np.array(meta["axisAlignment"].split(), dtype=np.float64).reshape(4, 4)
    xyz = np.stack([mesh["vertex"][a] for a in "xyz"], 1)
    aligned = xyz @ align[:3, :3].T + align[:3, 3]
    assert aligned[:, 2].min() > -0.01 and aligned[:, :2].min() > -0.05  # the room starts at the origin
    assert (root / "scannetv2_train.txt").read_text().split() == [name]
    assert (root / "scannetv2_val.txt").read_text().split() == ["scene0001_00"]


@pytest.mark.parametrize("labelled", [False, True])
def test_scannet_ply_matches_plyfile(tmp_path, labelled):
    """The numpy PLY writer gives plyfile's bytes for the same vertices and faces."""
    plyfile = pytest.importorskip("plyfile")
    from pc3d.sim.writers.scannet import _write_ply

    rng = np.random.default_rng(0)
    xyz, rgb = rng.random((50, 3)).astype(np.float32), rng.integers(0, 256, (50, 3)).astype(np.uint8)
    faces, labels = rng.integers(0, 50, (70, 3)), rng.integers(1, 41, 50) if labelled else None
    _write_ply(tmp_path / "ours.ply", xyz, rgb, faces, labels)
    fields = [(n, "<f4") for n in "xyz"] + [(n, "u1") for n in ("red", "green", "blue", "alpha")]
    vert = np.empty(50, fields + ([("label", "<u2")] if labelled else []))
    for i, n in enumerate("xyz"):
        vert[n] = xyz[:, i]
    for i, n in enumerate(("red", "green", "blue")):
        vert[n] = rgb[:, i]
    vert["alpha"] = 255
    if labelled:
        vert["label"] = labels
    face = np.empty(70, [("vertex_indices", "<i4", (3,))])
    face["vertex_indices"] = faces
    plyfile.PlyData([plyfile.PlyElement.describe(vert, "vertex"),
                     plyfile.PlyElement.describe(face, "face", len_types={"vertex_indices": "u1"},
                                                 val_types={"vertex_indices": "i4"})],
                    text=False, byte_order="<", comments=["VCGLIB generated"]).write(str(tmp_path / "ref.ply"))
    assert (tmp_path / "ours.ply").read_bytes() == (tmp_path / "ref.ply").read_bytes()


def test_sceneflow_layouts(tmp_path):
    root = simulate_dataset("sceneflow", tmp_path, frames=2, seed=4, sequence_length=2)
    kitti = sorted((root / "KITTI_processed_occ_final").iterdir())
    ft3d = sorted((root / "FlyingThings3D_subset_processed_35m" / "train").iterdir())
    assert [p.name for p in kitti] == ["000000", "000001"] and [p.name for p in ft3d] == ["0000000"]
    assert (root / "FlyingThings3D_subset_processed_35m" / "val" / "0000000" / "pc1.npy").exists()
    for folder in kitti + ft3d:
        pc1, pc2 = np.load(folder / "pc1.npy"), np.load(folder / "pc2.npy")
        assert pc1.dtype == pc2.dtype == np.float32 and pc1.shape == pc2.shape and pc1.shape[1] == 3
        assert len(pc1) > 1000
    for folder in kitti:  # camera frame, x left, y up, z forward; ground and far points removed
        pc1, pc2 = np.load(folder / "pc1.npy"), np.load(folder / "pc2.npy")
        assert not ((pc1[:, 1] < -1.4) & (pc2[:, 1] < -1.4)).any() and (pc1[:, 2] < 35).all() and (pc1[:, 2] > 0).all()
    for folder in ft3d:  # z = -depth
        pc1 = np.load(folder / "pc1.npy")
        assert (pc1[:, 2] < 0).all() and (pc1[:, 2] > -35).all()


def test_flyingthings_writer_filters_the_float32_values_it_saves(tmp_path, monkeypatch):
    """A point 1e-7 m inside the 35 m depth limit in float64 lies on it in float32, where SceneFlowDataset drops
    it; the writer filters the values it saves, so the loader finds every written point."""
    import pc3d.sim.writers.sceneflow as writer

    pc1 = np.array([[0.0, 0.0, 10.0], [1.0, 0.0, 35.0 - 1e-7], [0.0, 1.0, 20.0]])
    monkeypatch.setattr(writer, "flying_things_scene", lambda rng: (pc1, pc1 + 0.1 * np.array([0, 0, -1.0]), None))
    root = simulate_dataset("sceneflow_ft3d", tmp_path, frames=1)
    saved = np.load(root / "FlyingThings3D_subset_processed_35m" / "train" / "0000000" / "pc1.npy")
    assert saved.tolist() == [[0.0, 0.0, -10.0], [0.0, -1.0, -20.0]]


def test_sceneflow_kitti_never_writes_an_empty_pair(tmp_path):
    """SceneFlowDataset refuses an empty pair, so the writer never writes one: a sensor with no column in the
    camera's view is refused before anything is written (2 columns look left and right), and a pair left empty
    all the same (1 column straight ahead: seed 0's third pair sees nothing near) stops the run naming it, the
    pairs before it whole, rather than leaving it out or writing it empty."""
    from pc3d.data.sceneflow import SceneFlowDataset

    with pytest.raises(ConfigError, match="columns=2: no column of the kitti_hdl64e sensor looks into the camera"):
        simulate_dataset("sceneflow_kitti", tmp_path / "two", frames=1, columns=2)
    assert not any((tmp_path / "two").rglob("*.npy"))
    with pytest.raises(ConfigError, match=r"000002: no point of this pair is left .* pairs 000000-000001 are written"):
        simulate_dataset("sceneflow_kitti", tmp_path / "one", frames=4, seed=0, columns=1, sequence_length=2)
    data = SceneFlowDataset(tmp_path / "one", variant="kitti", num_points=16)
    assert len(data) == 2 and all(len(data.load(i)["points"]) > 0 for i in range(2))


def test_flying_things_background_shows_the_camera_motion():
    """The static scenery (wall + clutter) moves rigidly with the camera, objects do not, and the bare wall,
    whose in-plane motion no geometry can show, holds a small share of the points."""
    from pc3d.sim.writers.sceneflow import flying_things_scene

    wall = []
    for n in range(4):
        pc1, pc2, owner = flying_things_scene(np.random.default_rng([3, n]), width=160, height=90, clutter=80)
        static = owner <= 80
        # Kabsch: the best rigid map of the static points of frame 1 onto frame 2
        a, b = pc1[static], pc2[static]
        u, _, vt = np.linalg.svd((a - a.mean(0)).T @ (b - b.mean(0)))
        d = np.diag([1.0, 1.0, np.linalg.det(u @ vt)])
        r = u @ d @ vt
        residual = np.abs((a - a.mean(0)) @ r + b.mean(0) - b).max()
        moved = np.abs((pc1[~static] - a.mean(0)) @ r + b.mean(0) - pc2[~static]).max()
        assert residual < 1e-6 < 0.05 < moved
        wall.append((owner[pc1[:, 2] < 35] == 0).mean())
        f = 1050.0 * 160 / 960.0  # both clouds inside their camera's image: visible in both frames
        for pc in (pc1, pc2):
            assert (pc[:, 2] > 0).all() and (np.abs(pc[:, 0] / pc[:, 2]) * f < 80).all()
            assert (np.abs(pc[:, 1] / pc[:, 2]) * f < 45).all()
    assert np.mean(wall) < 0.2


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("fmt", ["kitti", "semantickitti", "waymo", "scannet", "sceneflow"])
def test_same_seed_gives_identical_bytes(tmp_path, fmt):
    frames = 2 if fmt != "scannet" else 1
    a = _digest(simulate_dataset(fmt, tmp_path / "a", frames=frames, seed=5, sequence_length=2))
    b = _digest(simulate_dataset(fmt, tmp_path / "b", frames=frames, seed=5, sequence_length=2))
    assert a == b and len(a) > 3
    c = _digest(simulate_dataset(fmt, tmp_path / "c", frames=frames, seed=6, sequence_length=2))
    assert c != a


@pytest.mark.parametrize("kwargs", [{"columns": 0}, {"sequence_length": 0}, {"density": -1.0},
                                    {"density": float("nan")}, {"frames": 0}, {"scan_interval": 0.0},
                                    {"scan_interval": 1.0}, {"groups": -1.0}, {"moving_density": float("inf")}])
def test_simulate_refuses_out_of_range_settings(tmp_path, kwargs):
    from pc3d.errors import ConfigError
    from pc3d.sim.api import simulate_dataset

    with pytest.raises(ConfigError, match=next(iter(kwargs))):
        simulate_dataset("kitti", tmp_path / "out", **{"frames": 1, **kwargs})


@pytest.mark.parametrize("fmt", ["kitti", "waymo"])
def test_street_writers_take_the_scene_options(tmp_path, fmt):
    """moving_density and groups reach every street format's writer (waymo and kitti once ignored
    moving_density), and a format without streets refuses them."""
    from pc3d.errors import ConfigError

    def boxes(**options) -> int:
        root = simulate_dataset(fmt, tmp_path / str(len(list(tmp_path.iterdir()))), frames=1, seed=5, **options)
        if fmt == "kitti":
            return sum(len(p.read_text().splitlines()) for p in root.rglob("label_2/*.txt"))
        pq = pytest.importorskip("pyarrow.parquet")
        return sum(pq.read_table(p).num_rows for p in root.rglob("lidar_box/*.parquet"))

    plain = boxes()
    assert boxes(moving_density=2.0) > plain and boxes(groups=4.0) > plain
    with pytest.raises(ConfigError, match="groups: only the street formats"):
        simulate_dataset("scannet", tmp_path / "scannet", frames=1, groups=1.0)


def test_kitti_occlusion_levels_follow_the_visible_fraction(monkeypatch):
    """KITTI's occluded field: 0 fully visible (>= 80 % of the object seen here), 1 partly (>= 40 %), 2 largely."""
    import pc3d.sim.ground_truth as gt
    from pc3d.sim.api import outdoor_frames, sensor_spec

    frame = next(f for _, _, f in outdoor_frames(1, 0, sensor_spec("kitti"), frames_per_scene=1))
    fractions = np.array([0.95, 0.8, 0.79, 0.4, 0.39, 0.0])
    monkeypatch.setattr(gt, "visible_fraction", lambda frame, calib, which: np.resize(fractions, len(which)))
    objects = gt.kitti_objects(frame, kitti_calib())
    labelled = objects.index >= 0
    assert labelled.sum() >= len(fractions)
    expected = np.resize(np.array([0, 0, 1, 1, 2, 2]), labelled.sum())
    np.testing.assert_array_equal(np.asarray(objects.occluded)[labelled], expected)


def test_semantickitti_times_and_poses_start_at_each_sequences_first_scan(tmp_path):
    """times.txt counts from the sequence's first scan and poses.txt from its pose, wherever the scene clock and
    the sensor stood then (the writer's scenes start at 0 s; a clock 7.5 s on must not show)."""
    from dataclasses import replace

    from pc3d.sim.frames import outdoor_frames, sensor_spec
    from pc3d.sim.writers.semantickitti import SequenceWriter

    frames = [f for _, _, f in outdoor_frames(3, 4, sensor_spec("kitti_hdl64e", 256), frames_per_scene=3, spacing=0.5)]
    writer = SequenceWriter(tmp_path, 3)
    for frame in frames:
        writer.write(replace(frame, time=frame.time + 7.5))
    writer.close()
    seq = tmp_path / "sequences" / "03"
    np.testing.assert_allclose(np.loadtxt(seq / "times.txt"), [0.0, 0.5, 1.0], atol=1e-9)
    poses = np.loadtxt(seq / "poses.txt").reshape(-1, 3, 4)
    np.testing.assert_allclose(poses[0], np.eye(3, 4), atol=1e-9)
    assert not np.allclose(frames[0].sensor_pose, np.eye(4))  # the first pose was not the identity to begin with
    tr = kitti_calib().velo_to_rect()  # the later poses: the sensor's motion since the first scan, in the camera frame
    moved = tr @ np.linalg.inv(frames[0].sensor_pose) @ frames[2].sensor_pose @ np.linalg.inv(tr)
    np.testing.assert_allclose(poses[2], moved[:3], atol=1e-6)
