"""The native sparse convolutions and pools against torch's dense ops and brute-force loops (float64)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import pc3d.sparse as sp
from pc3d.errors import ConfigError
from pc3d.sparse import SparseTensor

CONV = {2: F.conv2d, 3: F.conv3d}
CONV_T = {2: F.conv_transpose2d, 3: F.conv_transpose3d}
MAX_POOL = {2: F.max_pool2d, 3: F.max_pool3d}
TOL = {"rtol": 1e-10, "atol": 1e-10}


# ----------------------------------------------------------------------------------------- helpers
def random_tensor(shape, channels=4, *, batch=2, occupancy=0.3, empty=None, seed=0, shuffle=True):
    """float64 SparseTensor on ~occupancy of a random grid; sample `empty` has no sites."""
    rng = np.random.default_rng(seed)
    mask = rng.random((batch, *shape)) < occupancy
    if empty is not None:
        mask[empty] = False
    coords = np.argwhere(mask).astype(np.int32)
    if shuffle:  # the engine must not rely on sorted input rows
        coords = coords[rng.permutation(len(coords))]
    feats = torch.from_numpy(rng.standard_normal((len(coords), channels)))
    return SparseTensor(feats, torch.from_numpy(coords), shape, batch)


def tup(v, ndim):
    return (v,) * ndim if isinstance(v, int) else tuple(v)


def at_sites(dense, coords):
    """Rows [N, C] of a dense [B, C, *S] tensor at int coords [N, 1 + D]."""
    return dense.movedim(1, -1)[tuple(coords.long().T)]


def occupancy(x):
    """Dense float64 mask [B, 1, *S] of the active sites of x."""
    mask = torch.zeros((x.batch_size, 1, *x.spatial_shape), dtype=torch.float64)
    c = x.coords.long()
    mask[(c[:, 0], 0, *c[:, 1:].T)] = 1
    return mask


def site_set(coords):
    return {tuple(c) for c in coords.tolist()}


def positive_sites(dense_mask):
    """Coordinates (b, *p) where a dense [B, 1, *S] count is positive."""
    return {(c[0], *c[2:]) for c in (dense_mask > 0.5).nonzero().tolist()}


def assert_sorted_rows(coords):
    keys = [tuple(c) for c in coords.tolist()]
    assert keys == sorted(keys), "output coordinates are not sorted lexicographically"


def brute_pairs(x, kernel, stride, padding, dilation):
    """Strided-conv pairs by a loop: ({output coord: [(input row, kernel offset tuple)]}, out shape)."""
    ndim = x.ndim
    out_shape = tuple((s + 2 * p - d * (k - 1) - 1) // st + 1
                      for s, k, st, p, d in zip(x.spatial_shape, kernel, stride, padding, dilation, strict=True))
    pairs = {}
    for row, c in enumerate(x.coords.tolist()):
        for off in itertools.product(*[range(k) for k in kernel]):
            t = [c[1 + a] + padding[a] - off[a] * dilation[a] for a in range(ndim)]
            if all(v >= 0 and v % stride[a] == 0 and v // stride[a] < out_shape[a] for a, v in enumerate(t)):
                key = (c[0], *(v // stride[a] for a, v in enumerate(t)))
                pairs.setdefault(key, []).append((row, off))
    return pairs, out_shape


def brute_conv(x, weight, bias, stride, padding, dilation):
    """Strided conv by a loop over sites and offsets: (sorted coords [M, 1 + D], feats [M, Cout])."""
    w, f = weight.detach().numpy(), x.feats.detach().numpy()
    pairs, _ = brute_pairs(x, weight.shape[1:-1], stride, padding, dilation)
    keys = sorted(pairs)
    feats = [bias + sum(w[(slice(None), *off)] @ f[row] for row, off in pairs[key]) for key in keys]
    return np.array(keys, np.int32).reshape(-1, 1 + x.ndim), np.array(feats).reshape(len(keys), -1)


def brute_subm(x, weight, bias, dilation):
    """Submanifold conv by a loop: output o reads o + (k - ksize // 2) * dilation through a dict."""
    w, f = weight.detach().numpy(), x.feats.detach().numpy()
    kernel = weight.shape[1:-1]
    index = {tuple(c): i for i, c in enumerate(x.coords.tolist())}
    out = np.tile(bias, (len(x), 1))
    for row, c in enumerate(x.coords.tolist()):
        for off in itertools.product(*[range(k) for k in kernel]):
            shifts = [(o - k // 2) * d for o, k, d in zip(off, kernel, dilation, strict=True)]
            q = (c[0], *(v + dv for v, dv in zip(c[1:], shifts, strict=True)))
            if q in index:
                out[row] += w[(slice(None), *off)] @ f[index[q]]
    return out


def dense_conv(x, module, stride, padding, dilation):
    """torch's dense conv of x.dense() with the module's weight (and bias and groups)."""
    w = module.weight.movedim(-1, 1)  # [Cout, *k, Cin_g] -> [Cout, Cin_g, *k]
    return CONV[x.ndim](x.dense(), w, module.bias, stride, padding, dilation, module.groups)


def mask_conv(x, kernel, stride, padding, dilation):
    """Number of active inputs in the receptive field of every dense output position."""
    ones = torch.ones((1, 1, *kernel), dtype=torch.float64)
    return CONV[x.ndim](occupancy(x), ones, None, stride, padding, dilation)


def gradcheck_module(module, x, wrt_weight=True):
    """gradcheck of module(x).feats w.r.t. x.feats and (optionally) the module's weight."""
    params = dict(module.named_parameters())

    def run(feats, *weight):
        p = {**params, "weight": weight[0]} if weight else params
        return torch.func.functional_call(module, p, (x.replace_feature(feats),)).feats

    inputs = [x.feats.detach().clone().requires_grad_()]
    if wrt_weight:
        inputs.append(module.weight.detach().clone().requires_grad_())
    assert torch.autograd.gradcheck(run, tuple(inputs), eps=1e-6, atol=1e-7)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def one_thread():
    """gradcheck makes thousands of tiny calls; one thread avoids parallel-launch latency on a busy
    machine and computes the same sums (a tiny problem is a single row block and wgrad task)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------------------ submanifold conv
SUBM_CASES = [  # (shape, cin, cout, kernel, dilation, groups, bias)
    ((13, 11), 4, 6, 3, 1, 1, True),
    ((7, 9, 11), 4, 6, 3, 1, 1, True),
    ((7, 9, 11), 4, 6, (3, 1, 1), 1, 1, True),
    ((7, 9, 11), 4, 6, (1, 3, 5), 1, 1, False),
    ((7, 9, 11), 4, 6, 3, 2, 1, True),
    ((7, 9, 11), 4, 6, 3, (1, 2, 1), 1, False),
    ((7, 9, 11), 4, 6, 3, 1, 2, True),
    ((13, 11), 4, 6, 3, 1, 2, False),
    ((7, 9, 11), 4, 4, 3, 1, 4, True),
    # output widths that are whole vectors take the register-blocked micro-kernel (8 float64 lanes)
    ((7, 9, 11), 8, 16, 3, 1, 1, True),
    ((7, 9, 11), 5, 24, 3, 2, 1, False),
    ((7, 9, 11), 16, 16, 3, 1, 2, True),
    ((13, 11), 16, 8, 3, 1, 1, False),
]


@pytest.mark.parametrize("shape,cin,cout,kernel,dilation,groups,bias", SUBM_CASES)
@pytest.mark.parametrize("empty,shuffle", [(None, True), (0, False)])
def test_subm_matches_dense_conv(shape, cin, cout, kernel, dilation, groups, bias, empty, shuffle):
    """SubM conv equals the dense conv (padding (k//2)*d) read off at the input sites."""
    ndim = len(shape)
    x = random_tensor(shape, cin, empty=empty, shuffle=shuffle)
    cls = {2: sp.SubMConv2d, 3: sp.SubMConv3d}[ndim]
    m = cls(cin, cout, kernel, dilation=dilation, groups=groups, bias=bias).double()
    y = m(x)
    k, d = tup(kernel, ndim), tup(dilation, ndim)
    assert y.coords is x.coords and y.spatial_shape == x.spatial_shape
    ref = dense_conv(x, m, 1, tuple(kk // 2 * dd for kk, dd in zip(k, d, strict=True)), d)
    torch.testing.assert_close(y.feats, at_sites(ref, x.coords), **TOL)


@pytest.mark.parametrize("cin,cout,groups", [(4, 16, 1), (16, 32, 1), (32, 16, 1), (32, 64, 2), (3, 48, 1),
                                             (64, 64, 1), (20, 32, 1), (64, 64, 64), (16, 112, 1), (32, 256, 2),
                                             (8, 8, 1), (16, 24, 1), (3, 40, 1), (64, 56, 1), (48, 48, 6),
                                             (16, 7, 1), (7, 20, 1), (6, 10, 2), (16, 100, 1)])
def test_float32_micro_kernel_matches_float64_reference(cin, cout, groups):
    """float32 against float64 at every kind of width (the micro-kernel paths; 64 groups of one: the
    per-channel kernels): forward, feature gradient and weight gradient (feature channels taken a few at a time, the
    rest in 4 / 2 / 1-channel calls: 4 at 64, 20 and 4 input channels, 2 + 1 at 3). Forward widths over 64
    take the kernel tiled at run time: 112 = 4 + 2 + 1 vectors, 128 per group two whole tiles. Widths of half
    vectors (8, 24, 40, 56, and 8 per group) run on 32-byte vectors, in both directions (the feature gradient
    of 16 -> 24 has 16 outputs, of 8 -> 8 eight). The other widths end in a masked vector: 7 (InsMOS's offset
    head; one 8-lane vector), 20 (16 + 4) and, as feature gradients, 7 and 6 (3 per group); 100 is a wide
    width of its own kernel (6 whole vectors + 4 lanes, two rows per call)."""
    x64 = random_tensor((9, 10, 11), cin, occupancy=0.4, seed=3)
    m = sp.SubMConv3d(cin, cout, 3, groups=groups).double()
    feats = x64.feats.clone().requires_grad_(True)
    y64 = m(x64.replace_feature(feats))
    y64.feats.square().sum().backward()
    grad_w64 = m.weight.grad.clone()
    m.zero_grad()
    feats32 = x64.feats.float().requires_grad_(True)
    y32 = m.float()(x64.replace_feature(feats32))
    y32.feats.square().sum().backward()
    torch.testing.assert_close(y32.feats.double(), y64.feats.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(feats32.grad.double(), feats.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(m.weight.grad.double(), grad_w64, rtol=1e-4, atol=1e-4 * grad_w64.abs().max().item())


# --------------------------------------------------------------------------------- strided conv
STRIDED_CASES = [  # (shape, kernel, stride, padding, dilation, groups)
    ((7, 9, 11), 3, 2, 1, 1, 1),
    ((7, 9, 11), 2, 2, 0, 1, 1),
    ((7, 9, 11), 3, (2, 1, 2), (0, 1, 1), 1, 1),
    ((7, 9, 11), (3, 1, 3), (1, 1, 2), (1, 0, 0), 1, 1),
    ((7, 9, 11), 3, 1, 2, 2, 1),
    ((7, 9, 11), 3, 2, 2, 2, 1),
    ((7, 9, 11), 3, 2, 1, 1, 2),
    ((7, 9, 11), 3, 2, 1, 1, 4),  # depthwise: the per-channel kernels over a table that is not symmetric
    ((13, 11), 3, 2, 1, 1, 1),
    ((13, 11), (2, 3), (2, 3), 0, 1, 1),
]


@pytest.mark.parametrize("shape,kernel,stride,padding,dilation,groups", STRIDED_CASES)
@pytest.mark.parametrize("empty", [None, 1])
def test_strided_conv_matches_dense_conv(shape, kernel, stride, padding, dilation, groups, empty):
    """Strided conv: sorted output sites = positions touched by an active input; values = dense conv."""
    ndim = len(shape)
    x = random_tensor(shape, 4, empty=empty)
    k, s, p, d = (tup(v, ndim) for v in (kernel, stride, padding, dilation))
    m = {2: sp.SparseConv2d, 3: sp.SparseConv3d}[ndim](4, 4 if groups == 4 else 6, k, s, p, d, groups=groups).double()
    y = m(x)
    ref = dense_conv(x, m, s, p, d)
    assert y.spatial_shape == tuple(ref.shape[2:])
    assert y.stride == s
    assert_sorted_rows(y.coords)
    assert site_set(y.coords) == positive_sites(mask_conv(x, k, s, p, d))
    assert len(site_set(y.coords)) == len(y)
    torch.testing.assert_close(y.feats, at_sites(ref, y.coords), **TOL)


@pytest.mark.parametrize("shape,kernel,stride,padding", [((7, 9, 11), 3, 2, 1), ((7, 9, 11), 3, (1, 2, 2), (0, 1, 0)),
                                                    ((13, 11), 3, 2, 0), ((7, 9, 11), 2, 2, 0)])
def test_floored_site_conv_is_the_dense_conv_at_the_input_sites_floored(shape, kernel, stride, padding):
    """generative=False (MinkowskiEngine's strided conv): output sites = floor(input sites / stride), each the
    dense conv's value there; the paired inverse conv restores the input sites with the dense transpose."""
    ndim = len(shape)
    x = random_tensor(shape, 4, empty=1)
    k, s, p = (tup(v, ndim) for v in (kernel, stride, padding))
    conv = {2: sp.SparseConv2d, 3: sp.SparseConv3d}[ndim]
    down = conv(4, 6, k, s, p, indice_key="down", generative=False).double()
    y = down(x)
    floored = torch.cat([x.coords[:, :1], x.coords[:, 1:] // torch.tensor(s)], 1)
    generative = site_set(conv(4, 6, k, s, p).double()(x).coords)
    assert site_set(y.coords) == site_set(floored) & generative  # inside the output grid (p = 0 crops its edge)
    assert len(y) == len(site_set(y.coords))
    assert_sorted_rows(y.coords)
    torch.testing.assert_close(y.feats, at_sites(dense_conv(x, down, s, p, (1,) * ndim), y.coords), **TOL)
    up = {2: sp.SparseInverseConv2d, 3: sp.SparseInverseConv3d}[ndim](6, 4, k, indice_key="down").double()
    coarse = y.replace_feature(torch.randn_like(y.feats))
    z = up(coarse)
    assert torch.equal(z.coords, x.coords)
    full = CONV_T[ndim](coarse.dense(), up.weight.movedim(-1, 0), None, s, 0, 0, 1, 1)
    pad = []
    for a in reversed(range(ndim)):
        pad += [-p[a], shape[a] + p[a] - full.shape[2 + a]]
    torch.testing.assert_close(z.feats, at_sites(F.pad(full, pad), x.coords) + up.bias, **TOL)


@pytest.mark.parametrize("kernel,stride,padding,kind", [(3, 2, 2, "strided"), (3, 3, 1, "strided"),
                                                        (3, 1, 1, "subm"), (3, 2, 1, "transposed")])
def test_floored_sites_refuse_convs_they_do_not_fit(kernel, stride, padding, kind):
    """A footprint that misses an input of its floored site, or a conv that has its sites: ConfigError."""
    with pytest.raises(ConfigError, match="generative=False"):
        if kind == "subm":
            sp.SubMConv3d(4, 6, kernel, generative=False)
        elif kind == "transposed":
            sp.SparseConvTranspose3d(4, 6, kernel, stride, padding, generative=False)
        else:
            sp.SparseConv3d(4, 6, kernel, stride, padding, generative=False)


def test_strided_map_sort_fallback_gives_the_same_table(monkeypatch):
    """Grids too large for one packed sort word take the serial radix sort: the same map."""
    from pc3d.sparse import kernel_map as kmap

    x = random_tensor((7, 9, 11), 4, empty=None)
    fast = kmap.strided_map(x, (3, 3, 3), (2, 2, 2), (1, 1, 1), (1, 1, 1))
    monkeypatch.setattr(kmap.vx, "packed_fits", lambda *_: False)
    slow = kmap.strided_map(x, (3, 3, 3), (2, 2, 2), (1, 1, 1), (1, 1, 1))
    assert np.array_equal(fast.nbr, slow.nbr) and torch.equal(fast.out_coords, slow.out_coords)


# ------------------------------------------------------------------------------- transposed conv
TRANSPOSED_CASES = [  # (shape, kernel, stride, padding, dilation, output_padding, groups)
    ((4, 5, 6), 3, 2, 1, 1, 0, 1),
    ((4, 5, 6), 3, 2, 1, 1, 1, 1),
    ((4, 5, 6), 2, 2, 0, 1, 0, 1),
    ((4, 5, 6), 3, (1, 2, 2), (1, 0, 1), (1, 1, 2), (0, 1, 0), 1),
    ((4, 5, 6), 3, 2, 1, 1, 0, 2),
    ((7, 6), 3, 2, 0, 1, 0, 1),
]


@pytest.mark.parametrize("shape,kernel,stride,padding,dilation,output_padding,groups", TRANSPOSED_CASES)
def test_transposed_conv_matches_dense_conv_transpose(shape, kernel, stride, padding, dilation,
                                                      output_padding, groups):
    """Transposed conv equals F.conv_transposeNd at the sites that some input writes."""
    ndim = len(shape)
    x = random_tensor(shape, 4, empty=0)
    k, s, p, d, op = (tup(v, ndim) for v in (kernel, stride, padding, dilation, output_padding))
    cls = {2: sp.SparseConvTranspose2d, 3: sp.SparseConvTranspose3d}[ndim]
    m = cls(4, 6, k, s, p, d, groups=groups, output_padding=op).double()
    y = m(x)
    # [Cout, *k, Cin_g] -> torch's [Cin, Cout_g, *k]: group g maps inputs g*Cin_g.. to outputs g*Cout_g..
    w = m.weight.reshape(groups, 6 // groups, *k, 4 // groups).movedim(-1, 1).reshape(4, 6 // groups, *k)
    ref = CONV_T[ndim](x.dense(), w, m.bias, s, p, op, groups, d)
    reach = CONV_T[ndim](occupancy(x), torch.ones((1, 1, *k), dtype=torch.float64), None, s, p, op, 1, d)
    assert y.spatial_shape == tuple(ref.shape[2:])
    assert_sorted_rows(y.coords)
    assert site_set(y.coords) == positive_sites(reach)
    torch.testing.assert_close(y.feats, at_sites(ref, y.coords), **TOL)


# ---------------------------------------------------------------------------------- inverse conv
INVERSE_CASES = [  # (shape, kernel, stride, padding)
    ((7, 9, 11), 3, 2, 1),
    ((7, 9, 11), 2, 2, 0),
    ((7, 9, 11), 3, (1, 2, 2), (1, 0, 1)),
    ((13, 11), 3, 2, 1),
]


@pytest.mark.parametrize("shape,kernel,stride,padding", INVERSE_CASES)
def test_inverse_conv_matches_dense_conv_transpose(shape, kernel, stride, padding):
    """Inverse conv = conv_transpose of the densified coarse features, at the original fine sites."""
    ndim = len(shape)
    x = random_tensor(shape, 4, empty=1)
    k, s, p = (tup(v, ndim) for v in (kernel, stride, padding))
    down = {2: sp.SparseConv2d, 3: sp.SparseConv3d}[ndim](4, 6, k, s, p, indice_key="down").double()
    up = {2: sp.SparseInverseConv2d, 3: sp.SparseInverseConv3d}[ndim](6, 4, k, indice_key="down").double()
    coarse = down(x)
    coarse = coarse.replace_feature(torch.randn_like(coarse.feats))
    y = up(coarse)
    assert torch.equal(y.coords, x.coords) and y.spatial_shape == x.spatial_shape and y.stride == x.stride
    full = CONV_T[ndim](coarse.dense(), up.weight.movedim(-1, 0), None, s, 0, 0, 1, 1)
    pad = []  # crop `padding` on the low side, then pad or crop to the fine shape; bias everywhere
    for a in reversed(range(ndim)):
        pad += [-p[a], shape[a] + p[a] - full.shape[2 + a]]
    ref = F.pad(full, pad)
    assert tuple(ref.shape[2:]) == shape
    torch.testing.assert_close(y.feats, at_sites(ref, x.coords) + up.bias, **TOL)


# ----------------------------------------------------------------------------------------- pools
POOL_CASES = [  # (shape, kernel, stride, padding, dilation)
    ((7, 9, 11), 3, 2, 1, 1),
    ((7, 9, 11), 2, 2, 0, 1),
    ((7, 9, 11), (3, 1, 3), (2, 1, 1), (1, 0, 0), 1),
    ((7, 9, 11), 2, 1, 0, 2),
    ((13, 11), 3, 2, 1, 1),
]


@pytest.mark.parametrize("shape,kernel,stride,padding,dilation", POOL_CASES)
def test_max_pool_matches_dense_max_pool(shape, kernel, stride, padding, dilation):
    """Max pool = F.max_poolNd with empty sites at -inf (all features negative, so zeros never win)."""
    ndim = len(shape)
    x = random_tensor(shape, 4, empty=1)
    x = x.replace_feature(-x.feats.abs() - 1)
    k, s, p, d = (tup(v, ndim) for v in (kernel, stride, padding, dilation))
    y = {2: sp.SparseMaxPool2d, 3: sp.SparseMaxPool3d}[ndim](k, s, p, d)(x)
    dense = x.dense().masked_fill(occupancy(x) == 0, -torch.inf)
    ref = MAX_POOL[ndim](dense, k, s, p, d)
    assert y.spatial_shape == tuple(ref.shape[2:])
    assert_sorted_rows(y.coords)
    assert site_set(y.coords) == positive_sites(mask_conv(x, k, s, p, d))
    torch.testing.assert_close(y.feats, at_sites(ref, y.coords), rtol=0, atol=0)


@pytest.mark.parametrize("shape,kernel,stride,padding,dilation", POOL_CASES)
def test_avg_pool_matches_brute_force_mean_over_active_inputs(shape, kernel, stride, padding, dilation):
    """Avg pool = mean over the active inputs of each output (a loop over sites and offsets)."""
    ndim = len(shape)
    x = random_tensor(shape, 4)
    k, s, p, d = (tup(v, ndim) for v in (kernel, stride, padding, dilation))
    y = {2: sp.SparseAvgPool2d, 3: sp.SparseAvgPool3d}[ndim](k, s, p, d)(x)
    pairs, out_shape = brute_pairs(x, k, s, p, d)
    assert y.spatial_shape == out_shape
    assert [tuple(c) for c in y.coords.tolist()] == sorted(pairs)
    f = x.feats.numpy()
    ref = np.array([f[[row for row, _ in pairs[key]]].mean(0) for key in sorted(pairs)])
    np.testing.assert_allclose(y.feats.numpy(), ref, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------------------- 4D
@pytest.mark.parametrize("kernel,dilation", [((3, 3, 3, 1), 1), ((3, 1, 3, 3), (1, 1, 2, 1))])
def test_subm_4d_matches_brute_force(kernel, dilation):
    """4D SubM conv equals a loop over sites and kernel offsets through a dict of coordinates."""
    x = random_tensor((5, 6, 4, 3), 4, empty=0)
    m = sp.SubMConv4d(4, 6, kernel, dilation=dilation).double()
    y = m(x)
    ref = brute_subm(x, m.weight, m.bias.detach().numpy(), tup(dilation, 4))
    assert y.coords is x.coords
    np.testing.assert_allclose(y.feats.detach().numpy(), ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kernel,stride,padding", [((3, 3, 3, 1), (2, 2, 2, 1), (1, 1, 1, 0)),
                                                   (2, 2, 0), ((1, 3, 2, 3), (1, 2, 2, 1), (0, 1, 0, 1))])
def test_strided_conv_4d_matches_brute_force(kernel, stride, padding):
    """4D strided conv: output sites, their order and values equal a loop over sites and offsets."""
    x = random_tensor((5, 6, 4, 3), 4, empty=1)
    k, s, p = (tup(v, 4) for v in (kernel, stride, padding))
    m = sp.SparseConv4d(4, 6, k, s, p).double()
    y = m(x)
    coords, feats = brute_conv(x, m.weight, m.bias.detach().numpy(), s, p, (1,) * 4)
    np.testing.assert_array_equal(y.coords.numpy(), coords)
    np.testing.assert_allclose(y.feats.detach().numpy(), feats, rtol=1e-10, atol=1e-10)


# -------------------------------------------------------------------------------------- gradients
def tiny(shape=(6, 7), channels=4, seed=1):
    """~20 sites in one 2D sample (or 3D with a 3-tuple shape)."""
    occupancy_ = 20 / np.prod(shape)
    return random_tensor(shape, channels, batch=1, occupancy=occupancy_, seed=seed)


@pytest.mark.parametrize("cin,groups,cout", [(4, 1, 6), (4, 2, 6), (4, 4, 4), (8, 1, 8), (16, 2, 16)])
def test_gradcheck_subm(cin, groups, cout, one_thread):
    """SubM conv (plain, grouped, depthwise, micro-kernel widths): gradients w.r.t. features and weight."""
    gradcheck_module(sp.SubMConv2d(cin, cout, 3, groups=groups).double(), tiny(channels=cin))


@pytest.mark.parametrize("shape,kernel,stride,padding,groups", [((6, 7), 3, 2, 1, 1), ((4, 4, 5), 2, 2, 0, 1),
                                                                 ((6, 7), 3, 2, 1, 4)])
def test_gradcheck_strided(shape, kernel, stride, padding, groups, one_thread):
    """Strided conv (plain and depthwise): analytic gradients w.r.t. features and weight."""
    cls = sp.SparseConv2d if len(shape) == 2 else sp.SparseConv3d
    gradcheck_module(cls(4, 4 if groups == 4 else 6, kernel, stride, padding, groups=groups).double(), tiny(shape))


def test_gradcheck_transposed(one_thread):
    """Transposed conv: analytic gradients w.r.t. features and weight."""
    gradcheck_module(sp.SparseConvTranspose2d(4, 6, 3, 2, 1).double(), tiny((4, 5)))


def test_gradcheck_inverse(one_thread):
    """Inverse conv: analytic gradients w.r.t. the coarse features and the inverse conv's weight."""
    down = sp.SparseConv2d(4, 6, 3, 2, 1, indice_key="d").double()
    coarse = down(tiny())
    gradcheck_module(sp.SparseInverseConv2d(6, 4, 3, indice_key="d").double(), coarse.replace_feature(
        coarse.feats.detach()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_max_pool_keeps_a_nan_wherever_it_is_in_the_window(dtype):
    """A NaN input makes its window's maximum NaN at any offset, as F.max_pool3d (it was lost unless first)."""
    coords = torch.tensor([[0, 0, 0, 0], [0, 0, 0, 1], [0, 1, 1, 1]], dtype=torch.int32)
    for nan_row in range(3):
        feats = torch.tensor([[1.0], [2.0], [3.0]], dtype=dtype)
        feats[nan_row] = float("nan")
        y = sp.SparseMaxPool3d(2, 2)(SparseTensor(feats, coords, (2, 2, 2), 1))
        assert torch.isnan(y.feats).all(), nan_row


def test_gradcheck_max_pool(one_thread):
    """Max pool: analytic gradient w.r.t. the features (random float64 values, so no ties)."""
    gradcheck_module(sp.SparseMaxPool2d(3, 2, 1), tiny(), wrt_weight=False)


def test_gradcheck_avg_pool(one_thread):
    """Avg pool: analytic gradient w.r.t. the features."""
    gradcheck_module(sp.SparseAvgPool2d(2, 2, 0), tiny(), wrt_weight=False)
