"""Slow end-to-end: a tiny CenterPoint-pillar trained on a few simulated KITTI frames beats its untrained self."""
from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch

from pc3d.eval.hooks import KittiEvaluator
from pc3d.models.bev import BaseBEVBackbone, PointPillarScatter
from pc3d.models.detectors import CenterPoint
from pc3d.models.heads.center_head import CenterHead
from pc3d.models.postprocess import PostProcessor
from pc3d.models.vfe import PillarVFE

RANGE = [0.0, -20.0, -3.0, 40.0, 20.0, 1.0]
PILLAR = [0.2, 0.2, 4.0]


@pytest.mark.slow
def test_tiny_detector_learns_cars(tmp_path):
    from pc3d.data import KittiDataset
    from pc3d.data.transforms import RangeCrop
    from pc3d.sim.api import simulate_dataset
    from pc3d.voxel import HardVoxelizer

    root = simulate_dataset("kitti", tmp_path / "sim_kitti", frames=8, seed=3)
    ds = KittiDataset(root, "trainval", ["Car", "Pedestrian", "Cyclist"], transforms=[RangeCrop(RANGE)],
                      voxelizer=HardVoxelizer(PILLAR, RANGE, 16, 12000), seed=0, training=False)
    samples = [ds[i] for i in range(len(ds))]
    torch.manual_seed(0)
    model = CenterPoint(
        PillarVFE(4, PILLAR, RANGE, (32,), norm_momentum=0.1), None, PointPillarScatter,
        partial(BaseBEVBackbone, layer_nums=(1, 2), layer_strides=(2, 2), num_filters=(32, 64), upsample_strides=(1, 2),
                num_upsample_filters=(32, 32), norm_momentum=0.1),
        partial(CenterHead, class_names=ds.class_names, tasks=[["Car"], ["Pedestrian", "Cyclist"]], voxel_size=PILLAR,
                point_cloud_range=RANGE, out_stride=2, shared_channels=32, head_channels=32, score_threshold=0.05),
        PostProcessor(score_threshold=0.05, iou_threshold=0.1, post_max_size=50), PILLAR, RANGE)
    evaluator = KittiEvaluator(classes=["Car"], overlap_sets=("loose",))

    def car_ap() -> float:
        model.eval()
        with torch.no_grad():
            preds = [model(ds.collate_fn([s]))[0] for s in samples]
        flat = evaluator(ds, preds)
        return max(flat.get("Car_bev/moderate_R40", 0.0), 0.0)

    before = car_ap()
    opt = torch.optim.AdamW(model.parameters(), 3e-3, weight_decay=0.01)
    rng = np.random.default_rng(0)
    losses = []
    model.train()
    for _ in range(60):  # Car BEV AP R40 0 -> 75.6 here (69.3 at 40 steps, 77.5 at 120); loss x0.22
        batch = ds.collate_fn([samples[i] for i in rng.choice(len(samples), 2, replace=False)])
        out = model(batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(float(out["loss"]))
    after = car_ap()
    assert np.mean(losses[-20:]) < 0.5 * np.mean(losses[:10])
    assert after > before + 40, (before, after)
