"""DSVT and FlatFormer as their authors released them: the options that rebuild the released networks
(parameter counts against independent counts of the released definitions, the extra residual norms, the
position MLPs, the initialisation)."""
from __future__ import annotations

import math

import pytest
import torch
from conftest import random_sparse
from torch import nn

from pc3d.models.backbones3d.attention import SlotAttention
from pc3d.models.backbones3d.dsvt import DSVT, DSVTBlock
from pc3d.sparse.window import dynamic_sets, relative_to_window_centre

RELEASED = dict(residual_norms=True, layer_pos_embeds=True, planar_pos=True, xavier_init=True)


def released_dsvt_parameters(c: int, ffn: int, blocks_per_stage: list[int], pos_dims: list[int],
                             pool_volumes: list[int]) -> int:
    """Parameters of OpenPCDet's DSVT backbone (pcdet/models/backbones_3d/dsvt.py with its input layer), counted
    from its definition: per block two DSVT_EncoderLayers (nn.MultiheadAttention, linear1 / linear2, norm1 / norm2
    in SetAttention, one more LayerNorm around it), a residual LayerNorm, and two PositionEmbeddingLearned (Linear,
    BatchNorm1d, ReLU, Linear) of the stage's input_dim; between stages a Stage_ReductionAtt_Block."""
    mha = 4 * c * c + 4 * c
    layer = mha + (c * ffn + ffn) + (ffn * c + c) + 2 * (2 * c) + 2 * c
    total = 0
    for blocks, dims in zip(blocks_per_stage, pos_dims, strict=True):
        pos = (dims * c + c) + 2 * c + (c * c + c)
        total += blocks * (2 * layer + 2 * c + 2 * pos)
    for volume in pool_volumes:
        total += mha + 2 * c + volume * c
    return total


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_the_released_dsvt_pillar_has_the_released_parameter_count():
    net = DSVT(192, **RELEASED)  # the pillar defaults: one stage, 4 blocks, 192 channels, FFN 384
    assert _count(net) == released_dsvt_parameters(192, 384, [4], [2], []) == 2_684_928
    assert _count(DSVT(192)) < _count(net)  # pc3d's own: one position MLP a block, no extra norms


def test_the_released_dsvt_voxel_has_the_released_parameter_count():
    windows = [(32, 12, 12), (8, 12, 12), (2, 12, 12), (1, 12, 12)]
    net = DSVT(192, channels=[192] * 4, blocks=[1] * 4, set_size=[48] * 4, window_shape=windows,
               shifted_window_shape=[(z, 24, 24) for z, _, _ in windows], shift=[(0, 6, 6)] * 4,
               pool_z=[4, 4, 2], ffn_channels=[384] * 4, **RELEASED)
    # the released input layer embeds 3D offsets while the stage's grid is more than one cell tall
    assert _count(net) == released_dsvt_parameters(192, 384, [1] * 4, [3, 3, 3, 2], [4, 4, 2])


class _Times(nn.Module):
    """A stand-in attention layer: x -> factor * x + pos, recording the position it was given."""

    def __init__(self, factor: float):
        super().__init__()
        self.factor, self.pos = factor, None

    def forward(self, x, pos, slots):
        self.pos = pos
        return self.factor * x + pos


def _block(**options) -> tuple[DSVTBlock, torch.Tensor, torch.Tensor, tuple]:
    torch.manual_seed(0)
    x = random_sparse((1, 12, 12), 8, batch=1, occupancy=0.3, seed=2)
    block = DSVTBlock(8, 2, 16, **options).eval()
    block.layers = nn.ModuleList([_Times(2.0), _Times(-3.0)])
    for norm in [*(block.layer_norms or []), *([block.block_norm] if block.block_norm is not None else [])]:
        nn.init.uniform_(norm.weight, 0.5, 1.5)
        nn.init.uniform_(norm.bias, -0.5, 0.5)
    offsets = relative_to_window_centre(x.coords, (1, 4, 4), (0, 0, 0))
    sets = tuple(dynamic_sets(x.coords, x.spatial_shape, (1, 4, 4), (0, 0, 0), 4, axes) for axes in
                 ((1, 2, 0), (2, 1, 0)))
    return block, x.feats, offsets, sets


def test_residual_norms_wrap_each_layer_and_the_block():
    block, x, offsets, sets = _block(residual_norms=True)
    with torch.no_grad():
        got = block(x, offsets, sets)
        pos = block.pos_embed(offsets)
        h = block.layer_norms[0](x + (2.0 * x + pos))
        h = block.layer_norms[1](h + (-3.0 * h + pos))
        torch.testing.assert_close(got, block.block_norm(h + x))
        plain, x, offsets, sets = _block()
        torch.testing.assert_close(plain(x, offsets, sets), -3.0 * (2.0 * x + pos) + pos)  # no extra norms


def test_layer_pos_embeds_give_each_layer_its_own_mlp_on_the_blocks_offsets():
    block, x, offsets, sets = _block(layer_pos_embeds=True)
    with torch.no_grad():
        block(x, offsets, sets)
        torch.testing.assert_close(block.layers[0].pos, block.pos_embed(offsets))
        torch.testing.assert_close(block.layers[1].pos, block.second_pos_embed(offsets))
        assert not torch.allclose(block.layers[0].pos, block.layers[1].pos)


