"""The native engine against spconv 2.x (CPU, ConvAlgo.Native) with shared weights, in float32."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from conftest import random_sparse, sample_path
from torch import nn

import pc3d.sparse as sp
from pc3d.errors import BackendUnavailableError, SparseTensorError
from pc3d.sparse import SparseTensor
from pc3d.voxel import grid_sample

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # spconv 2.3.6 warns about torch.cuda.amp on import
    pytest.importorskip("spconv.pytorch")

SHAPE = (7, 9, 11)
RTOL = 1e-4  # relative to the largest magnitude of the reference


def random_tensor(shape=SHAPE, channels=4, *, batch=2, occupancy=0.3, empty=None, seed=0):
    """float32 SparseTensor on shuffled random sites with features requiring grad."""
    x = random_sparse(shape, channels, batch=batch, occupancy=occupancy, empty=empty, seed=seed)
    x.feats.requires_grad_()
    return x


def clone_input(x):
    """The same sites and features as a fresh leaf (so each backend gets its own map cache and grad)."""
    return SparseTensor(x.feats.detach().clone().requires_grad_(), x.coords.clone(), x.spatial_shape,
                        x.batch_size)


def sorted_rows(y):
    """(coords, feats) with rows in lexicographic order of the coordinates."""
    order = torch.from_numpy(np.lexsort(y.coords.numpy().T[::-1]).copy())
    return y.coords[order], y.feats[order]


def assert_rel_close(got, ref, what):
    err, scale = (got - ref).abs().max().item(), ref.abs().max().item()
    assert err <= RTOL * scale, f"{what}: max abs error {err:.3g} vs max abs value {scale:.3g}"


def run_both(make, x, same_order):
    """Run `make(backend)` natively and under spconv with one state_dict; compare outputs and grads."""
    torch.manual_seed(0)
    native = make("native")
    twin = make("spconv")
    twin.load_state_dict(native.state_dict())
    outs = []
    for net in (native, twin):
        xi = clone_input(x)
        y = net(xi)
        (y.feats.square().sum() + y.feats.sum()).backward()  # does not depend on the row order
        outs.append((y, xi.feats.grad))
    (y_nat, gx_nat), (y_sp, gx_sp) = outs
    assert y_nat.spatial_shape == y_sp.spatial_shape and len(y_nat) == len(y_sp)
    if same_order:
        assert torch.equal(y_nat.coords, y_sp.coords)
        c_nat, f_nat, c_sp, f_sp = y_nat.coords, y_nat.feats, y_sp.coords, y_sp.feats
    else:
        (c_nat, f_nat), (c_sp, f_sp) = sorted_rows(y_nat), sorted_rows(y_sp)
    assert torch.equal(c_nat, c_sp), "output sites differ"
    assert_rel_close(f_nat.detach(), f_sp.detach(), "output features")
    assert_rel_close(gx_nat, gx_sp, "input feature gradient")
    named_sp = dict(twin.named_parameters())
    for name, p in native.named_parameters():
        assert_rel_close(p.grad, named_sp[name].grad, f"gradient of {name}")
    return y_nat, y_sp


def test_subm_matches_spconv():
    """SubM 3D conv: same sites and row order, features and gradients as spconv."""
    run_both(lambda b: sp.SubMConv3d(4, 6, 3, backend=b), random_tensor(empty=1), same_order=True)


@pytest.mark.parametrize("kernel,dilation", [((3, 1, 3), 1), (3, 2)])
def test_subm_anisotropic_and_dilated_match_spconv(kernel, dilation):
    """SubM 3D conv with an anisotropic kernel or a dilation matches spconv."""
    run_both(lambda b: sp.SubMConv3d(4, 6, kernel, dilation=dilation, backend=b), random_tensor(),
             same_order=True)


@pytest.mark.parametrize("kernel,stride,padding", [(3, 2, 1), (2, 2, 0), (3, (1, 2, 2), (0, 1, 1))])
def test_strided_conv_matches_spconv(kernel, stride, padding):
    """Strided 3D conv: same output site set, shape, features (rows sorted) and gradients as spconv."""
    y_nat, y_sp = run_both(lambda b: sp.SparseConv3d(4, 6, kernel, stride, padding, backend=b),
                           random_tensor(empty=0), same_order=False)
    assert y_nat.stride == y_sp.stride


@pytest.mark.parametrize("kernel,stride,padding,output_padding", [(3, 2, 1, 1), (2, 2, 0, 1), (3, 2, 1, 0)])
def test_transposed_conv_matches_spconv_with_its_output_padding(kernel, stride, padding, output_padding):
    """Transposed 3D conv: spconv's SparseConvTranspose3d drops output_padding (a smaller grid, fewer sites);
    the twin is built so that both backends give one grid, sites and values."""
    y_nat, y_sp = run_both(lambda b: sp.SparseConvTranspose3d(4, 6, kernel, stride, padding,
                                                              output_padding=output_padding, backend=b),
                           random_tensor(), same_order=False)
    assert y_nat.spatial_shape == y_sp.spatial_shape


def test_dilated_transposed_conv_is_refused_on_spconv():
    """spconv sizes a dilated transposed conv's grid without the dilation: refused rather than losing sites."""
    with pytest.raises(BackendUnavailableError, match="dilated transposed"):
        sp.SparseConvTranspose3d(4, 6, 3, 2, 1, dilation=2, backend="spconv")(random_tensor())


