"""bfloat16 sparse convs: bf16 inputs, float32 sums. Against the float32 engine and float64 dense references,
gradients, determinism, autocast, and the vdpbf16ps kernel against its fallback."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pc3d_ops import bf16 as bf16_ops
from test_sparse_dense_reference import CONV_T, at_sites, dense_conv, random_tensor

import pc3d.sparse as sp

CONVS = {3: (sp.SubMConv3d, sp.SparseConv3d, sp.SparseConvTranspose3d, sp.SparseInverseConv3d),
         4: (sp.SubMConv4d, sp.SparseConv4d, sp.SparseConvTranspose4d, sp.SparseInverseConv4d)}
SHAPES = {3: (7, 9, 11), 4: (5, 6, 4, 3)}


def rounded(t: torch.Tensor) -> torch.Tensor:
    """t with bf16-representable values (still float32): the float32 engine then sees the same inputs."""
    return t.detach().bfloat16().float()


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-30))


def build(kind: str, ndim: int, cin: int, cout: int, groups: int = 1, kernel=3):
    """(layers to run in order, input tensor): the conv of `kind` (inverse: after its strided conv)."""
    subm, conv, transposed, inverse = CONVS[ndim]
    x = random_tensor(SHAPES[ndim], cin, occupancy=0.4, seed=5)
    if kind == "subm":
        layers = [subm(cin, cout, kernel, groups=groups)]
    elif kind == "strided":
        layers = [conv(cin, cout, kernel, 2, 1, groups=groups)]
    elif kind == "transposed":
        layers = [transposed(cin, cout, kernel, 2, 1, groups=groups)]
    else:
        layers = [conv(cin, cin, kernel, 2, 1, indice_key="d"), inverse(cin, cout, kernel, indice_key="d",
                                                                        groups=groups)]
    for m in layers:
        m.weight.data = rounded(m.weight)
        if m.bias is not None:
            m.bias.data = rounded(m.bias)
    return layers, x.replace_feature(rounded(x.feats))


def run(layers, x, dtype: torch.dtype | None, autocast: bool, grad_seed: int = 7):
    """Output feats, feature gradient and last layer's weight gradient of layers(x), in `dtype` or autocast."""
    for m in layers:
        m.zero_grad(set_to_none=True)
    mods = [m.to(dtype) for m in layers] if dtype is not None else layers
    feats = x.feats.detach().to(dtype or x.feats.dtype).clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        y = x.replace_feature(feats)
        for m in mods:
            y = m(y)
    g = torch.randn(y.feats.shape, generator=torch.Generator().manual_seed(grad_seed)).bfloat16()
    y.feats.backward(g.to(y.feats.dtype))
    out = (y.feats.detach(), feats.grad, mods[-1].weight.grad.clone())  # .float() below converts grads too
    for m in layers:
        m.float()
    return out


CASES = [  # (kind, ndim, cin, cout, groups): widths that take the vdpbf16ps kernel (cout_g % 16 == 0)
    ("subm", 3, 32, 64, 1), ("subm", 3, 5, 16, 1), ("subm", 3, 64, 32, 2), ("subm", 4, 16, 32, 1),
    ("strided", 3, 16, 32, 1), ("strided", 4, 7, 16, 1), ("transposed", 3, 32, 16, 1),
    ("inverse", 3, 16, 32, 1), ("inverse", 4, 16, 16, 1),
    # and widths that run the float32 kernels on widened values: odd, grouped, depthwise
    ("subm", 3, 4, 6, 1), ("subm", 3, 8, 8, 8), ("subm", 4, 6, 6, 3), ("strided", 3, 8, 24, 2),
    ("transposed", 3, 4, 6, 2), ("inverse", 3, 6, 4, 1),
]


