"""Reusable model parts: blocks in 2, 3 and 4 dimensions against dense references, `act` / `norm` factories,
the 4D U-Net, the backbone convention, widths derived from the config (checked by a forward pass) and
state_dict keys of the shipped configs (checkpoints keep loading)."""
from __future__ import annotations

import hashlib
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch import nn

from pc3d.data.batch import Collate
from pc3d.models.backbones3d.blocks import ResidualBlock, SparseBasicBlock, post_act_block
from pc3d.models.backbones3d.unet import SparseUNet
from pc3d.models.backbones3d.voxel_backbone import VoxelBackBone8x
from pc3d.models.backbones3d.voxel_res_backbone import VoxelResBackBone8x
from pc3d.sparse import SparseTensor

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SHAPES = {2: (7, 6), 3: (5, 6, 4), 4: (4, 5, 3, 4)}
TOL = {"rtol": 1e-10, "atol": 1e-10}


def random_tensor(shape, channels=4, batch=2, occupancy=0.4, seed=0, dtype=torch.float64) -> SparseTensor:
    rng = np.random.default_rng(seed)
    coords = np.argwhere(rng.random((batch, *shape)) < occupancy).astype(np.int32)
    feats = torch.from_numpy(rng.standard_normal((len(coords), channels))).to(dtype)
    return SparseTensor(feats, torch.from_numpy(coords), tuple(shape), batch)