def test_inverse_conv_matches_spconv():
    """Strided conv + inverse conv paired by indice_key: restores the input rows exactly as spconv."""
    def make(b):
        return sp.SparseSequential(sp.SparseConv3d(4, 6, 3, 2, 1, indice_key="down", backend=b),
                                   nn.ReLU(), sp.SparseInverseConv3d(6, 4, 3, indice_key="down", backend=b))

    x = random_tensor()
    y_nat, _ = run_both(make, x, same_order=True)
    assert torch.equal(y_nat.coords, x.coords)


def test_one_subm_key_over_several_kernels_matches_spconv():
    """SubM layers sharing an indice_key with other kernels or dilations (a 7^3 stem before 3^3 blocks, as
    SCTN's U-Net): spconv keeps one pair list per key, so each kernel gets a key of its own there."""
    def make(b):
        return sp.SparseSequential(sp.SubMConv3d(4, 6, 5, indice_key="subm0", backend=b), nn.ReLU(),
                                   sp.SubMConv3d(6, 6, 3, indice_key="subm0", backend=b), nn.ReLU(),
                                   sp.SubMConv3d(6, 6, 3, dilation=2, indice_key="subm0", backend=b), nn.ReLU(),
                                   sp.SubMConv3d(6, 6, 3, indice_key="subm0", backend=b))

    run_both(make, random_tensor(), same_order=True)


def test_auto_runs_grouped_convs_natively_between_spconv_layers():
    """spconv 2.3 has no grouped conv: on CUDA, 'auto' runs a separable block's depthwise conv on the native
    engine and the rest on spconv. That mix (the same split, forced here on the CPU) equals the native engine
    throughout; spconv asked for by name for a depthwise conv says it has none."""
    assert sp.backend.resolve("auto", "cuda") == "spconv"
    assert sp.backend.resolve("auto", "cuda", grouped=True) == "native"

    def make(b):
        return sp.SparseSequential(
            sp.SubMConv3d(4, 8, 3, indice_key="subm1", backend=b), nn.ReLU(),
            sp.SubMConv3d(8, 8, 3, groups=8, bias=False, indice_key="subm1", backend="native"),
            sp.SubMConv3d(8, 8, 1, bias=False, backend=b), nn.ReLU(),
            sp.SparseConv3d(8, 8, 3, 2, 1, indice_key="down1", backend=b), nn.ReLU(),
            sp.SubMConv3d(8, 8, 3, groups=8, bias=False, backend="native"),
            sp.SparseInverseConv3d(8, 4, 3, indice_key="down1", backend=b))

    x = random_tensor()
    y_nat, _ = run_both(make, x, same_order=True)
    assert torch.equal(y_nat.coords, x.coords)
    with pytest.raises(BackendUnavailableError, match="depthwise"):
        sp.SubMConv3d(4, 4, 3, groups=4, backend="spconv")(clone_input(x))


