"""Window-attention backbones (DSVT, FlatFormer): slot attention against a dense softmax reference, masked
slots, invariance to the order of input voxels, and one training step of each detector on simulated KITTI."""
from __future__ import annotations

import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from conftest import random_sparse
from torch import nn

from pc3d.errors import ConfigError, SparseTensorError
from pc3d.models.backbones3d.attention import AttentionLayer, SlotAttention
from pc3d.models.backbones3d.dsvt import DSVT, X_MAJOR, Y_MAJOR, DSVTStage, ZAttentionPool
from pc3d.models.backbones3d.flatformer import ORDERS, FlatFormer
from pc3d.sparse import SparseTensor
from pc3d.sparse.window import Slots, dynamic_sets, flat_groups

SMALL_DSVT = dict(channels=(16,), blocks=(2,), set_size=(6,), window_shape=((1, 4, 4),),
                  shifted_window_shape=((1, 8, 8),), shift=((0, 2, 2),), heads=2, ffn_channels=(32,))
SMALL_DSVT_VOXEL = dict(channels=(16, 16, 16), blocks=(1, 1, 1), set_size=(8, 8, 8),
                        window_shape=((16, 4, 4), (4, 4, 4), (1, 4, 4)),
                        shifted_window_shape=((16, 8, 8), (4, 8, 8), (1, 8, 8)),
                        shift=((0, 2, 2),) * 3, pool_z=(4, 4), heads=2, ffn_channels=(32,) * 3)
SMALL_FLAT = dict(channels=16, blocks=1, heads=2, ffn_channels=32, window_shape=(1, 5, 5), group_size=12)


def _pillars(seed: int = 0, channels: int = 8) -> SparseTensor:
    return random_sparse((1, 24, 20), channels, batch=3, occupancy=0.15, empty=1, seed=seed)


def _sets(x: SparseTensor, size: int = 5):
    return dynamic_sets(x.coords, x.spatial_shape, (1, 4, 4), (0, 2, 2), size, X_MAJOR)


def test_masked_slots_never_change_an_output():
    torch.manual_seed(0)
    x = _pillars(channels=16)
    attn = SlotAttention(16, 4)
    pos = torch.randn_like(x.feats)
    for slots in (_sets(x), flat_groups(x.coords, x.spatial_shape, (1, 5, 5), (0, 0, 0), 100, Y_MAJOR, 3)):
        assert not slots.key_mask.all(), "the case must have masked slots"
        with torch.no_grad():
            want = attn(x.feats, pos, slots)
            masked = ~slots.key_mask
            slots.index[masked] = torch.randint(0, len(x), (int(masked.sum()),))  # any other voxel
            got = attn(x.feats, pos, slots)
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def test_one_group_attention_equals_dense_softmax():
    torch.manual_seed(1)
    x = _pillars(channels=8)
    attn = SlotAttention(8, 2)
    pos = torch.randn_like(x.feats)
    slots = _sets(x)
    with torch.no_grad():
        out = attn(x.feats, pos, slots)
        for t in range(len(slots.index)):
            rows, keys = slots.index[t], slots.key_mask[t]
            q, k = (x.feats[rows] + pos[rows]) @ attn.qk.weight.T + attn.qk.bias, None
            q, k = q[:, :8], q[:, 8:]
            v = x.feats[rows] @ attn.v.weight.T + attn.v.bias
            heads = []
            for h in range(2):
                cols = slice(4 * h, 4 * h + 4)
                score = q[:, cols] @ k[:, cols].T / math.sqrt(4)
                score[:, ~keys] = -math.inf
                heads.append(torch.softmax(score, 1) @ v[:, cols])
            dense = torch.cat(heads, 1) @ attn.out.weight.T + attn.out.bias
            own = slots.first[rows] == t * slots.index.shape[1] + torch.arange(len(rows))
            torch.testing.assert_close(out[rows[own]], dense[own], rtol=1e-5, atol=1e-5)


