"""tools/test.py's submission files hold one prediction per point of every raw scan / mesh vertex, and the
reported mIoU counts every labelled point (evaluation does not crop to the model's grid)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import experiment_checkpoint

from pc3d.data import SemanticKittiDataset
from pc3d.data.scannet import read_scene
from pc3d.engine import distributed
from pc3d.engine.runner import test as run_test
from pc3d.sim.api import simulate_dataset


@pytest.mark.slow
def test_semantickitti_labels_cover_every_point_of_each_scan(tmp_path):
    root = simulate_dataset("semantickitti", tmp_path / "data", frames=2, seed=0, columns=512, sequence_length=2)
    ckpt = experiment_checkpoint(tmp_path / "runs", "sim_semantickitti_seg", f"dataset.root={root}",
                                 "dataset.sequences=[0]")
    info = distributed.init_distributed("cpu")
    metrics = run_test(ckpt, info=info, split="train", out_dir=tmp_path / "test", workers=0)
    dataset = SemanticKittiDataset(root, sequences=[0])
    predictions = tmp_path / "test" / "predictions" / "sequences" / "00" / "predictions"
    labelled = 0
    for i, (_, name) in enumerate(dataset.frames):
        scan = Path(root) / "sequences" / "00" / "velodyne" / f"{name}.bin"
        written = np.fromfile(predictions / f"{name}.label", "<u4")
        assert len(written) == scan.stat().st_size // 16  # the semantic-kitti-api rejects any other count
        sample = dataset.load(i)
        assert (np.abs(sample["points"][:, :2]).max(1) > 32).any()  # beyond the 32 m grid: nearest voxel's label
        labelled += int(np.sum(sample["point_labels"] != dataset.ignore_index))
    assert metrics["num_points"] == labelled  # mIoU over every labelled point of the raw scans


@pytest.mark.slow
def test_scannet_predictions_one_nyu40_id_per_vertex(tmp_path):
    root = simulate_dataset("scannet", tmp_path / "data", frames=5, seed=0)
    ckpt = experiment_checkpoint(tmp_path / "runs", "sim_scannet_seg", f"dataset.root={root}")
    info = distributed.init_distributed("cpu")
    run_test(ckpt, info=info, split="val", out_dir=tmp_path / "test", workers=0)
    scenes = (Path(root) / "scannetv2_val.txt").read_text().split()
    assert scenes
    for scene in scenes:
        ids = np.loadtxt(tmp_path / "test" / "predictions" / f"{scene}.txt", dtype=np.int64)
        assert len(ids) == len(read_scene(Path(root) / "scans" / scene))


def test_rows_dropped_for_nan_are_written_as_the_ignored_label(tmp_path):
    """An inference file's NaN rows get no prediction: in ScanNet's submission ids they are 0 (unannotated),
    not the NYU id of train class 0 (wall, 1); train classes 2 and 3 are NYU 3 and 4."""
    from types import SimpleNamespace

    from pc3d.infer.outputs import SegmentationOutput

    writer = SegmentationOutput(tmp_path, {"_target_": "pc3d.data.scannet.ScanNetDataset"},
                                SimpleNamespace(kind="scannet"), 20)
    frame = SimpleNamespace(points=np.zeros((2, 6), np.float32), extra={"kept": np.array([True, False, True])},
                            sequence=None, frame_id="scene0000_00", source="x")
    writer.write(frame, {"pred_labels": np.array([2, 3])})
    (written,) = sorted(tmp_path.rglob("*.txt"))
    assert np.loadtxt(written, dtype=int).tolist() == [3, 0, 4]
