"""Detection parts (VFEs, 3D backbones, BEV mapping and backbones) and the detectors: shapes and gradients."""
from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch

from pc3d.data.batch import Collate
from pc3d.errors import ConfigError
from pc3d.models.backbones3d.voxel_backbone import VoxelBackBone8x
from pc3d.models.backbones3d.voxel_res_backbone import VoxelResBackBone8x
from pc3d.models.bev import BaseBEVBackbone, HeightCompression, PointPillarScatter
from pc3d.models.detectors import SECOND, CenterPoint, PointPillars
from pc3d.models.heads.anchor_head import AnchorHead
from pc3d.models.heads.center_head import CenterHead
from pc3d.models.postprocess import PostProcessor
from pc3d.models.vfe import DynamicVFE, MeanVFE, PillarVFE
from pc3d.voxel import DynamicPillarVoxelizer, DynamicVoxelizer, HardVoxelizer, PillarVoxelizer

RANGE = [0.0, -6.4, -3.0, 12.8, 6.4, 1.0]
VOXEL = [0.1, 0.1, 0.2]
PILLAR = [0.2, 0.2, 4.0]
CLASSES = ["Car", "Pedestrian", "Cyclist"]


def samples(n: int = 2) -> list[dict]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        ground = np.c_[rng.uniform(0, 12.8, 3000), rng.uniform(-6.4, 6.4, 3000), np.full(3000, -1.7)]
        car = np.c_[rng.uniform(4, 8, 800), rng.uniform(-1, 1, 800), rng.uniform(-1.7, -0.2, 800)]
        pts = np.concatenate([ground, car]).astype(np.float32)
        pts = np.c_[pts, rng.uniform(0, 1, len(pts)).astype(np.float32)]
        boxes = np.array([[6.0, 0.0, -0.95, 4.0, 2.0, 1.5, 0.1 * i], [3.0, 4.0, -0.85, 0.8, 0.6, 1.7, 0.0]],
                         np.float32)
        out.append({"frame_id": f"{i:06d}", "points": pts, "gt_boxes": boxes, "gt_labels": np.array([1, 2]),
                    "seed": i})
    return out


def batch_with(voxelizer) -> dict:
    return Collate(voxelizer)(samples())


def test_mean_vfe():
    batch = batch_with(HardVoxelizer(VOXEL, RANGE, 5, 20000))
    x = MeanVFE(4)(batch)
    assert x.feats.shape == (len(batch["voxel_coords"]), 4) and x.spatial_shape == (20, 128, 128)
    voxels, counts = batch["voxels"].double().numpy(), batch["voxel_num_points"].numpy()
    assert (counts > 1).any()  # voxels holding several points: a mean, not a point
    means = np.stack([voxels[v, :n].mean(0) for v, n in enumerate(counts)])  # the filled slots of each voxel
    np.testing.assert_allclose(x.feats.double().numpy(), means, rtol=1e-6, atol=1e-6)


def _first_layer_input(vfe, batch) -> torch.Tensor:
    """What the VFE feeds its first PFN layer (the decorated point features)."""
    seen = []
    handle = vfe.pfn_layers[0].register_forward_pre_hook(lambda _, args: seen.append(args[0].detach()))
    vfe(batch)
    handle.remove()
    return seen[0].double()


def _decorations(xyz: np.ndarray, group: np.ndarray, size, lower) -> tuple[np.ndarray, np.ndarray]:
    """Per point: xyz minus the mean of its voxel's points, and xyz minus its voxel's centre, the voxel found
    from the point itself (float64)."""
    sums, n = np.zeros((group.max() + 1, 3)), np.bincount(group)
    np.add.at(sums, group, xyz)
    size, lower = np.asarray(size, np.float64), np.asarray(lower, np.float64)
    centre = (np.floor((xyz - lower) / size) + 0.5) * size + lower
    return xyz - (sums / n[:, None])[group], xyz - centre


def test_pillar_vfe_masks_padding_and_has_gradients():
    batch = batch_with(PillarVoxelizer(PILLAR[:2], RANGE, 16, 5000))
    vfe = PillarVFE(4, PILLAR, RANGE, num_filters=(32, 16))
    x = vfe(batch)
    assert x.feats.shape == (len(batch["voxel_coords"]), 16) and x.spatial_shape == (1, 64, 64)
    x.feats.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in vfe.parameters())
    # padded slots must not matter: adding garbage there leaves the output unchanged
    vfe.eval()
    ref = vfe(batch).feats
    dirty = dict(batch)
    pad = torch.arange(16)[None, :] >= batch["voxel_num_points"][:, None]
    dirty["voxels"] = torch.where(pad[..., None], torch.full_like(batch["voxels"], 50.0), batch["voxels"])
    assert torch.allclose(vfe(dirty).feats, ref)
    # the decorated input: the point's own columns, its offset from its pillar's mean and from the pillar's centre
    valid = ~pad
    x = _first_layer_input(vfe, batch).reshape(*pad.shape, -1)[valid].numpy()
    points = batch["voxels"][valid].double().numpy()
    group = torch.arange(len(pad))[:, None].expand_as(pad)[valid].numpy()
    to_mean, to_centre = _decorations(points[:, :3], group, PILLAR, RANGE[:3])
    np.testing.assert_allclose(x, np.c_[points, to_mean, to_centre], atol=1e-5)


