"""Voxel R-CNN's second stage against brute-force and hand-computed references: the voxel query, grid points,
pooling, RoI draws and targets, the corner loss, the released parameter count, and a tiny detector's loss and
predictions."""
from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch import nn

from pc3d.geometry import ResidualCoder
from pc3d.models.backbones3d.voxel_backbone import VoxelBackBone8x
from pc3d.models.bev import BaseBEVBackbone, HeightCompression
from pc3d.models.contract import check_prediction
from pc3d.models.detectors import VoxelRCNN
from pc3d.models.heads.anchor_head import AnchorHead
from pc3d.models.heads.losses import corner_loss
from pc3d.models.postprocess import PostProcessor
from pc3d.models.roi_heads import VoxelRCNNHead
from pc3d.models.roi_heads.grid_pool import NeighborVoxelPool, roi_grid_points
from pc3d.models.roi_heads.roi_targets import RoISampler, canonical_targets
from pc3d.models.vfe import MeanVFE
from pc3d.sparse import SparseTensor
from pc3d.sparse.voxel_query import point_cells, voxel_centers, voxel_query

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
VOXEL = [0.1, 0.1, 0.2]
RANGE = [0.0, -3.2, -2.0, 6.4, 3.2, 1.2]  # 64 x 64 x 16 cells


