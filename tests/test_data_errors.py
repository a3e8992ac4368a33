"""Bad input: DataFormatError naming the file, never another exception; skip_bad_frames counts and reports."""
from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pc3d.data import (
    BadFrameWarning,
    KittiDataset,
    ScanNetDataset,
    SceneFlowDataset,
    SemanticKittiDataset,
    WaymoDataset,
)
from pc3d.errors import DataFormatError
from pc3d.sim.api import simulate_dataset

FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("data")
    out = {"kitti": simulate_dataset("kitti", base / "kitti", frames=2, seed=0),
           "semantickitti": simulate_dataset("semantickitti", base / "sk", frames=1, seed=0, sequence_length=1),
           "sceneflow": simulate_dataset("sceneflow_kitti", base / "sf", frames=1, seed=0),
           "scannet": simulate_dataset("scannet", base / "scannet", frames=1, seed=0)}
    if pytest.importorskip("pyarrow"):
        out["waymo"] = simulate_dataset("waymo", base / "waymo", frames=1, seed=0, sequence_length=1)
    return out


def _copy(root, tmp_path, name):
    dst = tmp_path / name
    shutil.copytree(root, dst)
    return dst


def _raises_naming(fn, path):
    with pytest.raises(DataFormatError) as info:
        fn()
    assert str(path) in str(info.value), info.value
    return info.value


def test_kitti_bad_files(roots, tmp_path):
    root = _copy(roots["kitti"], tmp_path, "k")
    ds = KittiDataset(root, "trainval")
    velodyne = root / "training" / "velodyne" / "000000.bin"
    raw = velodyne.read_bytes()
    velodyne.write_bytes(raw[:-6])
    assert "multiple of 16" in str(_raises_naming(lambda: ds.load(0), velodyne))
    pts = np.frombuffer(raw, "<f4").copy()
    pts[5] = np.nan
    velodyne.write_bytes(pts.tobytes())
    assert "NaN" in str(_raises_naming(lambda: ds.load(0), velodyne))
    calib = root / "training" / "calib" / "000001.txt"
    calib.unlink()
    _raises_naming(lambda: ds.load(1), calib)


