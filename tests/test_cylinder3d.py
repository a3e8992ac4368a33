"""Cylinder3D (pc3d.models.backbones3d.cylinder3d, pc3d.models.vfe.cylinder_vfe): the released network's parameter
count, its kernels and strides on pc3d's (z, phi, rho) axes, LiM3D's separable variant, the recon block's gate, the
point encoder against a hand computation, and a segmentor that trains through both."""
from __future__ import annotations

import math
from functools import partial

import numpy as np
import pytest
import torch
from torch import nn

from pc3d.data.batch import Collate
from pc3d.errors import ConfigError
from pc3d.models.backbones3d.cylinder3d import AsymmetricUNet, ReconBlock, _Units
from pc3d.models.backbones3d.dsconv import SparseDepthwiseSeparableConv
from pc3d.models.segmentors.sparse_segmentor import SparseSegmentor
from pc3d.models.vfe.cylinder_vfe import CylinderPointEncoder
from pc3d.sparse import SparseConvolution, SparseSequential, SparseTensor
from pc3d.voxel import CylindricalVoxelizer

GRID = dict(grid_size=(48, 36, 8), rho_range=(0.0, 24.0), z_range=(-4.0, 2.0))


def released_parameters(c_in: int, h: int) -> int:
    """Cylinder3D's asymmetric U-Net (spconv, bias-free convs; the logits conv left out), counted from its
    definition: "1x3" / "3x1" kernels hold 9 weights, "3x3" 27, the recon block's three 1D kernels 3."""
    def res(cin, cout):  # two branches of two convs, four batch norms
        return 9 * (2 * cin * cout + 2 * cout * cout) + 4 * 2 * cout

    def up(cin, cout):  # SubM 3^3 + norm, inverse conv 3^3, three 1x3 convs + norms
        return 27 * cin * cout + 2 * cout + 27 * cout * cout + 3 * (9 * cout * cout + 2 * cout)

    widths = [h, 2 * h, 4 * h, 8 * h, 16 * h]
    total = res(c_in, h)
    total += sum(res(widths[i], widths[i + 1]) + 27 * widths[i + 1] ** 2 for i in range(4))  # + each pool conv
    total += up(16 * h, 16 * h) + up(16 * h, 8 * h) + up(8 * h, 4 * h) + up(4 * h, 2 * h)
    return total + 3 * (3 * (2 * h) ** 2 + 2 * 2 * h)


def test_dense_network_has_cylinder3ds_parameters():
    net = AsymmetricUNet(16, 32)
    assert sum(p.numel() for p in net.parameters()) == released_parameters(16, 32) and net.out_channels == 128


def test_kernels_and_strides_follow_cylinder3d_on_pcd3s_axes():
    net = AsymmetricUNet(16, 8)
    # context block: shortcut "1x3" (rho 1, phi 3, z 3) first, branch "3x1" (rho 3, phi 1, z 3); pc3d: (z, phi, rho)
    assert net.context.shortcut[0][0].kernel_size == (3, 3, 1) and net.context.branch[0][0].kernel_size == (3, 1, 3)
    assert net.down[0].res.shortcut[0][0].kernel_size == (3, 1, 3)  # down blocks: "3x1" first
    assert [d.pool.stride for d in net.down] == [(2, 2, 2), (2, 2, 2), (1, 2, 2), (1, 2, 2)]  # z pooled twice
    assert [b[0].kernel_size for b in net.recon.branches] == [(1, 1, 3), (1, 3, 1), (3, 1, 1)]  # rho, phi, z
    assert all(u.up.kernel_size == (3, 3, 3) and u.up.inverse for u in net.up)
    for block in (net.context, *[d.res for d in net.down]):  # each branch: the same kernel twice
        for branch in (block.shortcut, block.branch):
            assert branch[0][0].kernel_size == branch[1][0].kernel_size
    assert all(u.trans[0].kernel_size == (3, 3, 3) for u in net.up)
    assert all(c[0].kernel_size == (3, 3, 1) for u in net.up for c in u.convs)  # up blocks: three "1x3"
    units = [m for m in net.modules() if isinstance(m, SparseSequential) and len(m) == 3
             and isinstance(m[0], SparseConvolution) and m[0].subm and not isinstance(m[2], nn.Sigmoid)]
    assert units and all(isinstance(m[1], nn.LeakyReLU) and isinstance(m[2], nn.BatchNorm1d) for m in units)


def test_separable_network_separates_the_submanifold_convs_only():
    net = AsymmetricUNet(16, 8, separable=True)
    convs = [m for m in net.modules() if isinstance(m, SparseConvolution)]
    separable = [m for m in net.modules() if isinstance(m, SparseDepthwiseSeparableConv)]
    assert all(m.groups == m.in_channels for m in convs if m.subm)  # every SubM conv is a depthwise one
    assert all(m.groups == 1 for m in convs if not m.subm) and len(separable) == sum(m.subm for m in convs)
    assert sum(p.numel() for p in net.parameters()) < released_parameters(16, 8) / 2