@pytest.mark.parametrize("kind,ndim,cin,cout,groups", CASES)
def test_bf16_matches_float32_engine(kind, ndim, cin, cout, groups):
    """bf16 modules (features and weights bf16) equal the float32 engine on the same (bf16-exact)
    values within bf16 rounding; gradients too. Outputs and feature gradients are bf16; products are
    exact and sums float32, so the only error is the output rounding (2^-9 relative)."""
    layers, x = build(kind, ndim, cin, cout, groups)
    y32, gx32, gw32 = run(layers, x, None, False)
    y16, gx16, gw16 = run(layers, x, torch.bfloat16, False)
    assert y16.dtype == gx16.dtype == gw16.dtype == torch.bfloat16
    assert rel_err(y16, y32) < 1e-2 and rel_err(gx16, gx32) < 1e-2 and rel_err(gw16, gw32) < 1e-2


@pytest.mark.parametrize("kind,ndim,cin,cout,groups", CASES)
def test_autocast_bf16_matches_float32_engine(kind, ndim, cin, cout, groups):
    """Under autocast the conv casts its float32 inputs itself: bf16 outputs, float32 gradients of the
    float32 features and weights, summed in float32 (no bf16 rounding on the way back)."""
    layers, x = build(kind, ndim, cin, cout, groups)
    y32, gx32, gw32 = run(layers, x, None, False)
    y16, gx16, gw16 = run(layers, x, None, True)
    assert y16.dtype == torch.bfloat16 and gx16.dtype == gw16.dtype == torch.float32
    assert rel_err(y16, y32) < 1e-2
    # the incoming gradient is bf16 either way; the inner activations of `inverse` are rounded once
    tol = 1e-2 if kind == "inverse" else 1e-5
    assert rel_err(gx16, gx32) < tol and rel_err(gw16, gw32) < tol


@pytest.mark.parametrize("groups,cout", [(1, 16), (2, 32), (4, 4), (8, 8)])
def test_bf16_subm_matches_float64_dense_reference(groups, cout):
    """The bf16 SubM conv equals torch's float64 dense conv of the same bf16 values within bf16 rounding
    (the conv's output and the bias add each round once)."""
    x = random_tensor((7, 9, 11), 8, occupancy=0.4, seed=2)
    m = sp.SubMConv3d(8, cout, 3, groups=groups)
    m.weight.data, m.bias.data = rounded(m.weight), rounded(m.bias)
    xb = x.replace_feature(x.feats.bfloat16())
    y = m.bfloat16()(xb).feats
    ref = at_sites(dense_conv(x.replace_feature(xb.feats.double()), m.double(), 1, 1, 1), x.coords)
    torch.testing.assert_close(y.double(), ref, rtol=2.0**-7, atol=1e-2)


def test_bf16_transposed_matches_float64_dense_reference():
    x = random_tensor((4, 5, 6), 16, occupancy=0.4, empty=0, seed=4)
    m = sp.SparseConvTranspose3d(16, 32, 3, 2, 1)
    m.weight.data, m.bias.data = rounded(m.weight), rounded(m.bias)
    xb = x.replace_feature(x.feats.bfloat16())
    y = m.bfloat16()(xb)
    m = m.double()
    w = m.weight.movedim(-1, 0)  # [Cout, *k, Cin] -> [Cin, Cout, *k]
    ref = CONV_T[3](x.replace_feature(xb.feats.double()).dense(), w, m.bias, 2, 1, 0, 1, 1)
    torch.testing.assert_close(y.feats.double(), at_sites(ref, y.coords), rtol=2.0**-7, atol=1e-2)


def test_bf16_strided_gradients_match_float64():
    """Feature and weight gradients of a bf16 strided conv against float64 autograd of the same values."""
    layers, x = build("strided", 3, 16, 32)
    g64 = run(layers, x, torch.float64, False)
    g16 = run(layers, x, torch.bfloat16, False)
    for a, b in zip(g16, g64, strict=True):
        assert rel_err(a, b) < 1e-2


@pytest.mark.parametrize("autocast", [False, True])
def test_bf16_is_bitwise_reproducible(autocast):
    """Two runs (and a run on one thread) give bitwise-identical outputs and gradients."""
    layers, x = build("subm", 3, 32, 64)
    dtype = None if autocast else torch.bfloat16
    first = run(layers, x, dtype, autocast)
    second = run(layers, x, dtype, autocast)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        third = run(layers, x, dtype, autocast)
    finally:
        torch.set_num_threads(before)
    for a, b, c in zip(first, second, third, strict=True):
        assert torch.equal(a, b) and torch.equal(a, c)