def _sorted_by_site(y: SparseTensor) -> torch.Tensor:
    c = y.coords.long()
    key = ((c[:, 0] * 1000 + c[:, 1]) * 1000 + c[:, 2]) * 1000 + c[:, 3]
    return y.feats[torch.argsort(key)]


@pytest.mark.parametrize("name", ["dsvt_pillar", "dsvt_voxel", "flatformer"])
def test_output_does_not_depend_on_voxel_order(name):
    torch.manual_seed(0)
    if name == "dsvt_voxel":
        x = random_sparse((16, 12, 12), 8, batch=2, occupancy=0.05)
        net = DSVT(8, **SMALL_DSVT_VOXEL)
    else:
        x = _pillars()
        net = DSVT(8, **SMALL_DSVT) if name == "dsvt_pillar" else FlatFormer(8, **SMALL_FLAT)
    net.eval()
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(3))
    shuffled = SparseTensor(x.feats[perm], x.coords[perm], x.spatial_shape, x.batch_size)
    with torch.no_grad():
        a, b = net(x), net(shuffled)
    assert a.spatial_shape == net.output_shape(x.spatial_shape)
    torch.testing.assert_close(_sorted_by_site(a), _sorted_by_site(b), rtol=1e-5, atol=1e-5)


def test_checkpointed_layers_give_the_same_gradients():
    x = _pillars()
    grads = []
    for use_checkpoint in (False, True):
        torch.manual_seed(0)
        net = DSVT(8, **SMALL_DSVT, use_checkpoint=use_checkpoint)
        net(x).feats.square().sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters()]))
    torch.testing.assert_close(grads[0], grads[1])


@pytest.mark.parametrize("name", ["dsvt_pillar", "dsvt_voxel", "flatformer"])
def test_bf16_autocast_runs_forward_and_backward(name):
    torch.manual_seed(0)
    if name == "dsvt_voxel":
        x, net = random_sparse((16, 12, 12), 8, batch=2, occupancy=0.05), DSVT(8, **SMALL_DSVT_VOXEL)
    else:
        x = _pillars()
        net = DSVT(8, **SMALL_DSVT) if name == "dsvt_pillar" else FlatFormer(8, **SMALL_FLAT)
    want = net(x).feats.detach()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = net(x)
    y.feats.float().square().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
    assert (y.feats.float() - want).abs().max() < 0.1  # bf16 keeps 8 bits of mantissa; LayerNorm'd outputs


def test_bf16_autocast_attention_itself_runs_in_float32(monkeypatch):
    """The projections take bf16 under autocast; the softmax attention gets float32 q, k, v (its CPU bf16
    backward is the slow part of a bf16 step otherwise)."""
    seen = []
    sdpa = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **k: seen.append(a[0].dtype) or sdpa(*a, **k))
    torch.manual_seed(0)
    layer = AttentionLayer(8, 2, 16)
    x, pos = torch.randn(50, 8), torch.randn(50, 8)
    slots = Slots(torch.arange(50).view(5, 10), torch.ones(5, 10, dtype=torch.bool), torch.arange(50))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x, pos, slots)
    assert seen == [torch.float32]
    torch.testing.assert_close(y.float(), layer(x, pos, slots), atol=0.1, rtol=0)


RANGE = [0.0, -12.8, -3.0, 25.6, 12.8, 1.0]
PILLAR = [0.32, 0.32, 4.0]
VOXEL = [0.32, 0.32, 0.25]  # 16 z cells


@pytest.fixture(scope="module")
def kitti(tmp_path_factory):
    from pc3d.data import KittiDataset
    from pc3d.data.transforms import RangeCrop
    from pc3d.sim.api import simulate_dataset
    from pc3d.voxel import HardVoxelizer

    root = simulate_dataset("kitti", tmp_path_factory.mktemp("sim") / "kitti", frames=2, seed=0, columns=512)

    def batch(voxel_size):
        ds = KittiDataset(root, "trainval", ["Car", "Pedestrian", "Cyclist"], transforms=[RangeCrop(RANGE)],
                          voxelizer=HardVoxelizer(voxel_size, RANGE, 8, 20000), seed=0, training=False)
        return ds.collate_fn([ds[0], ds[1]])
    return {"pillar": batch(PILLAR), "voxel": batch(VOXEL)}


