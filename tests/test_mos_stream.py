"""Streaming 4D MOS: the ring buffer of past scans (pc3d.infer.scan_window) gives the network the same 4D
input, bit for bit, as the dataset building the window from the files; sequences reset it; the stream loop
tells it when a sequence starts."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pc3d.data import SemanticKittiDataset
from pc3d.data.batch import Collate, sparse_input
from pc3d.errors import ConfigError, DataFormatError
from pc3d.infer.scan_window import ScanWindow, WindowedPrepare, scan_log_odds, window_of_dataset
from pc3d.infer.sources import SemanticKittiSequence
from pc3d.infer.stream import stream
from pc3d.voxel import TemporalVoxelizer

N_PAST = 3
CONFIG = {"n_past_scans": N_PAST, "scan_period": 0.1, "past_voxel_size": 0.1}


@pytest.fixture(scope="module")
def sequence(tmp_path_factory):
    from pc3d.sim.api import simulate_dataset

    root = simulate_dataset("semantickitti_mos", tmp_path_factory.mktemp("mos"), frames=6, seed=4, columns=256,
                            sequence_length=6)
    return root


def four_d_input(sample: dict):
    voxelizer = TemporalVoxelizer([0.1] * 3, [-60, -50, -3, 60, 50, 1], 0.1, [-(N_PAST + 0.5) * 0.1, 0.05], 4)
    batch = Collate(voxelizer)([sample])
    return batch["voxel_coords"], sparse_input(batch).features


def test_buffer_gives_the_dataset_window_bitwise(sequence, tmp_path):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(sequence, root)
    ds = SemanticKittiDataset(root, sequences=[0], mode="mos", **CONFIG)
    expected = [ds.load(i) for i in range(len(ds))]  # from scratch: every window read from the files
    source = SemanticKittiSequence(root / "sequences" / "00", ("intensity",))
    source.with_poses = True
    window = window_of_dataset(CONFIG)
    for item, reference in zip(source.items, expected, strict=True):
        sample = window(source.read(item))
        item.unlink()  # the buffer never reads a past scan's file again
        assert sample["points"].dtype == np.float32 and sample["points"].shape == reference["points"].shape
        assert np.array_equal(sample["points"], reference["points"])  # bitwise: same dtype, same bits
        for key in ("point_time", "point_frame"):
            assert np.array_equal(sample[key], reference[key]), key
        assert sample["num_current_points"] == reference["num_current_points"]
        coords, features = four_d_input(sample)
        ref_coords, ref_features = four_d_input(reference)
        assert torch.equal(coords, ref_coords) and torch.equal(features, ref_features)
    assert sample["point_frame"].max() == N_PAST and len(window.scans) == N_PAST


def test_window_resets_per_sequence_and_leaves_gaps():
    rng = np.random.default_rng(0)
    window = ScanWindow(2, 0.1, 0.1)
    scan = rng.normal(size=(50, 4)).astype(np.float32)
    for number in range(3):
        sample = window.window(scan, np.eye(4), number, f"00/{number:06d}")
    assert sample["point_frame"].max() == 2 and sample["point_time"].min() == np.float32(-0.2)
    sample = window.window(scan, np.eye(4), 5)  # scans 3 and 4 skipped: only scan 2 is 3 > 2 scans back
    assert sample["point_frame"].tolist() == [0] * 50
    sample = window.window(scan, np.eye(4), 6)
    assert set(sample["point_frame"].tolist()) == {0, 1} and sample["point_time"].min() == np.float32(-0.1)
    window.start_sequence("01")
    assert window.window(scan, np.eye(4), 7)["points"].shape == (50, 5)
    with pytest.raises(DataFormatError, match="4 x 4"):
        window.window(scan, np.eye(3), 8, "01/000008")
    with pytest.raises(ConfigError, match="scan_period"):
        window_of_dataset({"n_past_scans": 2, "scan_period": None})


class WindowModel(nn.Module):
    """A stand-in mos model: records the windows it gets and the sequences it is told about."""

    task = "mos"

    def __init__(self):
        super().__init__()
        self.frames, self.sequences = [], []

    def start_sequence(self, name):
        self.sequences.append(name)

    def forward(self, batch):
        n = int(batch["num_current_points"][0])
        self.frames.append(int(batch["point_frame"].max()))
        return [{"frame_id": batch["frame_id"][0], "moving": np.zeros(n, np.uint8)}]


class Written:
    def __init__(self):
        self.frames = []

    def write(self, frame, pred):
        assert len(pred["moving"]) == len(frame.points)  # one flag per point of the current scan
        self.frames.append(frame.frame_id)


def test_stream_tells_the_window_when_a_sequence_starts(sequence, tmp_path):
    import shutil

    for seq in ("00", "01"):  # two sequences of 6 scans
        shutil.copytree(sequence / "sequences" / "00", tmp_path / "sequences" / seq)
    window = window_of_dataset(CONFIG)
    prepare = WindowedPrepare(window)
    starts = []
    original = window.start_sequence
    window.start_sequence = lambda name=None: (starts.append(name), original(name))
    model, output = WindowModel(), Written()
    voxelizer = TemporalVoxelizer([0.1] * 3, [-60, -50, -3, 60, 50, 1], 0.1, [-0.35, 0.05], 4)
    for seq in ("00", "01"):
        source = SemanticKittiSequence(tmp_path / "sequences" / seq, ("intensity",))
        source.with_poses = True
        records, *_ = stream(model, source, prepare, Collate(voxelizer), output, torch.device("cpu"))
        assert all("prepare" in r and "read" in r for r in records)
    assert starts == ["00", "01"] and model.sequences == ["00", "01"]
    assert model.frames == [0, 1, 2, 3, 3, 3] * 2  # the window grows to 3 past scans, then slides
    assert len(output.frames) == 12


def test_a_source_without_poses_is_named(sequence, tmp_path):
    import shutil

    folder = tmp_path / "00"
    shutil.copytree(sequence / "sequences" / "00", folder)
    (folder / "poses.txt").unlink()
    source = SemanticKittiSequence(folder, ("intensity",))
    source.with_poses = True
    with pytest.raises(DataFormatError) as info:
        source.read(source.items[0])
    assert info.value.path == str(folder / "poses.txt")


def test_bayes_filter_hand_computed():
    from pc3d.eval.bayes_filter import BinaryBayesFilter, logit

    l0 = logit(0.25)  # log(1 / 3) = -1.0986
    f = BinaryBayesFilter(0.25)
    f.add(7, np.array([0.0, -2.0, 2.0, 5.0, -0.5]), np.array([True, True, True, False, True]))
    f.add(7, np.array([0.0, -0.5, -3.0, 5.0, 9.0]), np.array([True, True, False, False, False]))
    # filtered log-odds (4DMOS: first l, then l - l0 for each further window): 0 + 1.0986 > 0; -2 - 0.5 + 1.0986 < 0;
    # 2 > 0 (the second window did not see it); never seen (fallback); one window at p = 0.38 (l = -0.5) stays static
    np.testing.assert_allclose(f.beliefs[7][[0, 1, 2, 4]], [-2 * l0, -2.5 - 2 * l0, 2 - l0, -0.5 - l0])
    assert f.pop(7, fallback=np.array([0, 1, 0, 1, 1])).tolist() == [1, 0, 1, 1, 0]
    assert 7 not in f.beliefs
    with pytest.raises(ConfigError):
        BinaryBayesFilter(1.0)


def test_scan_log_odds_reach_every_raw_point():
    window = ScanWindow(1, 0.1, 0.1)
    first = np.array([[0.01, 0, 0, 1], [0.02, 0, 0, 1], [5, 5, 0, 1]], np.float32)  # two points share a voxel
    window.window(first, np.eye(4), 0)
    sample = window.window(np.array([[1, 1, 1, 1]], np.float32), np.eye(4), 1)
    assert sample["metadata"]["window_scans"] == [1, 0]
    log_odds = np.arange(len(sample["points"]), dtype=np.float32)  # current row 0, reduced rows 1, 2
    (cur, cur_lo, cur_seen), (past, past_lo, past_seen) = scan_log_odds(sample, log_odds)
    assert (cur, past) == (1, 0) and cur_lo.tolist() == [0.0] and cur_seen.all()
    assert past_lo[0] == past_lo[1] != past_lo[2] and sorted(set(past_lo.tolist())) == [1.0, 2.0]


def test_tools_infer_streams_a_mos_model(sequence, tmp_path, capsys):
    import sys
    from pathlib import Path

    from conftest import experiment_checkpoint

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    import infer

    ckpt = experiment_checkpoint(tmp_path / "runs", "mos_sim", f"dataset.root={sequence}")
    folder = sequence / "sequences" / "00"
    assert infer.main([str(ckpt), str(folder), "--out", str(tmp_path / "out"), "--device", "cpu",
                       "--max-frames", "4"]) == 0
    printed = capsys.readouterr().out
    assert "| prepare |" in printed and "per frame / model forward (p50)" in printed
    for scan in sorted((folder / "velodyne").glob("*.bin"))[:4]:
        written = np.fromfile(tmp_path / "out" / "labels" / "sequences" / "00" / "predictions" / f"{scan.stem}.label",
                              "<u4")
        assert len(written) == scan.stat().st_size // 16 and set(written.tolist()) <= {9, 251}
    from pc3d.infer.results import InferResults
    from pc3d.infer.sources import open_source

    source = open_source(str(folder), ("intensity",))
    scene = InferResults(tmp_path / "out").scene(source.read(source.items[0]))  # what tools/visualize.py draws
    first = np.fromfile(tmp_path / "out" / "labels" / "sequences" / "00" / "predictions" / "000000.label", "<u4")
    np.testing.assert_array_equal(scene.point_labels, np.where(first == 251, 2, 1))  # train ids static 1, moving 2
    assert scene.palette.shape == (3, 3)  # MosOutput's colours
    # a folder of point files has no poses: one line naming it, exit 2
    loose = tmp_path / "loose"
    loose.mkdir()
    (loose / "a.bin").write_bytes((folder / "velodyne" / "000000.bin").read_bytes())
    assert infer.main([str(ckpt), str(loose), "--out", str(tmp_path / "o2"), "--device", "cpu"]) == 2
    assert "has no poses" in capsys.readouterr().err


def test_predictor_streams_scans_with_poses_as_tools_infer_does(sequence, tmp_path):
    """pc3d.Predictor fed a sequence's scans in order with their LiDAR poses keeps the window between calls and
    flags the points as tools/infer.py's label files do; start_sequence() empties the window (the same flags
    again from scan 0); a call without a pose is refused."""
    import sys
    from pathlib import Path

    from conftest import experiment_checkpoint

    from pc3d.data.semantickitti import lidar_poses
    from pc3d.infer.predictor import Predictor

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    import infer

    ckpt = experiment_checkpoint(tmp_path / "runs", "mos_sim", f"dataset.root={sequence}")
    folder = sequence / "sequences" / "00"
    assert infer.main([str(ckpt), str(folder), "--out", str(tmp_path / "out"), "--device", "cpu"]) == 0
    predictor = Predictor(ckpt)
    poses = lidar_poses(folder / "poses.txt", folder / "calib.txt")
    scans = sorted((folder / "velodyne").glob("*.bin"))
    first_pass = []
    for scan, pose in zip(scans, poses, strict=True):
        moving = predictor(np.fromfile(scan, np.float32).reshape(-1, 4), pose=pose)["moving"]
        written = np.fromfile(tmp_path / "out" / "labels" / "sequences" / "00" / "predictions" / f"{scan.stem}.label",
                              "<u4")
        np.testing.assert_array_equal(moving, written == 251)
        first_pass.append(moving)
    scene = predictor.scene(scan, {"moving": moving})  # static 1 / moving 2 in the MOS colours
    np.testing.assert_array_equal(scene.point_labels, moving.astype(np.int64) + 1)
    assert scene.palette.shape == (3, 3)
    assert 0 < np.concatenate(first_pass).mean() < 1  # both flags occur: the comparison is not of constants
    predictor.start_sequence()
    for scan, pose, before in zip(scans[:2], poses, first_pass, strict=False):
        np.testing.assert_array_equal(predictor(np.fromfile(scan, np.float32).reshape(-1, 4), pose=pose)["moving"],
                                      before)
    with pytest.raises(ConfigError, match="needs each scan's pose"):
        predictor(np.fromfile(scans[0], np.float32).reshape(-1, 4))


def test_bayes_filtered_output_writes_each_scan_once_no_window_holds_it_any_more():
    """Windows of 3 scans (2 past): every window calls its current scan moving (log-odds 1) and its past scans
    static (-3). A scan is written when the window two frames later has passed, with the filtered log-odds; the
    end of the stream writes the open ones with the windows they had."""
    from pathlib import Path

    from pc3d.eval.bayes_filter import logit
    from pc3d.infer.mos_filter import FilteredMosOutput
    from pc3d.infer.sources import SourceFrame

    class Inner:
        def __init__(self):
            self.written = []

        def write(self, frame, pred):
            self.written.append((frame.frame_id, pred["moving"].tolist()))
            return frame.frame_id

        def close(self):
            return "inner"

    window, inner = ScanWindow(2, None, 0.1), Inner()
    out = FilteredMosOutput(inner, 2)
    scenes = []
    for k in range(4):
        points = np.array([[k, 0, 0, 1.0]], np.float32)
        frame = SourceFrame(f"00/{k:06d}", "00", points, Path(f"{k}.bin"), extra={"pose": np.eye(4), "scan": k})
        sample = WindowedPrepare(window)(frame)
        log_odds = np.where(sample["point_frame"] == 0, 1.0, -3.0)
        scenes.append(out.write(frame, {"moving": np.array([1], np.uint8), "log_odds": log_odds,
                                        "measured": np.ones(len(log_odds), bool)}))
    assert scenes == [None, None, "00/000000", "00/000001"]
    assert "inner" in out.close()
    l0 = logit(0.25)
    # filtered log-odds l0 + sum(l - l0): three windows and two windows static, one window (its current) moving
    assert l0 + (1 - l0) + 2 * (-3 - l0) < 0 and l0 + (1 - l0) + (-3 - l0) < 0 < l0 + (1 - l0)
    assert inner.written == [("00/000000", [0]), ("00/000001", [0]), ("00/000002", [0]), ("00/000003", [1])]


def test_tools_infer_bayes_filter_and_eval_mos(sequence, tmp_path, capsys):
    """Every stream (plain, Bayes-filtered, filtered over test-time augmented windows) writes a label file for
    every scan; tools/eval_mos.py scores them like the MOS api (and names a missing file); the unfiltered
    stream's IoU equals tools/test.py's on the same scans."""
    import sys
    from pathlib import Path

    from conftest import experiment_checkpoint

    from pc3d.engine import distributed, runner

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    import eval_mos
    import infer

    ckpt = experiment_checkpoint(tmp_path / "runs", "mos_sim", f"dataset.root={sequence}")
    folder = sequence / "sequences" / "00"
    scores = {}
    for name, extra in (("plain", []), ("filtered", ["--bayes-filter"]),
                        ("augmented", ["--bayes-filter", "--tta", "flips"])):
        assert infer.main([str(ckpt), str(folder), "--out", str(tmp_path / name), "--device", "cpu", *extra]) == 0
        capsys.readouterr()
        assert eval_mos.main([str(tmp_path / name / "labels"), str(sequence), "--sequences", "0"]) == 0
        scores[name] = capsys.readouterr().out
        assert "over 6 scans" in scores[name]
    metrics = runner.test(ckpt, info=distributed.DistInfo(), split="valid", out_dir=tmp_path / "test", batch_size=1,
                          workers=0, overrides={"dataset.sequences": [0]})
    assert f"moving IoU {metrics['moving_IoU']:.2f} " in scores["plain"]
    (tmp_path / "plain" / "labels" / "sequences" / "00" / "predictions" / "000003.label").unlink()
    assert eval_mos.main([str(tmp_path / "plain" / "labels"), str(sequence), "--sequences", "0"]) == 2
    assert "000003.label: missing" in capsys.readouterr().err