@pytest.mark.parametrize("separable", [False, True])
def test_every_parameter_gets_a_gradient_and_the_output_stays_on_the_input_sites(separable):
    torch.manual_seed(0)
    n = 2000
    coords = torch.unique(torch.stack([torch.randint(0, 2, (n,)), torch.randint(0, 16, (n,)),
                                       torch.randint(0, 64, (n,)), torch.randint(0, 64, (n,))], 1), dim=0).int()
    x = SparseTensor(torch.randn(len(coords), 16), coords, (16, 64, 64), 2)
    net = AsymmetricUNet(16, 4, separable=separable)
    y = net(x)
    assert torch.equal(y.coords, x.coords) and y.feats.shape == (len(coords), 16)
    (y.feats ** 2).sum().backward()
    assert not [name for name, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]


def test_recon_block_gates_its_input_by_the_sum_of_three_sigmoids():
    block = ReconBlock(2, "r", _Units(False, 0.1))
    for p in block.parameters():
        if p.ndim > 1:
            nn.init.zeros_(p)  # each branch: conv 0 -> batch norm 0 -> sigmoid 0.5
    x = SparseTensor(torch.tensor([[1.0, -2.0], [3.0, 4.0]]), torch.tensor([[0, 0, 0, 0], [0, 0, 0, 4]]).int(),
                     (1, 1, 8), 1)
    torch.testing.assert_close(block.train()(x).feats, 1.5 * x.feats)


def test_point_encoder_features_and_voxel_maxima():
    torch.manual_seed(0)
    points = np.array([[3.0, 4.0, -1.0, 0.5], [3.01, 4.01, -0.99, 0.7], [-10.0, 0.5, 1.0, 0.1],
                       [0.0, -20.0, 0.0, 0.9]], np.float32)
    batch = Collate(CylindricalVoxelizer(**GRID))([{"frame_id": "a", "points": points}])
    encoder = CylinderPointEncoder(4, **GRID, widths=(8, 6), out_channels=5).eval()
    coords = batch["voxel_coords"][batch["point_to_voxel"]]
    feats = encoder.point_features(batch["points"], coords)
    rho, phi = math.hypot(3.0, 4.0), math.atan2(4.0, 3.0)
    cell = ((rho - 0.0) // 0.5, (phi + math.pi) // (2 * math.pi / 36), (-1.0 + 4.0) // 0.75)
    centre = (0.5 * (cell[0] + 0.5), -math.pi + 2 * math.pi / 36 * (cell[1] + 0.5), -4.0 + 0.75 * (cell[2] + 0.5))
    expected = [rho - centre[0], phi - centre[1], -1.0 - centre[2], rho, phi, -1.0, 3.0, 4.0, 0.5]
    np.testing.assert_allclose(feats[0].numpy(), expected, rtol=1e-5, atol=1e-5)
    assert coords[0].tolist() == [0, cell[2], cell[1], cell[0]]  # (b, z, phi, rho)
    with torch.no_grad():
        x = encoder(batch)
        point = encoder.mlp(feats)
    assert len(x.feats) == 3  # the first two points share a voxel
    voxel = batch["point_to_voxel"]
    for v in range(3):
        torch.testing.assert_close(x.feats[v], encoder.compress(point[voxel == v].amax(0)))


def test_segmentor_trains_through_the_encoder_and_refuses_a_point_branch():
    rng = np.random.default_rng(0)
    xyz = rng.uniform([-20, -20, -3], [20, 20, 1], (3000, 3))
    points = np.column_stack([xyz, rng.uniform(0, 1, 3000)]).astype(np.float32)
    labels = (xyz[:, 2] > -1).astype(np.int64) + 1
    batch = Collate(CylindricalVoxelizer(**GRID))([{"frame_id": "a", "points": points, "point_labels": labels}])
    encoder = partial(CylinderPointEncoder, **GRID, widths=(8, 8), out_channels=4)
    model = SparseSegmentor(4, partial(AsymmetricUNet, hidden=4), 3, ignore_index=0, voxel_encoder=encoder)
    out = model.train()(batch)
    out["loss"].backward()
    assert not [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    with torch.no_grad():
        pred = model.eval()(batch)[0]
    assert pred["pred_labels"].shape == (3000,)
    with pytest.raises(ConfigError, match="point_branch"):
        SparseSegmentor(4, partial(AsymmetricUNet, hidden=4), 3, point_branch=8, voxel_encoder=encoder)


def test_mean_teacher_refuses_lasermix_and_mirrored_teachers_around_a_voxel_encoder():
    from pc3d.models.semi import MeanTeacherSegmentor

    encoder = partial(CylinderPointEncoder, **GRID, widths=(8,), out_channels=4)
    student = SparseSegmentor(4, partial(AsymmetricUNet, hidden=4), 3, ignore_index=0, voxel_encoder=encoder)
    MeanTeacherSegmentor(student)  # pseudo labels alone: fine
    for options in ({"mix_weight": 1.0}, {"teacher_flips": True, "point_cloud_range": [-8, -8, -2, 8, 8, 2]}):
        with pytest.raises(ConfigError, match="voxel_encoder"):
            MeanTeacherSegmentor(student, **options)
