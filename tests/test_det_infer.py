"""tools/infer.py and tools/visualize.py on a tiny untrained detector: sources, outputs and the latency table."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from pc3d.engine.checkpoint import FORMAT, VERSION, atomic_save

TOOLS = Path(__file__).resolve().parents[1] / "tools"
sys.path.insert(0, str(TOOLS))

import infer  # noqa: E402
import visualize  # noqa: E402

RANGE = [0.0, -12.8, -3.0, 25.6, 12.8, 1.0]
VOXEL = [0.2, 0.2, 4.0]
CONFIG = {
    "dataset": {
        "class_names": ["Car", "Pedestrian", "Cyclist"], "point_cloud_range": RANGE, "voxel_size": VOXEL,
        "fov_only": True,
        "transforms": [{"_target_": "pc3d.data.transforms.RangeCrop", "point_range": RANGE},
                       {"_target_": "pc3d.data.transforms.PointShuffle"}],
        "voxelizer": {"_target_": "pc3d.voxel.HardVoxelizer", "voxel_size": VOXEL, "point_range": RANGE,
                      "max_points_per_voxel": 8, "max_voxels": 4000},
    },
    "model": {
        "_target_": "pc3d.models.detectors.CenterPoint",
        "vfe": {"_target_": "pc3d.models.vfe.PillarVFE", "in_channels": 4, "voxel_size": VOXEL,
                "point_cloud_range": RANGE, "num_filters": [8]},
        "backbone_3d": None,
        "map_to_bev": {"_target_": "pc3d.models.bev.PointPillarScatter", "num_bev_features": 8},
        "backbone_2d": {"_target_": "pc3d.models.bev.BaseBEVBackbone", "in_channels": 8, "layer_nums": [1],
                        "layer_strides": [2], "num_filters": [8], "upsample_strides": [1],
                        "num_upsample_filters": [8]},
        "dense_head": {"_target_": "pc3d.models.heads.center_head.CenterHead", "in_channels": 8,
                       "class_names": ["Car", "Pedestrian", "Cyclist"], "tasks": [["Car", "Pedestrian", "Cyclist"]],
                       "voxel_size": VOXEL, "point_cloud_range": RANGE, "out_stride": 2, "shared_channels": 8,
                       "head_channels": 8, "score_threshold": 0.0},
        "post_process": {"_target_": "pc3d.models.postprocess.PostProcessor", "score_threshold": 0.0,
                         "post_max_size": 5},
    },
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = instantiate(CONFIG["model"], _convert_="all")
    path = tmp_path_factory.mktemp("run") / "checkpoints" / "step_00000001.pt"
    atomic_save({"format": FORMAT, "version": VERSION, "model": model.state_dict(), "config": CONFIG,
                 "progress": {"step": 1, "epoch": 0}}, path)
    return path


def cloud(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.c_[rng.uniform(0, 25, (3000, 2)) - [0, 12], rng.uniform(-1.7, 0.5, 3000),
                 rng.uniform(0, 1, 3000)].astype(np.float32)


def test_list_frames_and_read_points(tmp_path):
    cloud(0).tofile(tmp_path / "a.bin")
    np.save(tmp_path / "b.npy", cloud(1)[:, :3])
    frames = infer.list_frames(tmp_path)
    assert [f["frame_id"] for f in frames] == ["a", "b"]
    pts = infer.read_points(tmp_path / "b.npy", 5)
    assert pts.shape == (3000, 5) and (pts[:, 3:] == 0).all()
    seq = tmp_path / "seq" / "velodyne"
    seq.mkdir(parents=True)
    cloud(2).tofile(seq / "000000.bin")
    assert len(infer.list_frames(tmp_path / "seq")) == 1
    (tmp_path / "empty").mkdir()
    with pytest.raises(Exception, match="no point files"):
        infer.list_frames(tmp_path / "empty")


def test_infer_writes_predictions_and_latency(tmp_path, checkpoint, capsys):
    src = tmp_path / "clouds"
    src.mkdir()
    for i in range(3):
        cloud(i).tofile(src / f"{i:06d}.bin")
    out = tmp_path / "out"
    assert infer.main([str(checkpoint), str(src), "--out", str(out), "--render", "--render-mode", "bev",
                       "--render-threshold", "0"]) == 0
    text = capsys.readouterr().out
    for stage in ("voxelize", "vfe", "bev", "head", "post_process", "total"):
        assert f"| {stage} |" in text
    assert "frames/s" in text
    pred = json.loads((out / "json" / "000001.json").read_text())
    assert len(pred["boxes"]) == len(pred["scores"]) == 5 and len(pred["boxes"][0]) == 7
    assert (out / "kitti" / "000002.txt").is_file() and len(list((out / "render").glob("*.png"))) == 3
    assert visualize.main([str(src), "--pred", str(out / "json"), "--out", str(tmp_path / "vis"), "--mode", "bev",
                           "--threshold", "0"]) == 0
    assert sorted(p.name for p in (tmp_path / "vis").glob("*.png")) == ["000000.png", "000001.png", "000002.png"]


SEG_RANGE = [-4.0, -4.0, -0.5, 4.0, 4.0, 3.0]
SEG_CONFIG = {
    "dataset": {
        "_target_": "pc3d.data.ScanNetDataset", "point_cloud_range": SEG_RANGE,
        "transforms": [{"_target_": "pc3d.data.transforms.RangeCrop", "point_range": SEG_RANGE}],
        "voxelizer": {"_target_": "pc3d.voxel.DynamicVoxelizer", "voxel_size": [0.2, 0.2, 0.2],
                      "point_range": SEG_RANGE},
    },
    "model": {
        "_target_": "pc3d.models.segmentors.SparseSegmentor", "num_classes": 20, "ignore_index": -1,
        "backbone": {"_target_": "pc3d.models.backbones3d.unet.SparseUNet", "in_channels": 6,
                     "channels": [8, 8, 16], "enc_depths": [1, 1], "dec_channels": [16, 8], "dec_depths": [1, 1]},
    },
}


def test_infer_segments_every_point_of_a_scannet_bin(tmp_path, capsys):
    """A 6-column ScanNet .bin (colours 0..255): one nyu40 label per input point, ignored (0) outside the
    range, per-class counts and a class-coloured render."""
    torch.manual_seed(0)
    model = instantiate(SEG_CONFIG["model"], _convert_="all")
    ckpt = tmp_path / "seg.pt"
    atomic_save({"format": FORMAT, "version": VERSION, "model": model.state_dict(), "config": SEG_CONFIG,
                 "progress": {"step": 1, "epoch": 0}}, ckpt)
    rng = np.random.default_rng(0)
    points = np.c_[rng.uniform(-5, 5, (2000, 2)), rng.uniform(0, 2.5, 2000), rng.uniform(0, 255, (2000, 3))]
    points.astype(np.float32).tofile(tmp_path / "scene0000_00.bin")
    out = tmp_path / "out"
    assert infer.main([str(ckpt), str(tmp_path / "scene0000_00.bin"), "--out", str(out), "--render",
                       "--render-mode", "bev"]) == 0
    assert "| segment |" in capsys.readouterr().out
    labels = np.loadtxt(out / "labels" / "scene0000_00.txt", dtype=np.int64)
    inside = (np.abs(points[:, :2]) < 4).all(1)
    assert len(labels) == len(points) and (labels[~inside] == 0).all()
    assert set(labels[inside].tolist()) <= {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39}
    counts = json.loads((out / "json" / "scene0000_00.json").read_text())["points_per_class"]
    assert sum(counts.values()) == len(points) and counts["unlabelled"] == int((~inside).sum())
    assert (out / "render" / "scene0000_00.png").is_file()
