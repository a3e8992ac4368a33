"""The SemanticKITTI-MOS submission writer (9 static, 251 moving) and the dataset hook tools/test.py calls."""
from __future__ import annotations

import numpy as np
import pytest

from pc3d.data import SemanticKittiDataset
from pc3d.errors import DataFormatError
from pc3d.eval.mos_writer import mos_label_ids, write_mos_predictions


def test_label_ids_and_layout(tmp_path):
    np.testing.assert_array_equal(mos_label_ids(np.array([0, 1, 1, 0], np.uint8)), [9, 251, 251, 9])
    assert mos_label_ids(np.array([True, False])).dtype == np.uint32
    out = write_mos_predictions([{"frame_id": "08/000003", "moving": np.array([1, 0, 0], np.uint8)},
                                 {"frame_id": "11/000000", "moving": np.zeros(0, np.int64)}], tmp_path)
    assert out == tmp_path / "sequences"
    written = np.fromfile(tmp_path / "sequences" / "08" / "predictions" / "000003.label", "<u4")
    assert written.tolist() == [251, 9, 9]
    assert (tmp_path / "sequences" / "11" / "predictions" / "000000.label").stat().st_size == 0


@pytest.mark.parametrize("pred, match", [
    ({"frame_id": "08/000001", "moving": np.array([0, 2])}, "0 or 1"),
    ({"frame_id": "08/000001", "moving": np.array([0.0, 1.0])}, "integers"),
    ({"frame_id": "000001", "moving": np.array([0, 1])}, "SS/NNNNNN"),
])
def test_bad_predictions_name_the_frame(tmp_path, pred, match):
    with pytest.raises(DataFormatError, match=match) as info:
        write_mos_predictions([pred], tmp_path)
    assert info.value.path == pred["frame_id"]


def test_mos_dataset_writes_the_benchmark_layout(tmp_path):
    from pc3d.sim.api import simulate_dataset

    root = simulate_dataset("semantickitti_mos", tmp_path / "data", frames=2, seed=0, columns=256, sequence_length=2)
    ds = SemanticKittiDataset(root, sequences=[0], mode="mos", n_past_scans=1, scan_period=0.1, past_voxel_size=0.1)
    # the ground truth as the prediction: written files must read back as the raw ids' moving flags
    preds = []
    for i in range(len(ds)):
        s = ds.load(i)
        preds.append({"frame_id": s["frame_id"], "moving": (s["point_labels"][:s["num_current_points"]] == 2)
                      .astype(np.uint8)})
    out = ds.write_predictions(preds, tmp_path / "pred")
    for seq, name in ds.frames:
        written = np.fromfile(out / seq / "predictions" / f"{name}.label", "<u4")
        raw = np.fromfile(root / "sequences" / seq / "labels" / f"{name}.label", "<u4") & 0xFFFF
        np.testing.assert_array_equal(written, np.where(raw >= 251, 251, 9))
    assert any((p["moving"] == 1).any() for p in preds)
    with pytest.raises(DataFormatError, match="predicted labels for a scan"):
        ds.write_predictions([{**preds[0], "moving": preds[0]["moving"][:-1]}, preds[1]], tmp_path / "bad")
    with pytest.raises(DataFormatError, match="needs 'moving'"):
        ds.write_predictions([{"frame_id": "00/000000", "pred_labels": preds[0]["moving"]}, preds[1]], tmp_path / "x")


def test_tools_test_writes_mos_submission_files(tmp_path):
    """tools/test.py (pc3d.engine.runner.test) on a mos model: metrics, and one 9 / 251 id per point of every raw
    scan in the benchmark's layout, through the dataset's write_predictions."""
    from conftest import experiment_checkpoint

    from pc3d.engine import distributed
    from pc3d.engine.runner import test as run_test
    from pc3d.sim.api import simulate_dataset

    root = simulate_dataset("semantickitti_mos", tmp_path / "data", frames=3, seed=0, columns=256, sequence_length=3)
    ckpt = experiment_checkpoint(tmp_path / "runs", "mos_sim", f"dataset.root={root}", "dataset.sequences=[0]")
    metrics = run_test(ckpt, info=distributed.init_distributed("cpu"), split="train", out_dir=tmp_path / "test",
                       workers=0)
    assert 0 <= metrics["moving_IoU"] <= 100 and metrics["num_moving"] > 0
    folder = tmp_path / "test" / "predictions" / "sequences" / "00" / "predictions"
    for scan in sorted((root / "sequences" / "00" / "velodyne").glob("*.bin")):
        written = np.fromfile(folder / f"{scan.stem}.label", "<u4")
        assert len(written) == scan.stat().st_size // 16 and set(written.tolist()) <= {9, 251}