@pytest.mark.parametrize("name", ["dsvt_pillar", "dsvt_voxel", "flatformer"])
def test_detector_trains_one_step(name, kitti):
    from pc3d.models.bev import PointPillarScatter
    from pc3d.models.bev.res_bev import BaseBEVResBackbone
    from pc3d.models.detectors import CenterPoint
    from pc3d.models.heads.center_head import CenterHead
    from pc3d.models.postprocess import PostProcessor
    from pc3d.models.vfe import DynamicVFE

    grid = VOXEL if name == "dsvt_voxel" else PILLAR
    backbone = {"dsvt_pillar": partial(DSVT, **SMALL_DSVT), "dsvt_voxel": partial(DSVT, **SMALL_DSVT_VOXEL),
                "flatformer": partial(FlatFormer, **SMALL_FLAT)}[name]
    torch.manual_seed(0)
    model = CenterPoint(
        DynamicVFE(4, grid, RANGE, (16, 16)), backbone, PointPillarScatter,
        partial(BaseBEVResBackbone, layer_nums=(1, 1), layer_strides=(1, 2), num_filters=(16, 32),
                upsample_strides=(1, 2), num_upsample_filters=(16, 16)),
        partial(CenterHead, class_names=["Car", "Pedestrian", "Cyclist"], tasks=[["Car"], ["Pedestrian", "Cyclist"]],
                voxel_size=grid, point_cloud_range=RANGE, out_stride=1, shared_channels=16, head_channels=16,
                with_iou=name != "flatformer", iou_rectifier=[0.68, 0.71, 0.65]),
        PostProcessor(), grid, RANGE)
    batch = kitti["voxel" if name == "dsvt_voxel" else "pillar"]
    model.train()
    losses = model(batch)
    assert torch.isfinite(losses["loss"])
    losses["loss"].backward()
    for part in (model.vfe, model.backbone_3d, model.dense_head):
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in part.parameters() if p.requires_grad)
    model.eval()
    with torch.no_grad():
        predictions = model(batch)
    assert len(predictions) == 2 and all(len(p["boxes"]) == len(p["scores"]) for p in predictions)


def test_iou_rectified_scores_per_class():
    from pc3d.models.heads.center_head import CenterHead

    head = CenterHead(8, ["Car", "Pedestrian"], [["Car", "Pedestrian"]], [0.5, 0.5, 4.0], [0, 0, -3, 4, 4, 1],
                      out_stride=1, with_iou=True, iou_rectifier=[0.0, 1.0], score_threshold=0.0, max_per_task=2)
    hm = torch.full((1, 2, 8, 8), -20.0)
    hm[0, 0, 2, 3], hm[0, 1, 5, 5] = 2.0, 1.0  # one Car, one Pedestrian peak
    iou = torch.zeros(1, 1, 8, 8)
    iou[0, 0, 2, 3], iou[0, 0, 5, 5] = 0.2, -0.5  # IoU (x + 1) / 2: 0.6 and 0.25
    pred = {"hm": hm, "center": torch.zeros(1, 2, 8, 8), "center_z": torch.zeros(1, 1, 8, 8),
            "dim": torch.zeros(1, 3, 8, 8), "rot": torch.zeros(1, 2, 8, 8), "iou": iou}
    _, scores, labels = head.predict([pred])[0]
    by_label = dict(zip(labels.tolist(), scores.tolist(), strict=True))
    assert by_label[1] == pytest.approx(torch.sigmoid(torch.tensor(2.0)).item())  # Car: a = 0, the heat map
    assert by_label[2] == pytest.approx(0.25)  # Pedestrian: a = 1, the IoU