@pytest.mark.parametrize("kind,ndim,cin,cout,groups", [c for c in CASES if c[3] // c[4] % 16 == 0])
def test_fallback_kernel_equals_vdpbf16ps(kind, ndim, cin, cout, groups, monkeypatch):
    """The float32 FMA fallback adds the pair's two exact products in vdpbf16ps's order: bitwise equal."""
    if not bf16_ops.cpu_has_avx512_bf16():
        pytest.skip("no avx512_bf16 here: only the fallback runs")
    layers, x = build(kind, ndim, cin, cout, groups)
    native = run(layers, x, None, True)
    monkeypatch.setenv(bf16_ops.ENV_FORCE_FALLBACK, "1")
    assert not bf16_ops.use_native()
    fallback = run(layers, x, None, True)
    for a, b in zip(native, fallback, strict=True):
        assert torch.equal(a, b)


def test_bf16_rounding_matches_torch():
    """The kernel rounds its float32 sums as torch does (nearest even; NaN, inf and overflow kept)."""
    from pc3d.sparse.kernel_map import submanifold_map
    from pc3d.sparse.ops import _gather_gemm_scatter, _weight_kgio

    x = random_tensor((7, 9, 11), 16, occupancy=0.4, seed=6)
    feats = x.feats.bfloat16()
    feats[:3, 0] = torch.tensor([np.nan, np.inf, 3e38])  # NaN, inf and an overflowing sum reach some outputs
    kmap = submanifold_map(x, (3, 3, 3), (1, 1, 1))
    w = _weight_kgio(sp.SubMConv3d(16, 32, 3).weight.detach().bfloat16(), 1)
    out16 = _gather_gemm_scatter(feats, w, kmap.table(), kmap, False)
    out32 = _gather_gemm_scatter(feats, w, kmap.table(), kmap, False, torch.float32)
    assert out16.dtype == torch.bfloat16 and out32.dtype == torch.float32
    assert out32.isnan().any() and out32.isinf().any()
    assert torch.equal(out16.view(torch.int16), out32.bfloat16().view(torch.int16))


def test_autocast_keeps_batchnorm_and_loss_float32():
    """A sparse block under autocast: conv outputs bf16, BatchNorm parameters, statistics and gradients
    float32, the loss float32; the weights' gradients are float32."""
    from pc3d.sparse import SparseSequential

    torch.manual_seed(0)
    net = SparseSequential(sp.SubMConv3d(4, 32, 3, bias=False), torch.nn.BatchNorm1d(32), torch.nn.ReLU(),
                           sp.SparseConv3d(32, 16, 3, 2, 1, bias=False), torch.nn.BatchNorm1d(16))
    x = random_tensor((9, 10, 11), 4, occupancy=0.4, seed=1).replace_feature(
        random_tensor((9, 10, 11), 4, occupancy=0.4, seed=1).feats.float())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = net[0](x)
        assert y.feats.dtype == torch.bfloat16
        out = net(x)
        loss = F.mse_loss(out.feats.float(), torch.zeros_like(out.feats, dtype=torch.float32))
    assert loss.dtype == torch.float32
    loss.backward()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            assert m.running_mean.dtype == m.weight.dtype == torch.float32
            assert torch.isfinite(m.running_var).all()
    assert all(p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all() for p in net.parameters())


def test_autocast_leaves_float64_alone():
    """float64 layers are never cast down by autocast (as torch's autocast does)."""
    x = random_tensor((7, 9, 11), 4)
    m = sp.SubMConv3d(4, 16, 3).double()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert m(x).feats.dtype == torch.float64


def test_info_reports_the_bf16_kernel(monkeypatch):
    from pc3d.info import environment_report

    assert "sparse bf16" in environment_report()
    monkeypatch.setenv(bf16_ops.ENV_FORCE_FALLBACK, "1")
    assert "fallback" in bf16_ops.kernel_name()
