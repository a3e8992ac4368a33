"""Scene flow around the model: consecutive-scan pairs with the ego motion as ground truth
(pc3d.data.sequence_flow), the streaming pairs of tools/infer.py (pc3d.infer.flow_pairs), the flow output
file and its arrows (pc3d.viz), evaluation on another dataset config (tools/test.py eval_dataset)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_mos_data import TR, rigid, write_sequence

from pc3d.data import SequenceFlowDataset
from pc3d.data.batch import check_sample
from pc3d.data.sequence_flow import scene_flow_crop
from pc3d.errors import DataFormatError
from pc3d.eval.sceneflow import scene_flow_metrics
from pc3d.infer.flow_pairs import FlowPairs
from pc3d.infer.outputs import FlowOutput
from pc3d.infer.sources import SourceFrame
from pc3d.viz import render_bev
from pc3d.viz.colors import flow_colors
from pc3d.viz.scene import flow_arrows


def pair_sequence(root: Path) -> np.ndarray:
    """Three scans; between scans the LiDAR turns 90 degrees left and moves (2, 1, 0). Scan 0: a static point
    (5, 1, 0), a moving car point (6, -1, 0), a road point (4, 0, -1.7) and one behind the sensor."""
    motion = rigid(np.pi / 2, (2.0, 1.0, 0.0))
    p0 = rigid(0.3, (1.0, 2.0, 3.0))
    poses = [p0 @ TR @ np.linalg.matrix_power(motion, i) @ np.linalg.inv(TR) for i in range(3)]
    scan0 = np.array([[5.0, 1, 0, 0.5], [6.0, -1, 0, 0.5], [4.0, 0, -1.7, 0.1], [-3.0, 0, 0, 0.2]])
    scan1 = np.array([[3.0, 0.5, 0, 0.5], [7.0, 0, 0.2, 0.3]])
    write_sequence(root, [scan0, scan1, scan1], [np.array([50, 252, 40, 50]), np.array([50, 50])] * 1 +
                   [np.array([50, 50])], poses)
    return motion


def test_static_points_move_with_the_ego_motion(tmp_path):
    motion = pair_sequence(tmp_path)
    ds = SequenceFlowDataset(tmp_path, sequences=[0], num_points=None)
    assert len(ds) == 2 and ds.frame_id(0) == "00/000000"  # the last scan has no pair
    s = ds[0]
    check_sample(s)
    # kept: the static and the moving point (the road is ground, the last one lies behind: outside the view)
    np.testing.assert_allclose(s["points"], [[5, 1, 0], [6, -1, 0]])
    expected = (np.linalg.inv(motion) @ [5, 1, 0, 1])[:3] - [5, 1, 0]  # R^T (p - t) - p
    np.testing.assert_allclose(s["flow"][0], expected, atol=1e-5)
    np.testing.assert_allclose(expected, [-5.0, -4.0, 0.0], atol=1e-12)  # (0, -3, 0) - (5, 1, 0)
    assert s["flow_mask"].tolist() == [True, False]  # the moving car's flow is unknown: unscored
    assert len(s["points2"]) == 2


def test_sampling_and_bad_pairs(tmp_path):
    pair_sequence(tmp_path)
    s = SequenceFlowDataset(tmp_path, sequences=[0], num_points=16, seed=0)[0]
    assert s["points"].shape == (16, 3) and s["points2"].shape == (16, 3)
    folder = tmp_path / "sequences" / "00"
    (folder / "poses.txt").write_text((folder / "poses.txt").read_text().splitlines()[0] + "\n")
    with pytest.raises(DataFormatError, match="poses.txt"):
        SequenceFlowDataset(tmp_path, sequences=[0], num_points=None)[0]


def test_a_pair_with_nothing_left_names_the_scan(tmp_path):
    motion = rigid(0.0, (1.0, 0, 0))
    poses = [TR @ np.linalg.matrix_power(motion, i) @ np.linalg.inv(TR) for i in range(2)]
    write_sequence(tmp_path, [np.array([[-5.0, 0, 0, 0]]), np.array([[5.0, 0, 0, 0]])],
                   [np.array([50]), np.array([50])], poses)
    with pytest.raises(DataFormatError, match="000000.bin.*no point left"):
        SequenceFlowDataset(tmp_path, sequences=[0], num_points=None)[0]


def test_crop():
    pts = np.array([[10.0, 0, 0], [10, 11, 0], [40, 0, 0], [10, 0, -2], [-1, 0, 0]])
    assert scene_flow_crop(pts).tolist() == [True, False, False, False, False]
    assert scene_flow_crop(pts, fov=360, min_z=None).tolist() == [True, True, False, True, True]
    # all around, max_depth bounds the range: 80 m behind or 60 m to the side is as far as 40 m ahead
    far = np.array([[-80.0, 0, 0], [0, 60, 0], [-20, -20, 0], [30, 30, 0]])
    assert scene_flow_crop(far, fov=360, min_z=None).tolist() == [False, False, True, False]
    assert scene_flow_crop(far, fov=180, min_z=None).tolist() == [False, True, False, True]  # depth along x


def frame(name: str, points: np.ndarray, sequence: str = "00", **extra) -> SourceFrame:
    return SourceFrame(f"{sequence}/{name}", sequence, points.astype(np.float32), Path(f"{name}.bin"), extra=extra)


def test_flow_pairs_stream_consecutive_frames():
    rng = np.random.default_rng(0)
    clouds = [np.column_stack([rng.uniform(1, 30, 50), rng.uniform(-5, 5, 50), rng.uniform(-1, 1, 50),
                               np.zeros(50)]) for _ in range(3)]
    pairs = FlowPairs(num_points=20)
    assert pairs(frame("000000", clouds[0])) is None  # the first frame waits for the next
    sample = pairs(frame("000001", clouds[1]))
    first = sample.pop("source_frame")
    assert sample["frame_id"] == first.frame_id == "00/000000"
    rows = first.extra["rows"]
    assert len(rows) == 20 and len(set(rows.tolist())) == 20
    np.testing.assert_array_equal(sample["points"], clouds[0][rows, :3].astype(np.float32))
    assert sample["points2"].shape == (20, 3)
    pairs.start_sequence("01")  # a new sequence: no pair across it
    assert pairs(frame("000000", clouds[2], "01")) is None
    everything = FlowPairs(num_points=None, fov=360, min_z=None)
    everything(frame("000000", clouds[0]))
    assert len(everything(frame("000001", clouds[1]))["points"]) == 50


def test_flow_output_covers_every_row_of_the_file(tmp_path):
    pts = np.arange(12, dtype=np.float32).reshape(4, 3)
    kept = np.array([True, True, False, True, True])  # row 2 of the file had a NaN
    f = frame("000000", pts, kept=kept, rows=np.array([3, 0]))
    out = FlowOutput(tmp_path, {}, None, 0)
    scene = out.write(f, {"frame_id": f.frame_id, "flow": np.array([[1, 1, 1], [2, 2, 2]], np.float32)})
    written = np.load(tmp_path / "flow" / "00" / "000000.npy")
    assert written.shape == (5, 3)
    np.testing.assert_array_equal(written[0], [2, 2, 2])
    np.testing.assert_array_equal(written[4], [1, 1, 1])
    assert np.isnan(written[[1, 2, 3]]).all()
    assert scene.flow.shape == (4, 3)


def test_flow_colours_and_arrows():
    flow = np.array([[1.0, 0, 0], [0, 1, 0], [0, 0, 0], [np.nan, 0, 0]])
    c = flow_colors(flow, max_norm=1.0)
    assert c.shape == (4, 3) and (c >= 0).all() and (c <= 1).all()
    assert c[0, 0] > c[0, 1] and c[0, 0] > c[0, 2]  # +x is red
    np.testing.assert_allclose(c[2], [0.95, 0.95, 0.95])  # still: white-grey
    np.testing.assert_allclose(c[3], [0.35, 0.35, 0.35])  # unknown: grey
    pts = np.zeros((4, 3))
    verts, lines, rows = flow_arrows(pts, flow)
    assert rows.tolist() == [0, 1, 2] and lines.shape == (9, 2) and verts.shape == (12, 3)
    np.testing.assert_allclose(verts[1], [1, 0, 0])  # the shaft ends where the point goes
    head = verts[2] - verts[1]  # a head stroke points back, turned 25 degrees
    np.testing.assert_allclose(np.linalg.norm(head), 0.3)
    np.testing.assert_allclose(np.degrees(np.arccos(-head[0] / 0.3)), 25.0)
    image = render_bev(np.array([[5.0, 0, 0]]), area=(0, -5, -3, 10, 5, 1), resolution=0.1,
                       flow=np.array([[3.0, 0, 0]]))
    row, col = 100 - 1 - 65, 50  # a pixel on the arrow's shaft (x = 6.5 m, y = 0)
    assert image[row, col].max() > 100


def test_sequence_pairs_score_zero_for_the_true_ego_motion(tmp_path):
    """The metric on the dataset's own ground truth is perfect; a zero flow scores the ego motion's size."""
    pair_sequence(tmp_path)
    s = SequenceFlowDataset(tmp_path, sequences=[0], num_points=None)[0]
    assert scene_flow_metrics(s["flow"], s["flow"], s["flow_mask"])["EPE3D"] == 0.0
    np.testing.assert_allclose(scene_flow_metrics(0 * s["flow"], s["flow"], s["flow_mask"])["EPE3D"],
                               np.sqrt(41.0), rtol=1e-5)


def test_baselines_on_a_hand_case():
    """Zero flow scores the motion's size; the nearest neighbour finds a small shift of a sparse cloud."""
    import torch

    from pc3d.data.batch import Collate
    from pc3d.models.contract import check_prediction
    from pc3d.models.flow.baselines import NearestNeighbourFlow, ZeroFlow

    p1 = np.array([[0.0, 0, 0], [5, 0, 0], [0, 5, 0]], np.float32)
    shift = np.array([0.1, 0.2, 0.0], np.float32)
    sample = {"frame_id": "a", "points": p1, "points2": p1 + shift, "flow": np.tile(shift, (3, 1)),
              "flow_mask": np.array([True, True, False])}
    batch = Collate()([sample])
    with torch.no_grad():
        nn_pred = NearestNeighbourFlow().eval()(batch)[0]
        zero = ZeroFlow().eval()(batch)[0]
    check_prediction("flow", nn_pred, num_points=3)
    np.testing.assert_allclose(nn_pred["flow"], sample["flow"], atol=1e-6)
    assert np.abs(zero["flow"]).max() == 0 and zero["flow_mask"].tolist() == [True, True, False]
    with pytest.raises(RuntimeError, match="no weights"):
        ZeroFlow().train()(batch)