@pytest.mark.parametrize("make, coords, shape", [
    (lambda: DSVT(8, **SMALL_DSVT), [[1, 0, 3, 4]], (1, 24, 20)),
    (lambda: DSVT(8, **SMALL_DSVT_VOXEL), [[0, z, 3, 4] for z in range(0, 16, 2)], (16, 12, 12)),  # one column
    (lambda: FlatFormer(8, **SMALL_FLAT), [[1, 0, 3, 4]], (1, 24, 20)),
])
def test_a_stage_with_one_site_trains(make, coords, shape):
    torch.manual_seed(0)
    net = make().train()
    x = SparseTensor(torch.randn(len(coords), 8), torch.tensor(coords, dtype=torch.int32), shape, 2)
    net(x).feats.sum().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


def test_dsvt_voxel_refuses_duplicate_sites():
    coords = torch.tensor([[0, 2, 3, 3], [0, 2, 3, 3], [0, 5, 1, 1]], dtype=torch.int32)
    x = SparseTensor(torch.randn(3, 8), coords, (16, 12, 12), 1)
    with pytest.raises(SparseTensorError, match="duplicate"):
        DSVT(8, **SMALL_DSVT_VOXEL).eval()(x)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
@pytest.mark.parametrize("make", [lambda: DSVT(8, **SMALL_DSVT), lambda: FlatFormer(8, **SMALL_FLAT)])
def test_a_backbone_cast_to_one_dtype_runs_in_it(make, dtype):
    torch.manual_seed(0)
    x = _pillars()
    net = make().eval().to(dtype)
    with torch.no_grad():
        y = net(x.replace_feature(x.feats.to(dtype)))
    assert y.feats.dtype == dtype and torch.isfinite(y.feats.float()).all()


@pytest.mark.parametrize("options, match", [({"channels": 18, "heads": 2}, "channels=18: the sine-cosine position"),
                                            ({"channels": 20, "heads": 8}, "channels=20 is not a multiple of heads=8"),
                                            ({"heads": 0}, "heads=0"),
                                            ({"window_shape": (1, 0, 13)}, r"window_shape=\[1, 0, 13\]"),
                                            ({"window_shape": (13, 13)}, r"window_shape=\[13, 13\]"),
                                            ({"group_size": 0}, "group_size=0")])
def test_flatformer_checks_its_parameters_when_built(options, match):
    """The position encoding's multiple of 4, the heads' split, the window and the group size are ConfigErrors
    naming the parameter when the module is built, not a ValueError or ZeroDivisionError at the first forward."""
    with pytest.raises(ConfigError, match=match):
        FlatFormer(8, **{**SMALL_FLAT, **options})


def _grid(ny: int, nx: int) -> torch.Tensor:
    """The coordinates of a full ny x nx pillar grid of one sample, y-major."""
    return torch.tensor([(0, 0, y, x) for y in range(ny) for x in range(nx)], dtype=torch.int32)


def _stage() -> DSVTStage:
    return DSVTStage(8, 2, 4, (1, 4, 4), (1, 4, 4), (0, 2, 2), heads=2, ffn_channels=16)


def test_dsvt_sets_are_y_major_then_x_major():
    # a full 4 x 4 window in sets of 4: the first layer's sets are rows (one y each), the second's columns
    # (one x each)
    coords = _grid(4, 4)
    x = SparseTensor(torch.zeros(16, 8), coords, (1, 4, 4), 1)
    (_, (y_sets, x_sets)), _ = _stage().partition(x)
    for t in range(4):
        assert coords[y_sets.index[t], 2].unique().numel() == 1 and coords[y_sets.index[t], 3].unique().numel() == 4
        assert coords[x_sets.index[t], 3].unique().numel() == 1 and coords[x_sets.index[t], 2].unique().numel() == 4