def dense_subm(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Dense same-size conv [B, Cin, *S] -> [B, Cout, *S] with a pc3d weight [Cout, *k, Cin] (odd k); 4D as a
    sum of 3D convs over the first axis' kernel offsets (torch has no conv4d)."""
    w = weight.movedim(-1, 1)
    ndim = w.ndim - 2
    if ndim < 4:
        return (F.conv2d if ndim == 2 else F.conv3d)(x, w, padding=[k // 2 for k in w.shape[2:]])
    reach = w.shape[2] // 2
    padded = F.pad(x, (0, 0) * 3 + (reach, reach))
    t = x.shape[2]
    out = 0
    for k in range(w.shape[2]):
        frames = padded[:, :, k:k + t].movedim(2, 1).flatten(0, 1)  # [B * T, C, Z, Y, X]
        y = F.conv3d(frames, w[:, :, k], padding=[s // 2 for s in w.shape[3:]])
        out = out + y.unflatten(0, (x.shape[0], t)).movedim(1, 2)
    return out


def at_sites(dense: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    return dense.movedim(1, -1)[tuple(coords.long().T)]


def identity_norm(channels: int) -> nn.Module:
    return nn.Identity()


@pytest.mark.parametrize("ndim", [2, 3, 4])
def test_basic_block_matches_dense_reference(ndim):
    x = random_tensor(SHAPES[ndim])
    block = SparseBasicBlock(4, ndim=ndim, norm=identity_norm).double()
    dense, mask = x.dense(), (x.dense().abs().sum(1, keepdim=True) > 0).double()
    h = torch.relu(dense_subm(dense, block.conv1.weight)) * mask  # SubM: outputs only on the input sites
    ref = torch.relu(dense_subm(h, block.conv2.weight) + dense)
    torch.testing.assert_close(block(x).feats, at_sites(ref, x.coords), **TOL)


@pytest.mark.parametrize("ndim", [2, 3, 4])
def test_residual_block_with_projection_matches_dense_reference(ndim):
    x = random_tensor(SHAPES[ndim])
    block = ResidualBlock(4, 6, ndim=ndim, norm=identity_norm).double()
    dense, mask = x.dense(), (x.dense().abs().sum(1, keepdim=True) > 0).double()
    h = torch.relu(dense_subm(dense, block.conv1[0].weight)) * mask
    shortcut = block.shortcut[0](dense.movedim(1, -1)).movedim(-1, 1)
    ref = torch.relu(dense_subm(h, block.conv2[0].weight) + shortcut)
    torch.testing.assert_close(block(x).feats, at_sites(ref, x.coords), **TOL)


@pytest.mark.parametrize("ndim", [2, 3, 4])
def test_post_act_block_builds_the_convs_of_its_ndim(ndim):
    x = random_tensor(SHAPES[ndim], dtype=torch.float32)
    down = post_act_block(4, 8, 2, "down", stride=2, conv_type="spconv", ndim=ndim)
    up = post_act_block(8, 4, 2, "down", conv_type="inverseconv", ndim=ndim)
    y = down(x)
    assert y.stride == (2,) * ndim and y.feats.shape[1] == 8 and (y.feats >= 0).all()
    assert torch.equal(up(y).coords, x.coords)
    with pytest.raises(ValueError, match="ndim"):
        post_act_block(4, 8, ndim=5)


class CountingAct(nn.Module):
    """An activation that records each call (and checks it gets [N, C] features)."""

    def __init__(self, calls: list):
        super().__init__()
        self.calls = calls

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        assert feats.ndim == 2
        self.calls.append(self)
        return feats.tanh()


@pytest.mark.parametrize("make", [
    lambda act: SparseUNet(4, (8, 16, 16), (1, 1), (16, 8), (1, 1), act=act),
    lambda act: SparseUNet(4, (8, 16), (1,), (8,), (1,), separable=True, act=act),
    lambda act: VoxelBackBone8x(4, 16, (8, 8, 16, 16), act=act),
    lambda act: VoxelResBackBone8x(4, None, (8, 8, 16, 16), act=act),
])
def test_custom_act_replaces_every_relu(make):
    calls = []
    net = make(partial(CountingAct, calls))
    acts = [m for m in net.modules() if isinstance(m, CountingAct)]
    assert acts and not any(isinstance(m, nn.ReLU) for m in net.modules())
    net(random_tensor((41, 24, 24), occupancy=0.03, batch=1, dtype=torch.float32))
    assert sorted(map(id, calls)) == sorted(map(id, acts))  # each instance ran exactly once


def test_norm_factory_is_used():
    net = SparseUNet(4, (8, 16), (1,), (8,), (1,), norm=lambda c: nn.LayerNorm(c))
    assert not any(isinstance(m, nn.BatchNorm1d) for m in net.modules())
    x = random_tensor((8, 8, 8), dtype=torch.float32)
    assert net(x).feats.shape == (len(x), 8)


@pytest.mark.parametrize("separable", [False, True])
def test_unet_4d_forward_backward(separable):
    x = random_tensor((6, 8, 8, 5), channels=4, occupancy=0.15, dtype=torch.float32)
    x.feats.requires_grad_(True)
    net = SparseUNet(4, (8, 16, 16), (1, 1), (16, 8), (1, 1), separable=separable, ndim=4)
    y, scales = net.forward_features(x)
    assert torch.equal(y.coords, x.coords) and y.feats.shape == (len(x), net.out_channels)
    assert scales["enc2"].stride == (4,) * 4 and scales["dec0"] is y
    y.feats.square().sum().backward()
    assert x.feats.grad.abs().sum() > 0
    assert all(p.grad is not None for p in net.parameters())


@pytest.mark.parametrize("backbone", [VoxelBackBone8x, VoxelResBackBone8x])
@pytest.mark.parametrize("shape", [(41, 33, 27), (40, 16, 16), (25, 9, 7)])
@pytest.mark.parametrize("out_channels", [None, 16])
def test_output_shape_matches_forward(backbone, shape, out_channels):
    net = backbone(4, out_channels, (8, 8, 16, 16))
    x = random_tensor(shape, occupancy=0.02, batch=1, dtype=torch.float32)
    y, stages = net.forward_features(x)
    assert y.spatial_shape == net.output_shape(shape) and y.feats.shape[1] == net.out_channels
    assert torch.equal(net(x).feats, y.feats) and set(stages) == {"x_conv1", "x_conv2", "x_conv3", "x_conv4"}


def compose_experiment(name: str):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        return compose("config", overrides=[f"experiment={name}"])


def random_samples(point_range, n=3000, batch=2) -> list[dict]:
    rng = np.random.default_rng(0)
    lo, hi = np.asarray(point_range[:3]), np.asarray(point_range[3:])
    return [{"frame_id": str(b), "seed": b,
             "points": np.c_[rng.uniform(lo, hi, (n, 3)), rng.uniform(0, 1, n)].astype(np.float32)}
            for b in range(batch)]


@pytest.mark.parametrize("experiment", ["second_sim_kitti", "centerpoint_sim_kitti", "pointpillars_sim_kitti",
                                        "centerpoint_pillar_sim_kitti"])
def test_derived_widths_match_a_forward_pass(experiment):
    cfg = compose_experiment(experiment)
    model = instantiate(cfg.model, _convert_="all").eval()
    assert model.task == "detection"
    batch = Collate(instantiate(cfg.dataset.voxelizer))(random_samples(cfg.dataset.point_cloud_range))
    with torch.no_grad():
        x = model.vfe(batch)
        assert x.feats.shape[1] == model.vfe.out_channels
        if model.backbone_3d is not None:
            shape = model.backbone_3d.output_shape(batch["spatial_shape"])
            x = model.backbone_3d(x)
            assert x.spatial_shape == shape and x.feats.shape[1] == model.backbone_3d.out_channels
        bev = model.map_to_bev(x)
        assert bev.shape[1] == model.map_to_bev.out_channels
        features = model.backbone_2d(bev)
        assert features.shape[1] == model.backbone_2d.out_channels
        preds = model(batch)
    assert len(preds) == 2


@pytest.mark.parametrize("experiment", ["sim_semantickitti_seg", "sim_scannet_seg"])
def test_segmentor_parts_from_config(experiment):
    cfg = compose_experiment(experiment)
    model = instantiate(cfg.model, _convert_="all")
    assert model.task == "segmentation" and model.backbone.stem[0][0].in_channels == cfg.model.in_channels
    columns = cfg.model.in_channels - 3
    samples = random_samples(cfg.dataset.point_cloud_range, n=2000)
    for s in samples:
        s["points"] = np.c_[s["points"][:, :3], np.zeros((len(s["points"]), columns), np.float32)]
        s["point_labels"] = np.ones(len(s["points"]), np.int64)
    out = model(Collate(instantiate(cfg.dataset.voxelizer))(samples))
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])


# sha256 of "key:shape" lines of the state_dict, recorded before widths were derived: checkpoints keep loading
STATE_DICTS = {
    # OpenPCDet's z padding since 2026-12-07 (a 256-wide BEV map; before: c88cbaa8d55f75a6, 8c49e028a47cc4d8 with
    # backbone_3d.z_padding=0, which a run's saved config keeps)
    "second_kitti": (162, "74b079cd7303bb4b"),
    "centerpoint_kitti": (296, "1d50da080eaa135e"),
    "centerpoint_pillar_kitti": (212, "3be0fa591c26b710"),
    "pointpillars_kitti": (126, "a7d0761de2cf2016"),
    # Pointcept's SpUNet since 2026-12-07 (before: a69682f432c1f5a0, 284 keys, with enc_depths [2, 2, 2, 2],
    # stem_kernel 3, stem_blocks 1, which a run's saved config keeps)
    "semantickitti_seg": (356, "9f8f34ff6dae285b"),
    "sim_scannet_seg": (152, "a457f731c7f447fe"),
    # the separable U-Net at twice the widths: sim_semantickitti_ds_seg's model until 2026-12-02 (a run keeps
    # its config, so its checkpoints load whatever the recipe says today)
    "lim_full_sim_semantickitti": (266, "eed26b9089bb301b"),
    "sim_semantickitti_ds_seg": (266, "45a3b7e38b062388"),
    "toy": (12, "331d5dda12722371"),
}


@pytest.mark.parametrize("experiment", sorted(STATE_DICTS))
def test_state_dict_keys_unchanged(experiment):
    state = instantiate(compose_experiment(experiment).model, _convert_="all").state_dict()
    lines = "".join(f"{k}:{tuple(v.shape)}\n" for k, v in state.items())
    assert (len(state), hashlib.sha256(lines.encode()).hexdigest()[:16]) == STATE_DICTS[experiment]


def test_every_model_has_a_task():
    from pc3d.models.detectors import SECOND, CenterPoint, PointPillars
    from pc3d.models.segmentors import SparseSegmentor
    from pc3d.models.toy import ToyPointNet

    assert SECOND.task == CenterPoint.task == PointPillars.task == "detection"
    assert SparseSegmentor.task == "segmentation" and ToyPointNet.task == "classification"