def test_skip_bad_frames_counts_and_reports(roots, tmp_path):
    root = _copy(roots["kitti"], tmp_path, "k")
    (root / "training" / "calib" / "000000.txt").unlink()
    ds = KittiDataset(root, "trainval", skip_bad_frames=True, seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sample = ds[0]
    assert sample["frame_id"] == "000001"
    assert any(issubclass(w.category, BadFrameWarning) and "000000" in str(w.message) for w in caught)
    assert list(ds.skipped) == ["000000"] and "1 bad frame(s) skipped" in ds.skip_report()
    assert list(ds.scan()) == ["000000"]


def test_skip_bad_frames_stands_in_no_frame_for_an_evaluation(roots, tmp_path):
    """Evaluators pair prediction i with frame i's labels: frame 000001's points in place of 000000's would be
    scored against 000000's boxes."""
    root = _copy(roots["kitti"], tmp_path, "k")
    (root / "training" / "calib" / "000000.txt").unlink()
    ds = KittiDataset(root, "trainval", skip_bad_frames=True, seed=0, training=False)
    with pytest.raises(DataFormatError, match=r"000000\.txt.*only when training"):
        ds[0]
    assert not ds.skipped


def test_semantickitti_label_count_mismatch(roots, tmp_path):
    root = _copy(roots["semantickitti"], tmp_path, "sk")
    label = root / "sequences" / "00" / "labels" / "000000.label"
    label.write_bytes(label.read_bytes()[:-8])
    assert "labels, expected" in str(_raises_naming(lambda: SemanticKittiDataset(root, sequences=[0]).load(0), label))


def test_waymo_parquet_without_expected_columns(roots, tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    root = _copy(roots["waymo"], tmp_path, "w")
    (path,) = (root / "training" / "lidar").glob("*.parquet")
    table = pq.read_table(path)
    pq.write_table(table.drop(["[LiDARComponent].range_image_return1.values"]), path)
    ds = WaymoDataset(root, "training")
    assert "missing expected columns" in str(_raises_naming(lambda: ds.load(0), path))
    pq.write_table(pa.table({"x": [1, 2]}), path)
    _raises_naming(lambda: WaymoDataset(root, "training"), path)


def test_scannet_ply_without_labels(roots, tmp_path):
    root = _copy(roots["scannet"], tmp_path, "s")
    scene = root / "scans" / "scene0000_00"
    labelled = scene / "scene0000_00_vh_clean_2.labels.ply"
    shutil.copy(scene / "scene0000_00_vh_clean_2.ply", labelled)
    assert "label" in str(_raises_naming(lambda: ScanNetDataset(root, "train").load(0), labelled))


def _fuzz_file(path, original: bytes, data) -> None:
    """Truncate, corrupt bytes or both."""
    mode = data.draw(st.sampled_from(["truncate", "corrupt", "garbage"]))
    if mode == "truncate":
        path.write_bytes(original[:data.draw(st.integers(0, len(original) - 1))])
    elif mode == "corrupt":
        buf = bytearray(original)
        for _ in range(data.draw(st.integers(1, 8))):
            buf[data.draw(st.integers(0, len(buf) - 1))] = data.draw(st.integers(0, 255))
        path.write_bytes(bytes(buf[:data.draw(st.integers(1, len(buf)))]))
    else:
        path.write_bytes(data.draw(st.binary(max_size=256)))


def _only_data_format_errors(load) -> None:
    try:
        load()
    except DataFormatError:
        pass


@pytest.fixture(scope="module")
def fuzz_roots(roots, tmp_path_factory):
    base = tmp_path_factory.mktemp("fuzz")
    return {k: _copy(v, base, k) for k, v in roots.items()}


@FUZZ
@given(data=st.data(), which=st.sampled_from(["velodyne", "label_2", "calib"]))
def test_fuzz_kitti(fuzz_roots, data, which):
    root = fuzz_roots["kitti"]
    path = root / "training" / which / f"000000.{'bin' if which == 'velodyne' else 'txt'}"
    original = path.read_bytes()
    try:
        _fuzz_file(path, original, data)
        _only_data_format_errors(lambda: KittiDataset(root, "trainval").load(0))
    finally:
        path.write_bytes(original)


@FUZZ
@given(data=st.data(), which=st.sampled_from(["velodyne/000000.bin", "labels/000000.label", "poses.txt"]))
def test_fuzz_semantickitti(fuzz_roots, data, which):
    root = fuzz_roots["semantickitti"]
    path = root / "sequences" / "00" / which
    original = path.read_bytes()
    try:
        _fuzz_file(path, original, data)
        _only_data_format_errors(lambda: SemanticKittiDataset(root, sequences=[0], n_past_scans=1).load(0))
    finally:
        path.write_bytes(original)


@FUZZ
@given(data=st.data(), which=st.sampled_from(["pc1.npy", "pc2.npy"]))
def test_fuzz_sceneflow(fuzz_roots, data, which):
    root = fuzz_roots["sceneflow"]
    path = root / "KITTI_processed_occ_final" / "000000" / which
    original = path.read_bytes()
    try:
        _fuzz_file(path, original, data)
        _only_data_format_errors(lambda: SceneFlowDataset(root, "kitti", num_points=None).load(0))
    finally:
        path.write_bytes(original)


@FUZZ
@given(data=st.data(), which=st.sampled_from(["_vh_clean_2.ply", "_vh_clean_2.labels.ply", ".txt"]))
def test_fuzz_scannet(fuzz_roots, data, which):
    pytest.importorskip("plyfile")
    root = fuzz_roots["scannet"]
    path = root / "scans" / "scene0000_00" / f"scene0000_00{which}"
    original = path.read_bytes()
    try:
        _fuzz_file(path, original, data)
        _only_data_format_errors(lambda: ScanNetDataset(root, "train").load(0))
    finally:
        path.write_bytes(original)


@FUZZ
@given(data=st.data(), component=st.sampled_from(["lidar", "lidar_calibration", "lidar_box"]))
def test_fuzz_waymo(fuzz_roots, data, component):
    pytest.importorskip("pyarrow")
    root = fuzz_roots["waymo"]
    (path,) = (root / "training" / component).glob("*.parquet")
    original = path.read_bytes()
    try:
        _fuzz_file(path, original, data)
        _only_data_format_errors(lambda: WaymoDataset(root, "training").load(0))
    finally:
        path.write_bytes(original)


def test_gt_database_objects_keep_the_points_they_share(tmp_path):
    """Two overlapping boxes (a cyclist beside a pedestrian): each object holds every point inside its own box, the
    shared ones too, as OpenPCDet's database (one owner per point dropped the pedestrian's)."""
    from pc3d.data import GTDatabase
    from pc3d.data.gt_database import write_database
    from pc3d.geometry import points_in_boxes_count

    rng = np.random.default_rng(0)
    points = np.c_[rng.uniform(-1, 1, (400, 3)), np.zeros(400)].astype(np.float32)
    boxes = np.array([[0, 0, 0, 2, 2, 2, 0], [0.5, 0, 0, 2, 2, 2, 0]], np.float32)
    frame = {"frame_id": "f", "points": points, "gt_boxes": boxes, "names": np.array(["Cyclist", "Pedestrian"]),
             "difficulty": np.array([0, 0])}
    db = GTDatabase.load(write_database(tmp_path, "overlap", "train", ("x", "y", "z", "intensity"), [frame]))
    assert db.num_points.tolist() == points_in_boxes_count(points, boxes).tolist() == [400, 303]
    np.testing.assert_allclose(db.object_points(1)[:, :3] + boxes[1, :3], points[points[:, 0] >= -0.5, :3], atol=1e-6)


def test_gt_database_header_and_empty_objects(roots, tmp_path):
    """The GT database counts the objects it leaves out (no point inside) and refuses a damaged header or index."""
    import json

    from pc3d.data import GTDatabase
    from pc3d.data.create import create_data

    root = _copy(roots["kitti"], tmp_path, "k")
    report = create_data("kitti", root)
    header_path = root / "kitti_gt_database_train.json"
    header = json.loads(header_path.read_text())
    assert "empty" in header and report["gt_database"] == header["count"]
    assert len(GTDatabase.load(header_path)) == sum(header["count"].values())
    for bad in ({**header, "columns": "xyz"}, {k: v for k, v in header.items() if k != "index"}, [header]):
        header_path.write_text(json.dumps(bad))
        _raises_naming(lambda: GTDatabase.load(header_path), header_path)
    header_path.write_text(json.dumps(header))
    index = root / header["index"]
    with np.load(index) as arrays:
        np.savez(index, **{**arrays, "offset": arrays["offset"][:-1]})
    assert "disagree" in str(_raises_naming(lambda: GTDatabase.load(header_path), index))