def test_dsvt_blocks_alternate_the_unshifted_and_the_shifted_windows():
    # block b runs plan[b % 2]
    stage = _stage()
    seen = []

    class Spy(nn.Module):
        def forward(self, feats, offsets, sets, use_checkpoint=False):
            seen.append(offsets)
            return feats

    stage.blocks = nn.ModuleList([Spy(), Spy()])
    plan = [(torch.zeros(1), None), (torch.ones(1), None)]
    stage(SparseTensor(torch.zeros(1, 8), torch.zeros(1, 4, dtype=torch.int32), (1, 4, 4), 1), plan=plan)
    assert seen[0] is plan[0][0] and seen[1] is plan[1][0]


def test_dsvt_counts_blocks_over_the_whole_network_so_one_block_stages_alternate_windows():
    # the voxel variant's stages hold one block each: stage 1's block is the network's second, shifted (the
    # released code's block_id); counting per stage would never use a shifted window
    net = DSVT(16, **SMALL_DSVT_VOXEL)
    seen = []

    class Spy(nn.Module):
        def forward(self, feats, offsets, sets, use_checkpoint=False):
            seen.append(offsets)
            return feats

    for stage in net.stages:
        stage.blocks = nn.ModuleList([Spy()])
    plans = []
    for stage in net.stages:
        stage.partition = lambda x, *a, original=stage.partition: plans.append(original(x, *a)) or plans[-1]
    x = random_sparse((16, 8, 8), 16, batch=1, occupancy=0.3, seed=1)
    net(x)
    used = [next(i for i, entry in enumerate(plan) if entry is not None and entry[0] is o)
            for plan, o in zip(plans, seen, strict=True)]
    assert used == [0, 1, 0]
    assert all(sum(entry is not None for entry in plan) == 1 for plan in plans)  # the window it uses, alone


def test_z_pooling_queries_the_occupied_sub_voxels_only_and_scales_the_stride():
    # one voxel with negative features under a parent of 2 z cells: the query is that voxel's features (an empty
    # slot's zeros would win the max); the output's z stride doubles
    torch.manual_seed(0)
    pool = ZAttentionPool(4, 2, 2).eval()
    feats = -torch.ones(1, 4) - torch.arange(4.0)
    x = SparseTensor(feats, torch.tensor([[0, 1, 1, 0]], dtype=torch.int32), (4, 2, 2), 1, stride=(1, 1, 1))
    out = pool(x)
    assert out.spatial_shape == (2, 2, 2) and out.stride == (2, 1, 1) and out.coords.tolist() == [[0, 0, 1, 0]]
    # one occupied slot: attention returns its projected value whatever the query
    key = torch.stack([torch.zeros(4), feats[0]])[None] + pool.slot_embed
    value = torch.stack([torch.zeros(4), feats[0]])[None]
    attn = pool.attn(feats[None], key, value, key_padding_mask=torch.tensor([[True, False]]), need_weights=False)[0]
    with torch.no_grad():
        assert torch.allclose(out.feats, pool.norm(feats + attn[:, 0]), atol=1e-5)


def test_flatformer_shifted_orders_use_half_window_shifts():
    # orders 1 and 3 are the x / y orders with the windows moved by half a window
    coords = _grid(6, 6)
    x = SparseTensor(torch.zeros(36, 8), coords, (1, 6, 6), 1)
    model = FlatFormer(8, 8, blocks=1, heads=2, ffn_channels=16, window_shape=(1, 4, 4), group_size=4)
    groups = model.partition(x)
    for g, (axis, shift) in zip(groups, [("x", (0, 0, 0)), ("x", (0, 2, 2)), ("y", (0, 0, 0)), ("y", (0, 2, 2))],
                                strict=True):
        ref = flat_groups(coords, (1, 6, 6), (1, 4, 4), shift, 4, ORDERS[axis], 1)
        assert torch.equal(g.index, ref.index)
    assert not torch.equal(groups[0].index, groups[1].index)