def random_sites(seed: int, stride: int = 2, n: int = 600, batch: int = 2) -> SparseTensor:
    rng = np.random.default_rng(seed)
    shape = (16 // stride, 64 // stride, 64 // stride)
    cells = rng.choice(batch * int(np.prod(shape)), n, replace=False)
    coords = np.stack([cells // int(np.prod(shape)), *np.unravel_index(cells % int(np.prod(shape)), shape)], 1)
    return SparseTensor(torch.randn(n, 5, generator=torch.Generator().manual_seed(seed)),
                        torch.from_numpy(coords).int(), shape, batch, stride=(stride,) * 3)


def brute_force_query(x, site_xyz, query, query_batch, query_range, radius, nsample):
    """OpenPCDet's loop, written plainly: the cell box scanned z, y, x; the first nsample sites within radius."""
    where = {tuple(c): i for i, c in enumerate(x.coords.tolist())}
    cells = point_cells(query, x.stride, VOXEL, RANGE)
    idx = np.full((len(query), nsample), -1)
    count = np.zeros(len(query), int)
    for q in range(len(query)):
        found = []
        rz, ry, rx = query_range
        for dz in range(-rz, rz + 1):
            for dy in range(-ry, ry + 1):
                for dx in range(-rx, rx + 1):
                    key = (int(query_batch[q]), int(cells[q, 0]) + dz, int(cells[q, 1]) + dy, int(cells[q, 2]) + dx)
                    row = where.get(key)
                    if row is not None and float(((site_xyz[row] - query[q]) ** 2).sum()) <= radius ** 2:
                        found.append(row)
        found = found[:nsample]
        count[q] = len(found)
        if found:
            idx[q] = found[0]
            idx[q, :len(found)] = found
    return idx, count


def test_voxel_centres_and_point_cells_follow_openpcdet():
    x = SparseTensor(torch.zeros(2, 1), torch.tensor([[0, 0, 0, 0], [1, 3, 5, 7]]).int(), (8, 32, 32), 2,
                     stride=(2, 2, 2))
    assert torch.allclose(voxel_centers(x, VOXEL, RANGE),
                          torch.tensor([[0.1, -3.1, -1.8], [7.5 * 0.2, -3.2 + 5.5 * 0.2, -2.0 + 3.5 * 0.4]]))
    cells = point_cells(torch.tensor([[0.25, -3.05, -1.7], [-0.05, 0.0, 0.0]]), (2, 2, 2), VOXEL, RANGE)
    # (z, y, x): floor at the voxel, then floor-divided by the stride. z of the second point: 2.0 m over float32's
    # 0.2 (0.200000003) is 9.99999985 exactly, cell 9 (as the release's `//`), where the rounded quotient reads 10
    assert cells.tolist() == [[0, 0, 1], [4, 16, -1]]


@pytest.mark.parametrize("query_range,radius,nsample", [((2, 2, 2), 0.45, 4), ((1, 3, 2), 0.6, 8), ((0, 1, 1), 9, 3)])
def test_voxel_query_equals_the_brute_force_scan(query_range, radius, nsample):
    x = random_sites(0, n=3000)
    site_xyz = voxel_centers(x, VOXEL, RANGE)
    rng = np.random.default_rng(1)
    query = torch.from_numpy(rng.uniform([-0.5, -3.6, -2.4], [6.9, 3.6, 1.6], (300, 3))).float()
    query_batch = torch.from_numpy(rng.integers(0, 2, 300))
    idx, count = voxel_query(x, site_xyz, query, query_batch, VOXEL, RANGE, query_range, radius, nsample)
    want_idx, want_count = brute_force_query(x, site_xyz, query, query_batch, query_range, radius, nsample)
    assert (count.numpy() == want_count).all()
    assert (idx.numpy() == want_idx).all()
    assert (want_count == nsample).sum() > 5 and (want_count == 0).sum() > 5  # both the cap and empty queries


def test_roi_grid_points_are_the_rotated_cell_centres():
    roi = torch.tensor([[10.0, 5.0, 1.0, 4.0, 2.0, 2.0, math.pi / 2]])
    points = roi_grid_points(roi, 2)
    # local (x, y, z) of index (i, j, k), z fastest: (-1, -0.5, -0.5), (-1, -0.5, 0.5), ...; turned by 90 degrees
    local = torch.tensor([[sx * 1.0, sy * 0.5, sz * 0.5] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])
    want = torch.stack([10.0 - local[:, 1], 5.0 + local[:, 0], 1.0 + local[:, 2]], 1)
    assert torch.allclose(points[0], want, atol=1e-6)


def test_pool_equals_a_per_query_reference():
    torch.manual_seed(0)
    x = random_sites(2, n=700)
    pool = NeighborVoxelPool(5, [[6, 4], [3, 2]], [[2, 2, 2], [1, 1, 1]], [0.5, 0.4], [8, 4]).eval()
    for m in pool.modules():  # non-trivial statistics
        if isinstance(m, nn.BatchNorm1d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    query = torch.tensor([[3.0, 0.0, -0.5], [1.0, 1.0, 0.0], [50.0, 0.0, 0.0]])
    batch = torch.tensor([0, 1, 0])
    out = pool(x, query, batch, VOXEL, RANGE)
    site_xyz = voxel_centers(x, VOXEL, RANGE)
    for k, (q_range, radius, nsample) in enumerate([((2, 2, 2), 0.5, 8), ((1, 1, 1), 0.4, 4)]):
        feats = pool.mlps_in[k](x.feats)
        idx, count = brute_force_query(x, site_xyz, query, batch, q_range, radius, nsample)
        cols = slice(0, 4) if k == 0 else slice(4, 6)
        for q in range(len(query)):
            rows = torch.from_numpy(idx[q]).clamp(min=0)
            f = feats[rows] if count[q] else torch.zeros(nsample, feats.shape[1])
            off = site_xyz[rows] - query[q] if count[q] else torch.zeros(nsample, 3)
            h = torch.relu(f + pool.mlps_pos[k](off)).amax(0)
            assert torch.allclose(out[q, cols], pool.mlps_out[k](h[None])[0], atol=1e-5), (k, q)


def test_roi_sampler_draws_by_iou_bucket():
    sampler = RoISampler(rois_per_frame=20, fg_ratio=0.5, hard_bg_ratio=0.8)
    iou = torch.tensor([0.9, 0.8, 0.6, 0.56] + [0.3] * 20 + [0.05] * 5)
    torch.manual_seed(0)
    pick = sampler.draw(iou)
    drawn = iou[pick]
    assert len(pick) == 20
    assert sorted(pick[:4].tolist()) == [0, 1, 2, 3]  # 4 foreground < the 10 allowed: all, once
    assert (drawn[4:] == 0.3).sum() == int(16 * 0.8) and (drawn[4:] == 0.05).sum() == 16 - int(16 * 0.8)
    short = torch.tensor([0.9] + [0.3] * 2 + [0.05] * 5)
    few_hard = short[sampler.draw(short)]  # few hard RoIs: easy ones fill the rest
    assert (few_hard == 0.3).sum() == 2 and (few_hard == 0.05).sum() == 17  # min(int(19 x 0.8), 2) hard
    only_fg = sampler.draw(torch.tensor([0.7, 0.9]))
    assert len(only_fg) == 20 and set(only_fg.tolist()) <= {0, 1}
    only_easy = sampler.draw(torch.tensor([0.0, 0.05]))
    assert len(only_easy) == 20
    assert torch.allclose(sampler.cls_targets(torch.tensor([0.1, 0.25, 0.5, 0.75, 0.8])),
                          torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0]))


def test_roi_sampler_matches_boxes_of_the_rois_class_only():
    sampler = RoISampler()
    box = torch.tensor([[5.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.0]])
    rois = torch.cat([box, box + torch.tensor([[0.5, 0, 0, 0, 0, 0, 0]])])
    iou, which = sampler.match(rois, torch.tensor([1, 2]), torch.cat([box, box + 20]), torch.tensor([1, 2]))
    assert iou[0] == pytest.approx(1.0, abs=1e-5) and iou[1] == 0.0 and which[0] == 0


def test_canonical_targets_in_the_rois_frame_and_heading_flip():
    roi = torch.tensor([[10.0, 0.0, 0.0, 4.0, 2.0, 1.5, math.pi / 2]] * 2)
    gt = torch.tensor([[10.0, 2.0, 0.5, 4.2, 1.9, 1.6, math.pi / 2 + 0.1],
                       [10.0, 2.0, 0.5, 4.2, 1.9, 1.6, 1.5 * math.pi + 0.1]])
    local = canonical_targets(roi, gt)
    assert torch.allclose(local[:, :6], torch.tensor([[2.0, 0.0, 0.5, 4.2, 1.9, 1.6]] * 2), atol=1e-5)
    assert torch.allclose(local[:, 6], torch.tensor([0.1, 0.1]), atol=1e-5)  # the second points backwards


def test_refined_box_decodes_back_to_its_target():
    head = tiny_head()
    rois = torch.tensor([[10.0, 3.0, -1.0, 3.9, 1.6, 1.5, 0.3], [20.0, -4.0, -0.8, 4.2, 1.7, 1.6, -2.0]])
    gt = torch.tensor([[10.4, 2.8, -0.9, 4.1, 1.7, 1.4, 0.5], [20.3, -4.2, -0.9, 4.0, 1.8, 1.5, -1.9]])
    anchors = rois.clone()
    anchors[:, [0, 1, 2, 6]] = 0
    residuals = ResidualCoder().encode(canonical_targets(rois, gt), anchors)
    assert torch.allclose(head.decode(residuals, rois), gt, atol=1e-5)


def test_corner_loss_by_hand():
    box = torch.tensor([[1.0, 2.0, 0.0, 4.0, 2.0, 1.5, 0.4]])
    assert corner_loss(box, box).item() == pytest.approx(0.0, abs=1e-6)
    turned = box.clone()
    turned[0, 6] += math.pi
    assert corner_loss(turned, box).item() == pytest.approx(0.0, abs=1e-5)  # a box and its twin are one box
    shifted = box.clone()
    shifted[0, 0] += 0.5
    assert corner_loss(shifted, box).item() == pytest.approx(0.5 * 0.5 ** 2, abs=1e-5)
    assert corner_loss(box + torch.tensor([[2.0, 0, 0, 0, 0, 0, 0]]), box).item() == pytest.approx(1.5, abs=1e-5)


def test_class_agnostic_nms_suppresses_across_classes():
    boxes = np.array([[0, 0, 0, 4, 2, 1.5, 0], [0.1, 0, 0, 4, 2, 1.5, 0]], np.float32)
    scores, labels = np.array([0.9, 0.8], np.float32), np.array([1, 2])
    assert len(PostProcessor(0.1, iou_threshold=0.1).frame(boxes, scores, labels)["boxes"]) == 2
    assert len(PostProcessor(0.1, iou_threshold=0.1, class_agnostic=True).frame(boxes, scores, labels)["boxes"]) == 1


def released_parameters() -> int:
    """OpenPCDet's voxel_rcnn_car.yaml counted from its module definitions (4 point columns, KITTI's grid + 1 z
    cell): conv weights + BatchNorm weight and bias."""
    sub = lambda cin, cout, k=27: cin * cout * k + 2 * cout  # noqa: E731  conv (no bias) + BN
    backbone = (sub(4, 16) + sub(16, 16) + sub(16, 32) + 2 * sub(32, 32) + sub(32, 64) + 2 * sub(64, 64)
                + sub(64, 64) + 2 * sub(64, 64) + sub(64, 128, 3))
    bev = (sub(256, 64, 9) + 5 * sub(64, 64, 9) + sub(64, 128, 1) + sub(64, 128, 9) + 5 * sub(128, 128, 9)
           + sub(128, 128, 4))
    anchor_head = (256 * 2 + 2) + (256 * 14 + 14) + (256 * 4 + 4)
    pools = sum(sub(c, 32, 1) + sub(3, 32, 1) + sub(32, 32, 1) for c in (32, 64, 64))
    fc = sub(216 * 96, 256, 1) + sub(256, 256, 1)
    branches = 2 * (sub(256, 256, 1) * 2) + (256 + 1) + (256 * 7 + 7)
    return backbone + bev + anchor_head + pools + fc + branches


def test_released_voxel_rcnn_has_the_released_parameter_count():
    with initialize_config_dir(str(CONFIGS), version_base=None):
        cfg = compose("config", overrides=["experiment=voxel_rcnn_kitti"])
    model = instantiate(cfg.model)
    assert sum(p.numel() for p in model.parameters()) == released_parameters()


def tiny_head(**kwargs) -> VoxelRCNNHead:
    sources = {name: {"mlps": [[8, 8]], "query_ranges": [[2, 2, 2]], "radii": [r], "nsamples": [8]}
               for name, r in (("x_conv2", 0.6), ("x_conv3", 1.2), ("x_conv4", 2.4))}
    return VoxelRCNNHead({"x_conv1": 8, "x_conv2": 8, "x_conv3": 16, "x_conv4": 16}, [0.1, 0.1, 0.2],
                         [0.0, -12.8, -3.0, 25.6, 12.8, 1.0], sources, grid_size=3, shared_fc=(32,), cls_fc=(16,),
                         reg_fc=(16,), **kwargs)


def tiny_detector() -> VoxelRCNN:
    voxel, prange = [0.1, 0.1, 0.2], [0.0, -12.8, -3.0, 25.6, 12.8, 1.0]
    head = partial(AnchorHead, num_classes=1, point_cloud_range=prange, anchor_sizes=[[3.9, 1.6, 1.56]],
                   anchor_bottom_heights=[-1.73], matched_thresholds=[0.6], unmatched_thresholds=[0.45])
    roi = partial(VoxelRCNNHead, grid_size=3, shared_fc=(32,), cls_fc=(16,), reg_fc=(16,),
                  sources={n: {"mlps": [[8, 8]], "query_ranges": [[2, 2, 2]], "radii": [r], "nsamples": [8]}
                           for n, r in (("x_conv2", 0.6), ("x_conv3", 1.2), ("x_conv4", 2.4))},
                  proposals_train={"post_max_size": 64}, proposals_test={"post_max_size": 20},
                  sampler={"rois_per_frame": 16})
    return VoxelRCNN(MeanVFE(4), partial(VoxelBackBone8x, out_channels=None, channels=(8, 8, 16, 16)),
                     HeightCompression, partial(BaseBEVBackbone, layer_nums=(1, 1), num_filters=(16, 32),
                                                num_upsample_filters=(16, 16)),
                     head, roi, PostProcessor(0.0, class_agnostic=True), voxel, prange, proposals=500)


@pytest.fixture(scope="module")
def sim_batch(tmp_path_factory):
    from pc3d.data import KittiDataset
    from pc3d.data.transforms import RangeCrop
    from pc3d.sim.api import simulate_dataset
    from pc3d.voxel import HardVoxelizer

    prange = [0.0, -12.8, -3.0, 25.6, 12.8, 1.0]
    root = simulate_dataset("kitti", tmp_path_factory.mktemp("vrcnn") / "kitti", frames=2, seed=4, columns=512)
    ds = KittiDataset(root, "trainval", ["Car"], transforms=[RangeCrop(prange)],
                      voxelizer=HardVoxelizer([0.1, 0.1, 0.2], prange, 5, 20000), seed=0, training=False)
    return ds.collate_fn([ds[0], ds[1]])


def test_both_stages_train_every_parameter_and_predict_by_the_contract(sim_batch):
    assert int(sim_batch["num_gt"].sum()) > 0
    torch.manual_seed(0)
    model = tiny_detector().train()
    out = model(sim_batch)
    assert {"loss", "loss_rpn", "loss_rcnn_cls", "loss_rcnn_reg", "loss_rcnn_corner"} <= set(out)
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    silent = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not silent, silent
    model.eval()
    with torch.no_grad():
        preds = model(sim_batch)
    assert len(preds) == 2
    for p in preds:
        check_prediction("detection", p)
        assert 0 < len(p["boxes"]) <= 20  # the test setting's RoIs, every one kept at threshold 0


def released_spiking_backbone_parameters() -> int:
    """E-3DSNN's VoxelBackBone8x_3dv_snn counted from its definition (4 point columns): stem of three SubM convs,
    conv1 one, conv2..4 a strided conv and two BasicBlocks of three convs, conv_out; each conv + BatchNorm."""
    sub = lambda cin, cout, k=27: cin * cout * k + 2 * cout  # noqa: E731
    stages = sum(sub(cin, cout) + 6 * sub(cout, cout) for cin, cout in ((16, 32), (32, 64), (64, 64)))
    return sub(4, 16) + 2 * sub(16, 16) + sub(16, 16) + stages + sub(64, 128, 3)


def test_spiking_voxel_rcnn_has_e3dsnns_parameter_count_and_stage_shapes():
    from pc3d.models.snn import MultiSpike

    with initialize_config_dir(str(CONFIGS), version_base=None):
        cfg = compose("config", overrides=["experiment=snn_voxel_rcnn_kitti"])
    model = instantiate(cfg.model)
    backbone = sum(p.numel() for p in model.backbone_3d.parameters())
    assert backbone == released_spiking_backbone_parameters() == 1_722_368  # the 1.72 M E-3DSNN reports
    ann_backbone = sum(p.numel() for p in VoxelBackBone8x(4, 128).parameters())
    assert sum(p.numel() for p in model.parameters()) == released_parameters() - ann_backbone + backbone
    # every dense layer of the BEV network, the pools' output layers and the RoI head's FC stacks reads spikes,
    # and the pools' neuron takes the place of the ReLU after features + offsets
    pools = [(pool.mlps_out, pool.acts) for pool in model.roi_head.pools.values()]
    assert all(isinstance(a, MultiSpike) for _, acts in pools for a in acts)
    for stack in (*model.backbone_2d.blocks, *model.backbone_2d.deblocks, *(m for outs, _ in pools for m in outs),
                  model.roi_head.shared_fc, model.roi_head.cls_fc, model.roi_head.reg_fc):
        layers = [m for m in stack if not isinstance(m, nn.Dropout)]
        for i, m in enumerate(layers):
            if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
                assert isinstance(layers[i - 1], MultiSpike), stack
    # conv4 pads z as released: KITTI's 40 z cells + 1 (z_padding) -> 21 -> 11 -> 6 -> 2
    shapes = []
    handle = model.backbone_3d.conv4.register_forward_hook(lambda m, i, o: shapes.append(o.spatial_shape))
    coords = torch.tensor([[0, 20, 800, 700], [0, 21, 801, 700], [0, 39, 801, 701]], dtype=torch.int32)
    model.eval()
    with torch.no_grad():
        out = model.backbone_3d(SparseTensor(torch.rand(3, 4), coords, (40, 1600, 1408), 1))
    handle.remove()
    assert shapes == [(6, 200, 176)] and out.spatial_shape == (2, 200, 176)
    assert torch.equal(out.feats, out.feats.round()) and out.feats.min() >= 0 and out.feats.max() <= 4  # spikes


def test_a_frame_without_proposals_or_boxes_leaves_the_others_their_own_sites(sim_batch, monkeypatch):
    import pc3d.models.roi_heads.grid_pool as grid_pool

    seen = []

    def spy(x, site_xyz, query_xyz, query_batch, *args):
        seen.append(query_batch.unique().tolist())
        return voxel_query(x, site_xyz, query_xyz, query_batch, *args)

    monkeypatch.setattr(grid_pool, "voxel_query", spy)
    torch.manual_seed(0)
    model = tiny_detector().train()
    last, stages = model.backbone_3d.forward_features(model.vfe(sim_batch))
    candidates = model.dense_head.candidates(model.dense_head(model.backbone_2d(model.map_to_bev(last))), 500)
    empty = (candidates[0][0][:0], candidates[0][1][:0], candidates[0][2][:0])
    out = model.roi_head.loss(stages, [empty, candidates[1]], sim_batch)  # frame 0: no proposal
    assert torch.isfinite(out["loss"]) and seen and all(s == [1] for s in seen), seen
    no_boxes = dict(sim_batch, num_gt=torch.zeros_like(sim_batch["num_gt"]))
    out = model.roi_head.loss(stages, candidates, no_boxes)  # no ground truth: every RoI background
    assert torch.isfinite(out["loss"]) and out["rcnn_fg"] == 0 and out["loss_rcnn_corner"] == 0
    nan = (candidates[1][0].clone(), candidates[1][1], candidates[1][2])
    nan[0][0, 0] = float("nan")
    assert len(model.roi_head.proposals([nan])[0][0]) > 0  # a diverging box is left out, not an error