@pytest.mark.parametrize("pillars", [False, True])
def test_dynamic_vfe(pillars):
    vox = DynamicPillarVoxelizer(PILLAR[:2], RANGE) if pillars else DynamicVoxelizer(VOXEL, RANGE)
    batch = batch_with(vox)
    vfe = DynamicVFE(4, PILLAR if pillars else VOXEL, RANGE, num_filters=(16, 16))
    x = vfe(batch)
    assert x.feats.shape == (len(batch["voxel_coords"]), 16)
    x.feats.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in vfe.parameters())
    keep = batch["point_to_voxel"] >= 0
    points = batch["points"][keep].double().numpy()
    to_mean, to_centre = _decorations(points[:, :3], batch["point_to_voxel"][keep].numpy(), PILLAR if pillars
                                      else VOXEL, RANGE[:3])
    np.testing.assert_allclose(_first_layer_input(vfe, batch).numpy(), np.c_[points, to_mean, to_centre], atol=1e-5)


@pytest.mark.parametrize("backbone", [VoxelBackBone8x, VoxelResBackBone8x])
def test_voxel_backbones_stride_and_gradients(backbone):
    batch = batch_with(HardVoxelizer(VOXEL, RANGE, 5, 20000))
    x = MeanVFE(4)(batch)
    x.feats.requires_grad_(True)
    net = backbone(4, out_channels=None, channels=(8, 8, 16, 16))
    out, stages = net.forward_features(x)
    assert out.spatial_shape == (2, 16, 16) == net.output_shape(x.spatial_shape) and out.feats.shape[1] == 16
    assert torch.equal(net(x).feats, out.feats)
    assert stages["x_conv2"].spatial_shape == (10, 64, 64)
    bev = HeightCompression(16, out.spatial_shape)(out)
    assert bev.shape == (2, 32, 16, 16)
    # SECOND's channel order (c * Z + z) in channels-last memory, no copy in NCHW order
    assert torch.equal(bev, out.dense().flatten(1, 2)) and bev.is_contiguous(memory_format=torch.channels_last)
    bev.sum().backward()
    assert torch.isfinite(x.feats.grad).all() and x.feats.grad.abs().sum() > 0


@pytest.mark.parametrize("backbone", [VoxelBackBone8x, VoxelResBackBone8x])
def test_z_padding_keeps_openpcdets_two_z_cells_for_bev(backbone):
    """OpenPCDet pads the grid by one z cell (sparse_shape = grid_size[::-1] + [1, 0, 0]): KITTI's 40 cells end
    as 2 under the stages and z-halving conv (a 256-wide BEV map from 128 channels), not 1."""
    net = backbone(4, out_channels=8, channels=(8, 8, 8, 8), z_padding=1)
    assert net.output_shape((40, 1600, 1408)) == (2, 200, 176)
    assert backbone(4, out_channels=8, channels=(8, 8, 8, 8)).output_shape((40, 1600, 1408)) == (1, 200, 176)
    x = MeanVFE(4)(batch_with(HardVoxelizer([0.1, 0.1, 0.1], RANGE, 5, 20000)))
    assert x.spatial_shape == (40, 128, 128)
    out = net(x)
    assert out.spatial_shape == net.output_shape(x.spatial_shape) == (2, 16, 16)
    assert int(out.coords[:, 1].max()) == 1  # the padding lies above the top: sites fill both cells
    with pytest.raises(ConfigError, match="z_padding"):
        backbone(4, z_padding=-1)


def test_pillar_scatter_and_bev_backbone():
    batch = batch_with(PillarVoxelizer(PILLAR[:2], RANGE, 16, 5000))
    pillars = PillarVFE(4, PILLAR, RANGE, num_filters=(16,))(batch)
    image = PointPillarScatter(16, pillars.spatial_shape)(pillars)
    assert image.shape == (2, 16, 64, 64)
    coords = batch["voxel_coords"].long()
    assert torch.equal(image[coords[:, 0], :, coords[:, 2], coords[:, 3]], pillars.feats)
    assert torch.equal(image, pillars.dense()[:, :, 0]) and image.is_contiguous(memory_format=torch.channels_last)
    net = BaseBEVBackbone(16, layer_nums=(1, 1, 1), layer_strides=(2, 2, 2), num_filters=(8, 16, 32),
                          upsample_strides=(0.5, 1, 2), num_upsample_filters=(8, 8, 8))
    out = net(image)
    assert out.shape == (2, 24, 16, 16) and net.out_channels == 24
    out.sum().backward()


def anchor_head(in_channels: int) -> AnchorHead:
    return AnchorHead(in_channels, 3, RANGE, [[3.9, 1.6, 1.56], [0.8, 0.6, 1.73], [1.76, 0.6, 1.73]],
                      [-1.78, -1.78, -1.78], [0.6, 0.5, 0.5], [0.45, 0.35, 0.35])