@pytest.mark.parametrize("window, dims", [((1, 12, 12), 2), ((2, 12, 12), 3)])
def test_planar_pos_embeds_y_and_x_in_windows_one_cell_tall(window, dims):
    net = DSVT(8, channels=[8], blocks=[1], set_size=[4], window_shape=[window], shifted_window_shape=[window],
               shift=[(0, 0, 0)], heads=2, ffn_channels=[16], planar_pos=True)
    block = net.stages[0].blocks[0]
    assert block.pos_embed[0].in_features == dims
    offsets = torch.tensor([[0.5, -1.5, 2.5]])
    block.layers = nn.ModuleList([_Times(1.0), _Times(1.0)])
    block.eval()
    with torch.no_grad():
        block(torch.zeros(1, 8), offsets, (None, None))
        torch.testing.assert_close(block.layers[0].pos, block.pos_embed(offsets[:, 3 - dims:]))


@torch.no_grad()
def test_xavier_init_draws_the_released_bounds():
    torch.manual_seed(0)
    c = 192
    net = DSVT(c, xavier_init=True)
    attn = next(m for m in net.modules() if isinstance(m, SlotAttention))
    qkv = torch.cat([attn.qk.weight, attn.v.weight]).flatten()
    bound = math.sqrt(6 / (4 * c))  # nn.MultiheadAttention's [3C, C] in_proj
    assert qkv.abs().max() <= bound and float(qkv.std()) == pytest.approx(bound / math.sqrt(3), rel=0.02)
    assert not attn.qk.bias.any() and not attn.v.bias.any() and not attn.out.bias.any()
    ffn = net.stages[0].blocks[0].layers[0].ffn[0].weight  # [384, 192]
    xavier = math.sqrt(6 / (c + 384))
    assert ffn.abs().max() <= xavier and float(ffn.std()) == pytest.approx(xavier / math.sqrt(3), rel=0.02)
    default = DSVT(c).stages[0].blocks[0].layers[0].ffn[0].weight  # nn.Linear's: bound 1 / sqrt(fan_in)
    assert float(default.std()) == pytest.approx(1 / math.sqrt(c) / math.sqrt(3), rel=0.02)


def released_flat_order(coords: torch.Tensor, sparse_xy: tuple[int, int], window_xy: tuple[int, int], shifted: bool,
                        order: str) -> torch.Tensor:
    """The released FlatFormer's sort of pillars (b, 0, y, x) for its "x" / "y" order (FlattenedWindowMapping and
    get_window_coors_shift, written out): the window key serpentine over (y1, x1) for "x" ((x1, y1) for "y"), the
    key inside a window serpentine over (x2, y2) ((y2, x2)), negated in odd window rows (columns). Window and
    inner strides are doubled as there, so the signed keys never overlap."""
    n, m = sparse_xy
    wx, wy = window_xy
    x, y = coords[:, 3].long(), coords[:, 2].long()
    if shifted:
        x, y = x + wx // 2, y + wy // 2
    x1, y1, x2, y2 = x // wx, y // wy, x % wx, y % wy
    n1, m1 = 2 * (math.ceil(n / wx) + 1), 2 * (math.ceil(m / wy) + 1)
    n2, m2 = 2 * wx, 2 * wy
    sign = lambda v: 1 - 2 * (v % 2)  # noqa: E731  (-1) ** v
    if order == "x":
        key = (n1 * y1 + sign(y1) * x1) * n2 * m2 + sign(y1) * (m2 * x2 + sign(x2) * y2)
    else:
        key = (m1 * x1 + sign(x1) * y1) * m2 * n2 + sign(x1) * (n2 * y2 + sign(y2) * x2)
    # the released code adds batch x n m 10, enough on its 468 x 468 grid; on small grids it is not, so here
    # the batch is the most significant key
    key = key + coords[:, 0].long() * (key.max() - key.min() + 1)
    return torch.argsort(key)


@pytest.mark.parametrize("order, shifted", [("x", False), ("x", True), ("y", False), ("y", True)])
def test_the_released_path_sorts_pillars_as_the_released_code(order, shifted):
    from pc3d.models.backbones3d.flatformer import ORDERS
    from pc3d.sparse.window import flat_groups

    ny, nx, w = 23, 31, 5
    x = random_sparse((1, ny, nx), 4, batch=2, occupancy=0.4, seed=3)
    shift = (0, w // 2, w // 2) if shifted else (0, 0, 0)
    want = released_flat_order(x.coords, (nx, ny), (w, w), shifted, order)
    groups = flat_groups(x.coords, x.spatial_shape, (1, w, w), shift, 1, ORDERS[order], 2, released_path=True)
    assert torch.equal(groups.index[:, 0], want)  # groups of one token: the sorted order itself
    pc3d_path = flat_groups(x.coords, x.spatial_shape, (1, w, w), shift, 1, ORDERS[order], 2)
    assert not torch.equal(pc3d_path.index[:, 0], want)


def test_the_released_flatformer_draws_xavier_weights():
    from pc3d.models.backbones3d.flatformer import FlatFormer

    torch.manual_seed(0)
    net = FlatFormer(128, 128, xavier_init=True, released_path=True)
    fc1 = net.layers[0].ffn[0].weight.detach()  # [256, 128]
    bound = math.sqrt(6 / (128 + 256))
    assert float(fc1.abs().max()) <= bound and float(fc1.std()) == pytest.approx(bound / math.sqrt(3), rel=0.03)
    assert net.released_path
