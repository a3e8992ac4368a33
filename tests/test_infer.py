"""tools/infer.py on untrained models built from the experiment configs: every input kind, every output
format, the latency table, and one clear line for bad input; pc3d.Predictor, the same model as a Python
function of a cloud, equal to tools/infer.py's files, and its errors for bad clouds."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import experiment_checkpoint

import pc3d
from pc3d.data import SemanticKittiDataset
from pc3d.errors import ConfigError, DataFormatError
from pc3d.infer.outputs import label_space
from pc3d.infer.predictor import Predictor
from pc3d.sim.api import simulate_dataset
from pc3d.viz import render_scene_png

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import infer  # noqa: E402
import visualize  # noqa: E402


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sim")
    simulate_dataset("kitti", root / "kitti", frames=3, seed=0, columns=512)
    simulate_dataset("semantickitti", root / "semantickitti", frames=2, seed=0, columns=512, sequence_length=2)
    simulate_dataset("waymo", root / "waymo", frames=2, seed=0, columns=512, sequence_length=2)
    simulate_dataset("scannet", root / "scannet", frames=1, seed=0)
    return root


@pytest.fixture(scope="module")
def ckpts(data, tmp_path_factory) -> dict[str, Path]:
    runs = tmp_path_factory.mktemp("runs")
    return {
        "kitti": experiment_checkpoint(runs, "pointpillars_sim_kitti", f"dataset.root={data / 'kitti'}"),
        "waymo": experiment_checkpoint(runs, "centerpoint_sim_waymo", f"dataset.root={data / 'waymo'}"),
        "semantickitti": experiment_checkpoint(runs, "sim_semantickitti_seg", f"dataset.root={data / 'semantickitti'}"),
        "scannet": experiment_checkpoint(runs, "sim_scannet_seg", f"dataset.root={data / 'scannet'}"),
    }


def run(ckpt: Path, source: Path, out: Path, *extra: str) -> int:
    return infer.main([str(ckpt), str(source), "--out", str(out), "--device", "cpu", *extra])


def test_kitti_root_writes_labels_json_renders_and_latency(data, ckpts, tmp_path, capsys):
    assert run(ckpts["kitti"], data / "kitti", tmp_path, "--split", "train", "--render", "--render-mode", "bev") == 0
    printed = capsys.readouterr().out
    frames = (data / "kitti" / "ImageSets" / "train.txt").read_text().split()
    for frame in frames:
        assert (tmp_path / "kitti" / f"{frame}.txt").is_file()
        payload = json.loads((tmp_path / "json" / f"{frame}.json").read_text())
        assert payload["frame"] == "lidar" and len(payload["boxes"]) == len(payload["scores"])
        assert (tmp_path / "render" / f"{frame}.png").is_file()
    for stage in ("read", "voxelize", "vfe", "backbone_2d", "dense_head", "write", "total"):
        assert f"| {stage} |" in printed
    assert "p95 ms" in printed
    vis = tmp_path / "vis"
    assert visualize.main([str(data / "kitti"), "--split", "train", "--pred", str(tmp_path / "json"), "--out",
                           str(vis), "--mode", "bev", "--threshold", "0"]) == 0
    assert sorted(p.name for p in vis.glob("*.png")) == [f"{i:06d}.png" for i in range(len(frames))]


def test_semantickitti_sequence_streams_one_label_per_point(data, ckpts, tmp_path, capsys):
    sequence = data / "semantickitti" / "sequences" / "00"
    assert run(ckpts["semantickitti"], sequence, tmp_path) == 0
    scans = sorted((sequence / "velodyne").glob("*.bin"))
    for scan in scans:
        label = tmp_path / "labels" / "sequences" / "00" / "predictions" / f"{scan.stem}.label"
        assert label.stat().st_size == scan.stat().st_size // 4  # one uint32 per float32 x 4 point
    assert f"{len(scans)} frames" in capsys.readouterr().out


def write_pcd(path: Path, points: np.ndarray, fields: str = "x y z intensity", mode: str = "binary") -> Path:
    """A PCL v0.7 .pcd file of float32 columns named `fields`."""
    n, c = points.shape
    header = (f"# .PCD v0.7\nVERSION 0.7\nFIELDS {fields}\nSIZE {' '.join(['4'] * c)}\nTYPE {' '.join(['F'] * c)}\n"
              f"COUNT {' '.join(['1'] * c)}\nWIDTH {n}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {n}\nDATA {mode}\n")
    body = points.astype("<f4").tobytes() if mode == "binary" else "\n".join(
        " ".join(f"{v:.6g}" for v in row) for row in points).encode()
    path.write_bytes(header.encode() + body)
    return path


def test_pcd_folder_with_a_segmentor(data, ckpts, tmp_path, capsys):
    folder = tmp_path / "clouds"
    folder.mkdir()
    counts = []
    for k, scan in enumerate(sorted((data / "semantickitti" / "sequences" / "00" / "velodyne").glob("*.bin"))):
        pts = np.fromfile(scan, np.float32).reshape(-1, 4)
        write_pcd(folder / f"{scan.stem}.pcd", pts, mode="binary" if k % 2 else "ascii")
        counts.append((scan.stem, len(pts)))
    assert run(ckpts["semantickitti"], folder, tmp_path / "out") == 0
    for stem, n in counts:
        labels = np.fromfile(tmp_path / "out" / "labels" / "sequences" / "clouds" / "predictions" / f"{stem}.label",
                             "<u4")
        assert len(labels) == n
    # x, y, z only: the model reads intensity, so the frame is refused unless --pad-features
    xyz = write_pcd(tmp_path / "xyz.pcd", np.fromfile(scan, np.float32).reshape(-1, 4)[:, :3], "x y z")
    capsys.readouterr()
    assert run(ckpts["semantickitti"], xyz, tmp_path / "xyz") == 2
    assert "no intensity column" in capsys.readouterr().err
    assert run(ckpts["semantickitti"], xyz, tmp_path / "xyz", "--pad-features") == 0


def test_waymo_segment_writes_parquet(data, ckpts, tmp_path, capsys):
    import pyarrow.parquet as pq

    segment = next((data / "waymo" / "training" / "lidar").glob("*.parquet"))
    capsys.readouterr()
    assert run(ckpts["waymo"], segment, tmp_path, "--render", "--render-mode", "bev") == 0
    assert f"renders (bev): {tmp_path / 'render' / segment.stem}, 2 PNGs" in capsys.readouterr().out
    table = pq.read_table(tmp_path / "waymo" / "training" / "lidar_box" / segment.name)
    assert {"key.frame_timestamp_micros", "[LiDARBoxComponent].box.center.x", "[LiDARBoxComponent].type",
            "[LiDARBoxComponent].score"} <= set(table.column_names)
    assert len(list((tmp_path / "render").rglob("*.png"))) == 2


def test_a_kitti_model_over_a_waymo_segment_writes_waymo_types(data, tmp_path):
    """Car is written as Vehicle (the probe's infer/waymo-split-folder-legit case once ended in an error); the
    untrained model keeps every box (score threshold 0)."""
    from pc3d.eval.waymo_objects import read_objects

    ckpt = experiment_checkpoint(tmp_path, "pointpillars_sim_kitti", f"dataset.root={data / 'kitti'}",
                                 "model.post_process.score_threshold=0", "model.dense_head.score_threshold=0")
    assert run(ckpt, data / "waymo" / "training", tmp_path / "out") == 0
    frames = read_objects(tmp_path / "out" / "waymo" / "training" / "objects.bin")
    types = {t for frame in frames.values() for t in frame["types"].tolist()}
    assert len(frames) == 2 and types and types <= {"vehicle", "pedestrian", "cyclist"}


def test_track_gives_every_box_an_id_in_json_and_parquet(data, ckpts, tmp_path, capsys):
    import pyarrow.parquet as pq

    from pc3d.eval.box_json import read_box_json

    segment = next((data / "waymo" / "training" / "lidar").glob("*.parquet"))
    capsys.readouterr()
    assert run(ckpts["waymo"], segment, tmp_path, "--track", "--render", "--render-mode", "bev") == 0
    assert "track ids: " in capsys.readouterr().out
    payloads = [json.loads(p.read_text()) for p in sorted((tmp_path / "json").rglob("*.json"))]
    assert len(payloads) == 2 and all(len(p["track_ids"]) == len(p["boxes"]) for p in payloads)
    assert sum(len(p["boxes"]) for p in payloads) > 0, "the untrained model gave no boxes to track"
    ids = pq.read_table(tmp_path / "waymo" / "training" / "lidar_box" / segment.name).column("key.laser_object_id")
    assert ids.to_pylist() == [str(i) for p in payloads for i in p["track_ids"]]
    first = next((tmp_path / "json").rglob("*.json"))
    assert read_box_json(first)["track_ids"].tolist() == json.loads(first.read_text())["track_ids"]
    empty = tmp_path / "empty.json"  # a frame without boxes reads back with no track ids, not an error
    empty.write_text(json.dumps({**json.loads(first.read_text()), "boxes": [], "scores": [], "labels": [],
                                 "track_ids": []}))
    assert read_box_json(empty)["track_ids"].shape == (0,)
    # tracking needs boxes and poses: one line each
    assert run(ckpts["semantickitti"], data / "semantickitti" / "sequences" / "00", tmp_path / "seg", "--track") == 2
    assert "--track: tracks boxes; a segmentation model gives none" in capsys.readouterr().err
    assert run(ckpts["kitti"], data / "kitti", tmp_path / "kitti", "--split", "train", "--track") == 2
    assert "has no poses; --track needs" in capsys.readouterr().err


def test_scannet_scene_writes_nyu40_per_vertex(data, ckpts, tmp_path):
    from pc3d.data.scannet import read_scene

    scene = next((data / "scannet" / "scans").iterdir())
    assert run(ckpts["scannet"], scene, tmp_path) == 0
    ids = np.loadtxt(tmp_path / "labels" / f"{scene.name}.txt", dtype=np.int64)
    assert len(ids) == len(read_scene(scene)) and set(ids.tolist()) <= {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14,
                                                                       16, 24, 28, 33, 34, 36, 39}


@pytest.mark.parametrize("case", ["unknown_extension", "empty_cloud", "nan_cloud", "no_frames", "missing"])
def test_bad_input_is_one_line_naming_it(ckpts, tmp_path, capsys, case):
    if case == "unknown_extension":
        source = tmp_path / "cloud.xyz"
        source.write_text("1 2 3\n")
    elif case == "empty_cloud":
        source = tmp_path / "empty.npy"
        np.save(source, np.zeros((0, 4), np.float32))
    elif case == "nan_cloud":
        source = tmp_path / "nan.npy"
        np.save(source, np.full((10, 4), np.nan, np.float32))
    elif case == "no_frames":
        source = tmp_path / "nothing"
        source.mkdir()
        (source / "README.txt").write_text("no clouds here")
    else:
        source = tmp_path / "does_not_exist"
    assert run(ckpts["kitti"], source, tmp_path / "out") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("infer: error: ") and str(source) in err[0], err
    assert "Traceback" not in err[0]


def test_single_npy_file(data, ckpts, tmp_path):
    scan = data / "kitti" / "training" / "velodyne" / "000000.bin"
    np.save(tmp_path / "frame.npy", np.fromfile(scan, np.float32).reshape(-1, 4))
    assert run(ckpts["kitti"], tmp_path / "frame.npy", tmp_path / "out") == 0
    assert (tmp_path / "out" / "kitti" / "frame.txt").is_file() and (tmp_path / "out" / "json" / "frame.json").is_file()


def test_a_bad_frame_is_skipped_and_counted_unless_strict(data, ckpts, tmp_path, capsys):
    scan = np.fromfile(data / "kitti" / "training" / "velodyne" / "000000.bin", np.float32).reshape(-1, 4)
    folder = tmp_path / "seq"
    folder.mkdir()
    np.save(folder / "000000.npy", scan)
    np.save(folder / "000001.npy", np.full((10, 4), np.nan, np.float32))
    np.save(folder / "000002.npy", scan)
    assert run(ckpts["kitti"], folder, tmp_path / "out") == 0
    captured = capsys.readouterr()
    assert "000001.npy" in captured.err and "1 bad frame(s) skipped" in captured.out
    assert sorted(p.name for p in (tmp_path / "out" / "kitti" / "seq").glob("*.txt")) == ["000000.txt", "000002.txt"]
    assert run(ckpts["kitti"], folder, tmp_path / "strict", "--strict") == 2


def test_test_time_augmentation(data, ckpts, tmp_path, capsys):
    """--tta: a segmentor still writes one label per point and a detector its boxes; the latency table times the
    model's own stages inside the augmentation; an unknown view set is one line."""
    sequence = data / "semantickitti" / "sequences" / "00"
    assert run(ckpts["semantickitti"], sequence, tmp_path / "seg", "--tta", "flips", "--tta-scales", "0.95", "1") == 0
    for scan in sorted((sequence / "velodyne").glob("*.bin")):
        label = tmp_path / "seg" / "labels" / "sequences" / "00" / "predictions" / f"{scan.stem}.label"
        assert label.stat().st_size == scan.stat().st_size // 4
    assert "| backbone |" in capsys.readouterr().out
    assert run(ckpts["kitti"], data / "kitti", tmp_path / "det", "--split", "train", "--tta", "mirror") == 0
    assert "| backbone_2d |" in capsys.readouterr().out
    frames = (data / "kitti" / "ImageSets" / "train.txt").read_text().split()
    assert sorted(p.stem for p in (tmp_path / "det" / "json").glob("*.json")) == sorted(frames)
    assert run(ckpts["kitti"], data / "kitti", tmp_path / "bad", "--tta", "sideways") == 2
    assert "unknown views 'sideways'" in capsys.readouterr().err


def scannet_scene(data: Path, scene: str, **options):
    """The simulated ScanNet root's one scene as a dataset of the split that lists it."""
    from pc3d.data import ScanNetDataset

    split = next(s for s in ("train", "val") if scene in (data / "scannet" / f"scannetv2_{s}.txt").read_text().split())
    return ScanNetDataset(data / "scannet", split, **options)


def test_visualize_reads_back_what_infer_wrote(data, ckpts, tmp_path):
    """InferResults gives each frame of the source the classes tools/infer.py wrote (read back through the
    dataset's label space: SemanticKITTI .label, ScanNet NYU40 .txt), NaN rows of a point file left out, and
    tools/visualize.py renders them from the output folder."""
    from pc3d.infer.results import InferResults
    from pc3d.infer.sources import open_source

    sequence = data / "semantickitti" / "sequences" / "00"
    assert run(ckpts["semantickitti"], sequence, tmp_path / "seg") == 0
    predictor, results = Predictor(ckpts["semantickitti"]), InferResults(tmp_path / "seg")
    assert results.task == "segmentation" and results.palette.shape == (20, 3)
    source = open_source(str(sequence), ("intensity",))
    for item in source.items:
        frame = source.read(item)
        scene = results.scene(frame)
        np.testing.assert_array_equal(scene.point_labels, predictor(frame.points)["pred_labels"])
    truth = SemanticKittiDataset(data / "semantickitti", sequences=["00"]).read_scan("00", frame.frame_id[3:])[1]
    np.testing.assert_array_equal(results.scene(frame, labels="truth").point_labels, truth)
    errors = results.scene(frame, labels="errors").point_labels  # unlabelled 0, right 1, wrong 2
    np.testing.assert_array_equal(errors, np.where(truth == 0, 0, np.where(scene.point_labels == truth, 1, 2)))
    assert {1, 2} <= set(np.unique(errors).tolist())  # an untrained model: right and wrong points
    alone = InferResults.ground_truth({"_target_": "pc3d.data.SemanticKittiDataset"})  # no run needed
    np.testing.assert_array_equal(alone.scene(frame, labels="truth").point_labels, truth)
    assert visualize.main([str(sequence), "--out", str(tmp_path / "truth"), "--mode", "bev", "--labels", "truth"]) == 0
    assert visualize.main([str(data / "kitti"), "--out", str(tmp_path / "no"), "--labels", "truth"]) == 2
    vis = tmp_path / "vis"
    for labels in ("pred", "errors"):
        assert visualize.main([str(sequence), "--pred", str(tmp_path / "seg"), "--out", str(vis / labels), "--mode",
                               "bev", "--labels", labels]) == 0
        assert len(list((vis / labels).glob("*.png"))) == len(source.items)

    folder = tmp_path / "nan"  # rows with NaN: ignored in the label file, left out of the drawn frame
    folder.mkdir()
    points = read_scan(sorted((sequence / "velodyne").glob("*.bin"))[0])
    points[[3, 7]] = np.nan
    np.save(folder / "a.npy", points)
    assert run(ckpts["semantickitti"], folder, tmp_path / "nan_out") == 0
    frame = open_source(str(folder), ("intensity",)).read(folder / "a.npy")
    scene = InferResults(tmp_path / "nan_out").scene(frame)
    assert len(scene.point_labels) == len(frame.points) == len(points) - 2
    np.testing.assert_array_equal(scene.point_labels, predictor(points, drop_nonfinite=True)["pred_labels"])

    room = next((data / "scannet" / "scans").iterdir())
    assert run(ckpts["scannet"], room, tmp_path / "scannet") == 0
    results = InferResults(tmp_path / "scannet")
    frame = open_source(str(room), ("r", "g", "b")).read(open_source(str(room), ("r", "g", "b")).items[0])
    scene = results.scene(frame)
    np.testing.assert_array_equal(scene.point_labels, Predictor(ckpts["scannet"])(frame.points)["pred_labels"])
    assert scene.view == "overview"
    truth = results.scene(frame, labels="truth").point_labels  # the scene's labels .ply through the label space
    np.testing.assert_array_equal(truth, scannet_scene(data, room.name).load(0)["point_labels"])
    assert visualize.main([str(room), "--out", str(tmp_path / "room"), "--mode", "bev", "--labels", "truth"]) == 0
    (tmp_path / "scannet" / "labels" / f"{room.name}.txt").write_text("1\n2\n")
    with pytest.raises(DataFormatError, match=f"{room.name}.txt: 2 labels for a cloud of"):
        results.scene(frame)


def test_visualize_takes_the_detection_output_folder(data, ckpts, tmp_path):
    assert run(ckpts["kitti"], data / "kitti", tmp_path, "--split", "train") == 0
    from pc3d.infer.results import InferResults
    from pc3d.infer.sources import open_source

    source = open_source(str(data / "kitti"), ("intensity",), "train")
    frame = source.read(source.items[0])
    written = json.loads((tmp_path / "json" / f"{frame.frame_id}.json").read_text())
    for folder in (tmp_path, tmp_path / "json"):  # the output folder, or its json/ folder as before
        scene = InferResults(folder).scene(frame, threshold=0.0)
        np.testing.assert_allclose(scene.pred_boxes, np.asarray(written["boxes"], np.float32).reshape(-1, 7))
    assert visualize.main([str(data / "kitti"), "--split", "train", "--pred", str(tmp_path), "--out",
                           str(tmp_path / "vis"), "--mode", "bev", "--max-frames", "1"]) == 0


def test_sources_give_their_ground_truth_boxes_in_the_lidar_frame(data):
    """What tools/visualize.py draws as ground truth: KITTI label_2 through the calibration, Waymo lidar_box."""
    from pc3d.data import WaymoDataset
    from pc3d.data.kitti import parse_label
    from pc3d.geometry.points_in_boxes import points_in_boxes_count
    from pc3d.infer.sources import open_source

    source = open_source(str(data / "kitti"), ("intensity",), "train")
    frame = source.read(source.items[0])
    boxes = source.ground_truth_boxes(frame)
    names = parse_label(frame.extra["label_2"])["name"]
    assert boxes.shape == ((names != "DontCare").sum(), 7) and len(boxes) > 0
    assert (points_in_boxes_count(frame.points[:, :3], boxes) > 0).mean() > 0.5  # on the scan's objects
    segment = next((data / "waymo" / "training" / "lidar").glob("*.parquet"))
    source = open_source(str(segment), ("intensity", "elongation"))
    frame = source.read(source.items[0])
    expected = WaymoDataset(data / "waymo", "training").read_boxes(segment.stem, frame.extra["timestamp"])["box"]
    assert len(expected) > 0
    np.testing.assert_array_equal(source.ground_truth_boxes(frame), expected[:, :7])
    sequence = open_source(str(data / "semantickitti" / "sequences" / "00"), ("intensity",))
    assert sequence.ground_truth_boxes(sequence.read(sequence.items[0])) is None
    room = next((data / "scannet" / "scans").iterdir())
    source = open_source(str(room), ("r", "g", "b"))
    boxes = source.ground_truth_boxes(source.read(source.items[0]))
    expected = scannet_scene(data, room.name, boxes=True).annotations(0)["gt_boxes"]
    assert len(expected) > 0
    np.testing.assert_allclose(boxes, expected, atol=1e-5)


# ---------------------------------------------------------------- pc3d.Predictor: the same model in Python

def read_scan(path: Path) -> np.ndarray:
    return np.fromfile(path, np.float32).reshape(-1, 4)


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
    scene = predictor.scene(points, pred, threshold=0.0)  # the rows the model saw, its boxes
    np.testing.assert_array_equal(scene.points, points[pred["kept"]])
    np.testing.assert_array_equal(scene.pred_boxes, pred["boxes"])
    sure = pred["scores"] >= np.median(pred["scores"])
    np.testing.assert_array_equal(predictor.scene(points, pred, np.median(pred["scores"])).pred_boxes,
                                  pred["boxes"][sure])
    path, mode = render_scene_png(scene, tmp_path / "scene.png", mode="bev")
    assert mode == "bev" and path.stat().st_size > 1000
    without_crop = predictor(points)
    assert "kept" not in without_crop and not np.array_equal(without_crop["boxes"], pred["boxes"])
    from_file = predictor(data / "kitti" / "training" / "velodyne" / f"{frame}.bin")  # read as tools/infer.py reads
    np.testing.assert_array_equal(from_file["boxes"], without_crop["boxes"])
    assert from_file["frame_id"] == frame


def test_segmentation_equals_tools_infer_per_point(data, ckpts, tmp_path):
    ckpt = ckpts["semantickitti"]
    sequence = data / "semantickitti" / "sequences" / "00"
    assert infer.main([str(ckpt), str(sequence), "--out", str(tmp_path / "infer"), "--device", "cpu"]) == 0
    predictor = Predictor(ckpt)
    scan = sorted((sequence / "velodyne").glob("*.bin"))[0]
    points = read_scan(scan)
    original = points.copy()
    pred = predictor(points, frame_id=f"00/{scan.stem}")
    assert np.array_equal(points, original)  # the caller's array is not touched
    assert pred["pred_labels"].shape == (len(points),)
    space = label_space(dict(predictor.config.dataset), 20)
    mine = space.write(f"00/{scan.stem}", pred["pred_labels"], tmp_path / "mine")
    theirs = tmp_path / "infer" / "labels" / "sequences" / "00" / "predictions" / f"{scan.stem}.label"
    assert mine.read_bytes() == theirs.read_bytes()
    scene = predictor.scene(points, pred)
    np.testing.assert_array_equal(scene.point_labels, pred["pred_labels"])
    np.testing.assert_array_equal(scene.palette, space.colors)  # the dataset's colours, as tools/infer.py renders
    # test-time augmentation: the same views as --tta, the same labels
    assert infer.main([str(ckpt), str(sequence), "--out", str(tmp_path / "tta"), "--device", "cpu", "--tta", "flips",
                       "--tta-scales", "0.95", "1"]) == 0
    augmented = Predictor(ckpt, tta="flips", tta_scales=(0.95, 1))(points)["pred_labels"]
    mine = space.write(f"00/{scan.stem}", augmented, tmp_path / "mine_tta")
    assert mine.read_bytes() == (tmp_path / "tta" / theirs.relative_to(tmp_path / "infer")).read_bytes()
    assert not np.array_equal(augmented, pred["pred_labels"])  # the views changed something


def test_a_bf16_run_infers_in_bf16_unless_asked_otherwise(data, runs, tmp_path, monkeypatch):
    """A run trained in bf16 runs its forward under bf16 autocast in tools/infer.py and the Predictor (as
    tools/test.py evaluates it; PC3D_BF16=force: bf16 on any CPU), the same labels from both; precision="fp32"
    turns autocast off."""
    import torch

    monkeypatch.setenv("PC3D_BF16", "force")
    ckpt = experiment_checkpoint(runs, "sim_semantickitti_seg", f"dataset.root={data / 'semantickitti'}",
                                 "train.precision=bf16")
    sequence = data / "semantickitti" / "sequences" / "00"
    scan = sorted((sequence / "velodyne").glob("*.bin"))[0]
    assert infer.main([str(ckpt), str(sequence), "--out", str(tmp_path / "infer"), "--device", "cpu"]) == 0
    seen = []
    for precision, autocast in (("run", True), ("fp32", False), ("bf16", True)):
        predictor = Predictor(ckpt, precision=precision)
        assert predictor.precision == ("bf16" if autocast else "fp32")
        hook = predictor.model.register_forward_pre_hook(lambda *_: seen.append(torch.is_autocast_enabled("cpu")))
        labels = predictor(read_scan(scan))["pred_labels"]
        hook.remove()
        assert seen.pop() is autocast
        if precision == "run":
            mine = label_space(dict(predictor.config.dataset), 20).write(f"00/{scan.stem}", labels, tmp_path / "mine")
            theirs = tmp_path / "infer" / "labels" / "sequences" / "00" / "predictions" / f"{scan.stem}.label"
            assert mine.read_bytes() == theirs.read_bytes()
    with pytest.raises(ConfigError, match="precision must be 'run'"):
        Predictor(ckpt, precision="half")


def test_bad_clouds_are_clear_errors_and_nan_rows_drop_on_request(data, ckpts, tmp_path):
    predictor = Predictor(ckpts["semantickitti"])
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
    np.save(tmp_path / "bad.npy", bad)
    with pytest.raises(DataFormatError, match=r"bad.npy: 2 of \d+ rows have NaN / inf values; drop_nonfinite"):
        predictor(tmp_path / "bad.npy")
    np.testing.assert_array_equal(predictor(tmp_path / "bad.npy", drop_nonfinite=True)["kept"], pred["kept"])
    for given in (bad, tmp_path / "bad.npy"):  # the scene draws the finite rows, one label each
        scene = predictor.scene(given, pred)
        np.testing.assert_array_equal(scene.points, points[pred["kept"]])
        assert len(scene.point_labels) == len(scene.points)
    with pytest.raises(DataFormatError, match=r"4 of 4 rows .*row 0\)$"):
        predictor(np.full((4, 4), np.nan, np.float32), drop_nonfinite=True)
    with pytest.raises(ConfigError, match="points2 is for scene-flow models"):
        predictor(points, points)


def test_scene_flow_takes_a_pair(runs):
    flow = Predictor(experiment_checkpoint(runs, "sctn_sim"))
    rng = np.random.default_rng(0)
    first = rng.uniform(-10, 10, (512, 3)).astype(np.float32)
    pred = flow(first, first + np.float32([0.5, 0.0, 0.0]))
    assert pred["flow"].shape == (512, 3) and np.isfinite(pred["flow"]).all()
    with pytest.raises(ConfigError, match="two clouds"):
        flow(first)
    with pytest.raises(ConfigError, match="pose is for models of past scans"):
        flow(first, first, pose=np.eye(4))