def center_head(voxel, stride: int, in_channels: int) -> CenterHead:
    return CenterHead(in_channels, CLASSES, [["Car"], ["Pedestrian", "Cyclist"]], voxel, RANGE, stride, 8, 8)


def detectors():
    bev2d = {"layer_nums": (1, 1), "layer_strides": (1, 2), "num_filters": (16, 16), "upsample_strides": (1, 2),
             "num_upsample_filters": (16, 16)}
    bev = partial(BaseBEVBackbone, **bev2d)
    second = SECOND(MeanVFE(4), partial(VoxelBackBone8x, out_channels=None, channels=(8, 8, 16, 16)),
                    HeightCompression, bev, anchor_head, PostProcessor(), VOXEL, RANGE)
    pillars = PointPillars(PillarVFE(4, PILLAR, RANGE, (16,)), PointPillarScatter, bev, anchor_head, PostProcessor(),
                           PILLAR, RANGE)
    cp_voxel = CenterPoint(MeanVFE(4), partial(VoxelResBackBone8x, out_channels=None, channels=(8, 8, 16, 16)),
                           HeightCompression, bev, partial(center_head, VOXEL, 8), PostProcessor(), VOXEL, RANGE)
    cp_pillar = CenterPoint(DynamicVFE(4, PILLAR, RANGE, (16,)), None, PointPillarScatter, bev,
                            partial(center_head, PILLAR, 1), PostProcessor(nms="circle", min_radius=1.0), PILLAR, RANGE)
    return {"second": (second, HardVoxelizer(VOXEL, RANGE, 5, 20000)),
            "pointpillars": (pillars, PillarVoxelizer(PILLAR[:2], RANGE, 16, 5000)),
            "centerpoint": (cp_voxel, HardVoxelizer(VOXEL, RANGE, 5, 20000)),
            "centerpoint_pillar": (cp_pillar, DynamicPillarVoxelizer(PILLAR[:2], RANGE))}


@pytest.mark.parametrize("name", ["second", "centerpoint"])
def test_bf16_autocast_heads_hand_float32_maps_to_the_decoder(name):
    """Under bf16 autocast the convs run in bf16, but every map a head returns is float32, so the loss, the
    IoU targets and the box decoder work in float32 (a centre decoded in bf16 moves in 0.25 m steps 40 m out,
    and 8-bit scores tie in the ranking)."""
    torch.manual_seed(0)
    model, voxelizer = detectors()[name]
    batch = batch_with(voxelizer)
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        bev = model.backbone_2d(model.map_to_bev(model.backbone_3d(model.vfe(batch))))
        maps = model.dense_head(bev)
        preds = model(batch)
    assert bev.dtype == torch.bfloat16
    tensors = [v for m in (maps if isinstance(maps, list) else [maps]) for v in m.values() if torch.is_tensor(v)]
    assert tensors and all(t.dtype == torch.float32 for t in tensors)
    assert all(p["boxes"].dtype == np.float32 for p in preds)


@pytest.mark.parametrize("name", ["second", "pointpillars", "centerpoint", "centerpoint_pillar"])
def test_detector_train_and_eval_contract(name):
    torch.manual_seed(0)
    model, voxelizer = detectors()[name]
    batch = batch_with(voxelizer)
    model.train()
    out = model(batch)
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    out["loss"].backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert sum(g is not None and g.abs().sum() > 0 for g in grads) > 0.8 * len(grads)
    model.eval()
    with torch.no_grad():
        preds = model(batch)
    assert isinstance(preds, list) and len(preds) == 2
    for p, fid in zip(preds, batch["frame_id"], strict=True):
        assert p["frame_id"] == fid and p["boxes"].shape[1] == 7 and p["boxes"].dtype == np.float32
        assert len(p["boxes"]) == len(p["scores"]) == len(p["labels"])
        assert (p["labels"] >= 1).all() and (p["labels"] <= 3).all()


def test_center_head_drops_centres_beyond_the_post_range():
    """One hot cell at ix 6 of a 0.8 m stride-8 grid (centre x 4.8 m) lies beyond post_center_range's x 3.0."""
    head = CenterHead(8, ["Car"], [["Car"]], [0.1, 0.1, 0.2], [0, -3.2, -3, 6.4, 3.2, 1], 8,
                      post_center_range=[0, -3.2, -3, 3.0, 3.2, 1])
    pred = {"hm": torch.full((1, 1, 8, 8), -10.0), "center": torch.zeros(1, 2, 8, 8),
            "center_z": torch.zeros(1, 1, 8, 8), "dim": torch.zeros(1, 3, 8, 8), "rot": torch.zeros(1, 2, 8, 8)}
    pred["rot"][:, 1] = 1.0
    pred["hm"][0, 0, 4, 6] = 10.0
    assert len(head.predict([pred])[0][0]) == 0
    pred["hm"][0, 0, 4, 6], pred["hm"][0, 0, 4, 2] = -10.0, 10.0  # ix 2: x 2.0 m, inside
    assert len(head.predict([pred])[0][0]) == 1