def test_floored_site_conv_and_its_inverse_match_the_native_engine_on_spconv():
    """generative=False on spconv: its full output cut to the floored sites, the inverse conv run on it with
    zeros elsewhere; sites, features and gradients equal the native engine's."""
    def make(b):
        return sp.SparseSequential(sp.SparseConv3d(4, 6, 3, 2, 1, indice_key="down", backend=b, generative=False),
                                   nn.ReLU(), sp.SubMConv3d(6, 6, 3, backend=b),
                                   sp.SparseInverseConv3d(6, 4, 3, indice_key="down", backend=b))

    x = random_tensor()
    y_nat, _ = run_both(make, x, same_order=True)
    assert torch.equal(y_nat.coords, x.coords)


def test_max_pool_matches_spconv_on_positive_features():
    """Sparse max pooling k3 s2 p1 matches spconv on post-ReLU-like (positive) features.

    spconv's max pool returns 0 where every input of a window is negative (spconv issue #754);
    pc3d takes the maximum over the active inputs, so only positive features are comparable.
    """
    x = random_tensor()
    x = SparseTensor(x.feats.detach().abs() + 0.1, x.coords, x.spatial_shape, x.batch_size)
    run_both(lambda b: sp.SparseMaxPool3d(3, 2, 1, backend=b), x, same_order=False)


def backbone(backend):
    """A small VoxelBackBone8x-like stack: SubM, strided convs, BatchNorm1d and ReLU."""
    def block(conv):
        return [conv, nn.BatchNorm1d(conv.out_channels, eps=1e-3, momentum=0.01), nn.ReLU()]

    return sp.SparseSequential(
        *block(sp.SubMConv3d(4, 16, 3, padding=1, bias=False, indice_key="subm1", backend=backend)),
        *block(sp.SubMConv3d(16, 16, 3, padding=1, bias=False, indice_key="subm1", backend=backend)),
        *block(sp.SparseConv3d(16, 16, 3, 2, 1, bias=False, indice_key="spconv2", backend=backend)),
        *block(sp.SubMConv3d(16, 16, 3, padding=1, bias=False, indice_key="subm2", backend=backend)),
        *block(sp.SparseConv3d(16, 16, 3, 2, (0, 1, 1), bias=False, indice_key="spconv3", backend=backend)),
        *block(sp.SubMConv3d(16, 16, 3, padding=1, bias=False, indice_key="subm3", backend=backend)),
    )


def test_backbone_stack_matches_spconv():
    """A VoxelBackBone8x-like stack in training mode matches spconv's outputs and every gradient."""
    x = random_tensor((11, 16, 16), occupancy=0.25, empty=None, seed=3)
    y_nat, _ = run_both(backbone, x, same_order=False)
    assert y_nat.spatial_shape == (2, 4, 4) and y_nat.stride == (4, 4, 4)


def test_real_scan_subm_strided_inverse_match_spconv():
    """On the real 360-degree scan (0.4 m voxels, 16 channels) SubM + strided + inverse match spconv."""
    points = np.load(sample_path("scan360/benchmark-pc.npz"))["pc"]
    coords, spatial_shape, _, _ = grid_sample(points, 0.4)
    assert len(coords) > 10_000
    feats = torch.from_numpy(np.random.default_rng(0).standard_normal((len(coords), 16)).astype(np.float32))
    x = SparseTensor(feats, torch.from_numpy(coords), spatial_shape, 1)

    def make(b):
        return sp.SparseSequential(
            sp.SubMConv3d(16, 16, 3, indice_key="subm1", backend=b), nn.ReLU(),
            sp.SparseConv3d(16, 16, 3, 2, 1, indice_key="down1", backend=b), nn.ReLU(),
            sp.SubMConv3d(16, 16, 3, indice_key="subm2", backend=b), nn.ReLU(),
            sp.SparseInverseConv3d(16, 16, 3, indice_key="down1", backend=b))

    y_nat, _ = run_both(make, x, same_order=True)
    assert torch.equal(y_nat.coords, x.coords)