TINY_SCTN = ("model.backbone.channels=[8,8,16,16]", "model.backbone.dec_channels=[16,8,8]",
             "model.backbone.stem_kernel=3", "model.refine_widths=[8,8,8]", "model.interp_k=4", "model.refine_k=8",
             "model.fsc_k=4", "model.pos_hidden=8", "model.ot_chunk=64")


def test_a_flow_model_streams_a_sequence_and_scores_on_another_dataset(tmp_path, capsys):
    """tools/infer.py pairs consecutive scans (one flow file per scan but the last, NaN outside the crop) and
    renders arrows; tools/test.py eval_dataset= scores the same run on consecutive-scan pairs."""
    import sys

    from conftest import experiment_checkpoint

    from pc3d.engine import distributed, runner
    from pc3d.sim.api import simulate_dataset

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    import infer
    from _common import dataset_config

    data = simulate_dataset("semantickitti", tmp_path / "seq", frames=3, seed=0, columns=256, sequence_length=3)
    ckpt = experiment_checkpoint(tmp_path / "runs", "sctn_sim", *TINY_SCTN)
    out = tmp_path / "infer"
    sequence = data / "sequences" / "00"
    assert infer.main([str(ckpt), str(sequence), "--out", str(out), "--device", "cpu", "--flow-points", "128",
                       "--render", "--render-mode", "bev"]) == 0
    printed = capsys.readouterr().out
    scans = sorted((sequence / "velodyne").glob("*.bin"))
    written = sorted((out / "flow" / "00").glob("*.npy"))
    assert [p.stem for p in written] == [s.stem for s in scans[:-1]]  # the last scan has no next one
    flow = np.load(written[0])
    assert flow.shape == (scans[0].stat().st_size // 16, 3)
    seen = np.isfinite(flow).all(1)
    assert 0 < seen.sum() <= 128  # the sampled rows of the crop; every other row NaN
    assert (out / "render" / "00" / "000000.png").is_file()
    from pc3d.infer.results import InferResults
    from pc3d.infer.sources import open_source

    source = open_source(str(sequence), ("intensity",))
    scenes = [InferResults(out).scene(source.read(item)) for item in source.items]  # what tools/visualize.py draws
    np.testing.assert_array_equal(scenes[0].flow, flow)
    assert scenes[-1].flow is None  # the last scan has no flow file
    for stage in ("feature_net", "transformer", "transport", "refine", "total"):
        assert f"| {stage} |" in printed
    assert infer.main([str(ckpt), str(sequence), "--out", str(tmp_path / "tta"), "--device", "cpu", "--flow-points",
                       "128", "--tta", "mirror"]) == 0  # test-time augmentation: the same rows, their mean flow
    assert "| feature_net |" in capsys.readouterr().out
    augmented = np.load(tmp_path / "tta" / "flow" / "00" / written[0].name)
    assert np.array_equal(np.isfinite(augmented).all(1), seen) and not np.array_equal(augmented[seen], flow[seen])
    dataset = dataset_config("sim_sequence_flow")
    dataset.update(root=str(data), sequences=[0], num_points=128)
    metrics = runner.test(ckpt, info=distributed.DistInfo(), split="valid", out_dir=tmp_path / "test",
                          dataset=dataset, batch_size=1, workers=0)
    assert set(metrics) >= {"EPE3D", "AccS", "AccR", "Outliers"} and np.isfinite(metrics["EPE3D"])


def test_a_missing_occlusion_mask_names_the_file(tmp_path):
    """Masks are all or nothing: a pair without mask.npy beside pairs with one is an error, not 'all visible'."""
    from pc3d.data import SceneFlowDataset
    from pc3d.sim.api import simulate_dataset

    root = simulate_dataset("sceneflow_kitti", tmp_path, frames=2, seed=0, columns=256, sequence_length=2)
    folder = root / "KITTI_processed_occ_final"
    np.save(folder / "000001" / "mask.npy", np.ones(len(np.load(folder / "000001" / "pc1.npy")), bool))
    ds = SceneFlowDataset(root, "kitti", num_points=None)
    assert ds[1]["flow_mask"].all()
    with pytest.raises(DataFormatError, match="000000/mask.npy: missing, but 000001/mask.npy exists"):
        ds[0]


def test_no_pair_spans_a_skipped_scan(tmp_path, capsys):
    """Scan 2 of 0..3 is truncated: tools/infer.py skips it and pairs (0, 1) only; (1, 3) would be a flow over two
    scan intervals written as scan 1's."""
    import sys

    from conftest import experiment_checkpoint

    from pc3d.sim.api import simulate_dataset

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    import infer

    data = simulate_dataset("semantickitti", tmp_path / "seq", frames=4, seed=0, columns=256, sequence_length=4)
    sequence = data / "sequences" / "00"
    bad = sequence / "velodyne" / "000002.bin"
    bad.write_bytes(bad.read_bytes()[:-6])
    ckpt = experiment_checkpoint(tmp_path / "runs", "sctn_sim", *TINY_SCTN)
    assert infer.main([str(ckpt), str(sequence), "--out", str(tmp_path / "out"), "--device", "cpu",
                       "--flow-points", "128"]) == 0
    assert "skipping a bad frame" in capsys.readouterr().err
    assert sorted(p.stem for p in (tmp_path / "out" / "flow" / "00").glob("*.npy")) == ["000000"]