SUBM_KEY_ON_SEVERAL_SITES = {  # layers with one SubM key on two sets of sites
    "two levels and back": (lambda b: [
        sp.SubMConv3d(4, 6, 3, indice_key="subm1", backend=b), nn.ReLU(),
        sp.SubMConv3d(6, 6, 3, indice_key="subm1", backend=b), nn.ReLU(),
        sp.SparseConv3d(6, 8, 3, 2, 1, indice_key="down1", backend=b), nn.ReLU(),
        sp.SubMConv3d(8, 8, 3, indice_key="subm1", backend=b), nn.ReLU(),
        sp.SubMConv3d(8, 8, 3, indice_key="subm1", backend=b), nn.ReLU(),
        sp.SparseInverseConv3d(8, 6, 3, indice_key="down1", backend=b), nn.ReLU(),
        sp.SubMConv3d(6, 4, 3, indice_key="subm1", backend=b)]),  # back on the first sites: their pairs
    "other sites of one grid": (lambda b: [
        sp.SubMConv3d(4, 6, 3, indice_key="subm1", backend=b), nn.ReLU(),
        sp.SparseConv3d(6, 6, 3, 1, 1, backend=b), nn.ReLU(),  # dilates the sites
        sp.SubMConv3d(6, 6, 3, indice_key="subm1", backend=b), nn.ReLU(),
        sp.SubMConv3d(6, 4, 3, indice_key="subm1", backend=b)]),
}


@pytest.mark.parametrize("case", list(SUBM_KEY_ON_SEVERAL_SITES))
def test_subm_key_on_several_sets_of_sites_matches_the_native_engine_on_spconv(case):
    """A SubM indice_key reused on other sites (another level of a U-Net, or sites a conv dilated): the native
    engine builds a map per set of sites; spconv keeps one pair list per key, so the spconv backend keys a SubM
    conv's pairs by its sites too. Outputs and gradients equal the native engine's, and SubM convs on one set of
    sites still share one spconv pair list."""
    layers = SUBM_KEY_ON_SEVERAL_SITES[case]
    x = random_tensor()
    back = case.startswith("two levels")  # the inverse conv restores the input rows; else rows are sorted
    y_nat, y_sp = run_both(lambda b: sp.SparseSequential(*layers(b)), x, same_order=back)
    if back:
        assert torch.equal(y_nat.coords, x.coords)
    subm = {key: datas for key, datas in y_sp.spconv_tensor.indice_dict.items() if datas.is_subm}
    assert sorted(subm) == ["subm1:k3x3x3:d1x1x1", "subm1:k3x3x3:d1x1x1#1"]  # one pair list per set of sites
    assert torch.equal(subm["subm1:k3x3x3:d1x1x1"].indices, x.coords)


KEY_MISUSE = {  # layers; what the spconv backend says (spconv itself: a raw ValueError or AssertionError)
    "strided key taken twice": (lambda b: [sp.SparseConv3d(4, 6, 3, 2, 1, indice_key="down", backend=b),
                                           sp.SparseConv3d(6, 6, 3, 2, 1, indice_key="down", backend=b)],
                                r"indice_key 'down': a second strided"),
    "inverse conv without its pair": (lambda b: [sp.SparseInverseConv3d(4, 6, 3, indice_key="down", backend=b)],
                                      r"no strided conv with indice_key 'down' produced these sites"),
    "pool key taken twice": (lambda b: [sp.SparseMaxPool3d(2, indice_key="pool", backend=b),
                                        sp.SparseMaxPool3d(2, indice_key="pool", backend=b)],
                             r"indice_key 'pool': a pool takes the key"),
}


@pytest.mark.parametrize("case", list(KEY_MISUSE))
def test_indice_key_misuse_is_a_pc3d_error_naming_the_key_on_spconv(case):
    """spconv reuses the pairs stored under an indice_key after checking the grid shape and site count only
    (raw ValueError / AssertionError); the spconv backend checks the key first and says which it is. The native
    engine lets a later strided conv's key replace the earlier one: those run there; an inverse conv without its
    strided conv is its error too."""
    layers, message = KEY_MISUSE[case]
    x = random_tensor()
    if case.startswith("inverse"):
        with pytest.raises(SparseTensorError, match=message):
            sp.SparseSequential(*layers("native"))(clone_input(x))
    else:
        assert len(sp.SparseSequential(*layers("native"))(clone_input(x))) > 0
    with pytest.raises(SparseTensorError, match=message):
        sp.SparseSequential(*layers("spconv"))(clone_input(x))
