"""bfloat16 sparse convs: bf16 inputs, float32 sums. Against the float32 engine and float64 dense references,
gradients, determinism, autocast, the vdpbf16ps kernel against its fallback, and the AMX tile kernel against
both and against float64."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import torch_threads
from pc3d_ops import amx as amx_ops
from pc3d_ops import bf16 as bf16_ops
from pc3d_ops import sparse_conv_amx as amx_kernels
from pc3d_ops import sparse_conv_bf16 as bf16_kernels
from pc3d_ops.sparse_conv import ROWS_PER_BLOCK, block_pairs
from test_sparse_dense_reference import CONV_T, at_sites, dense_conv, random_tensor

import pc3d.sparse as sp

CONVS = {3: (sp.SubMConv3d, sp.SparseConv3d, sp.SparseConvTranspose3d, sp.SparseInverseConv3d),
         4: (sp.SubMConv4d, sp.SparseConv4d, sp.SparseConvTranspose4d, sp.SparseInverseConv4d)}
SHAPES = {3: (7, 9, 11), 4: (5, 6, 4, 3)}
needs_amx = pytest.mark.skipif(not amx_ops.available(), reason="no AMX-BF16 here (or the OS refused the tile state)")


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


CASES = [  # (kind, ndim, cin, cout, groups): widths that take the vdpbf16ps / AMX kernels (cout_g % 16 == 0;
    # AMX weight gradients also need cin_g % 32 == 0)
    ("subm", 3, 32, 64, 1), ("subm", 3, 5, 16, 1), ("subm", 3, 64, 32, 2), ("subm", 4, 16, 32, 1),
    ("subm", 4, 32, 16, 1),
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


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("channels", [8, 64])  # 64: the kernels specialised on a compile-time channel count
def test_bf16_depthwise_is_widened_float32_rounded_once(channels, bias):
    """The depthwise kernels read bf16 bits themselves (no float32 copies): output, feature gradient and weight
    gradient are bit for bit the float32 kernels' on the same (bf16-exact) values, rounded once (the bias joins
    the float32 sums before that rounding)."""
    layers, x = build("subm", 3, channels, channels, channels)
    if not bias:
        layers[0].bias = None
    for y32, y16 in zip(run(layers, x, None, False), run(layers, x, torch.bfloat16, False), strict=True):
        assert y16.dtype == torch.bfloat16
        assert torch.equal(y16.view(torch.int16), y32.bfloat16().view(torch.int16))


@pytest.mark.parametrize("autocast", [False, True])
@pytest.mark.parametrize("kind,ndim,cin,cout,groups", [("subm", 3, 16, 16, 1), ("subm", 3, 6, 6, 1),
                                                       ("strided", 3, 16, 32, 1), ("transposed", 3, 16, 16, 1)])
def test_bf16_bias_is_added_before_the_one_rounding(kind, ndim, cin, cout, groups, autocast):
    """A bias as large as the conv's output: added to the float32 sums, then rounded once, the bf16 output is the
    float32 engine's output rounded to bf16 (it was rounded before and after the bias add: up to 4 ulps off)."""
    layers, x = build(kind, ndim, cin, cout, groups)
    with torch.no_grad():
        layers[-1].bias.data = rounded(torch.empty(cout).uniform_(-20, 20, generator=torch.Generator().manual_seed(3)))
    y32 = run(layers, x, None, False)[0]
    y16 = run(layers, x, None if autocast else torch.bfloat16, autocast)[0]
    differ = (y16.view(torch.int16) != y32.bfloat16().view(torch.int16)).float().mean().item()
    assert differ < 2e-3  # float32 sums in another order may round the other way, rarely


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
@pytest.mark.parametrize("kernel", ["default", "no_amx"])
def test_bf16_is_bitwise_reproducible(autocast, kernel, monkeypatch):
    """Two runs (and a run on one thread) give bitwise-identical outputs and gradients, with the kernel
    this machine picks (AMX where it has it) and with AMX off."""
    if kernel == "no_amx":
        monkeypatch.setenv(amx_ops.ENV_DISABLE, "1")
    layers, x = build("subm", 3, 32, 64)
    dtype = None if autocast else torch.bfloat16
    with torch_threads(2):
        first = run(layers, x, dtype, autocast)
        second = run(layers, x, dtype, autocast)
    with torch_threads(1):
        third = run(layers, x, dtype, autocast)
    for a, b, c in zip(first, second, third, strict=True):
        assert torch.equal(a, b) and torch.equal(a, c)


@pytest.mark.parametrize("kind,ndim,cin,cout,groups", [c for c in CASES if c[3] // c[4] % 16 == 0])
def test_fallback_kernel_equals_vdpbf16ps(kind, ndim, cin, cout, groups, monkeypatch):
    """The float32 FMA fallback adds the pair's two exact products in vdpbf16ps's order: bitwise equal."""
    if not bf16_ops.cpu_has_avx512_bf16():
        pytest.skip("no avx512_bf16 here: only the fallback runs")
    monkeypatch.setenv(amx_ops.ENV_DISABLE, "1")
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
    out16 = _gather_gemm_scatter(feats, w, kmap, False)
    out32 = _gather_gemm_scatter(feats, w, kmap, False, torch.float32)
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
    for name in (amx_ops.ENV_DISABLE, bf16_ops.ENV_FORCE_FALLBACK):
        monkeypatch.delenv(name, raising=False)
    assert ("AMX tdpbf16ps" in bf16_ops.kernel_name()) == amx_ops.available()
    monkeypatch.setenv(amx_ops.ENV_DISABLE, "1")
    assert not amx_ops.use_amx() and "AMX tdpbf16ps" not in bf16_ops.kernel_name()
    if bf16_ops.cpu_has_avx512_bf16():
        assert bf16_ops.kernel_name().startswith("vdpbf16ps")
    monkeypatch.setenv(bf16_ops.ENV_FORCE_FALLBACK, "1")
    assert "fallback" in bf16_ops.kernel_name()
    monkeypatch.delenv(amx_ops.ENV_DISABLE)
    assert not amx_ops.use_amx() and "fallback" in bf16_ops.kernel_name()


# ------------------------------------------------------------------------------------ AMX tile kernel
AMX_CASES = [c for c in CASES if c[3] // c[4] % 16 == 0]


@needs_amx
@pytest.mark.parametrize("kind,ndim,cin,cout,groups", AMX_CASES)
def test_amx_matches_vdpbf16ps_kernel(kind, ndim, cin, cout, groups, monkeypatch):
    """Under autocast, the AMX tiles and the vdpbf16ps kernel (or its fallback; the float32 kernels for
    weight gradients) form the same exact products and sum them in float32 in another order: the float32
    feature and weight gradients agree to float32 summation error, the bf16 outputs to one bf16 rounding."""
    for name in (amx_ops.ENV_DISABLE, bf16_ops.ENV_FORCE_FALLBACK):
        monkeypatch.delenv(name, raising=False)
    layers, x = build(kind, ndim, cin, cout, groups)
    spy = []
    original = amx_kernels.gather_gemm_scatter
    monkeypatch.setattr(amx_kernels, "gather_gemm_scatter", lambda *a: spy.append(a) or original(*a))
    y_amx, gx_amx, gw_amx = run(layers, x, None, True)
    calls = len(spy)
    assert calls, "the AMX kernel did not run"
    monkeypatch.setenv(amx_ops.ENV_DISABLE, "1")
    y_vec, gx_vec, gw_vec = run(layers, x, None, True)
    assert len(spy) == calls, "the AMX kernel ran with PC3D_BF16_NO_AMX=1"
    assert rel_err(y_amx, y_vec) <= 2.0**-7
    tol = 2.0**-7 if kind == "inverse" else 1e-5  # inverse: the inner activations are bf16-rounded
    assert rel_err(gx_amx, gx_vec) < tol and rel_err(gw_amx, gw_vec) < tol


def _random_problem(seed, n_in, n_out, kvol, groups, cin_g, cout_g, density=0.5):
    """bf16 feats and weights (as int16 bits and float64 values), a random table with one empty offset."""
    rng = np.random.default_rng(seed)
    nbr = rng.integers(0, max(n_in, 1), (n_out, kvol)).astype(np.int32)
    nbr[rng.random((n_out, kvol)) > density] = -1
    if n_in == 0:
        nbr[:] = -1
    if kvol > 1:
        nbr[:, 1] = -1
    feats = torch.from_numpy(rng.standard_normal((n_in, groups * cin_g)).astype(np.float32)).bfloat16()
    w = torch.from_numpy(rng.standard_normal((kvol, groups, cin_g, cout_g)).astype(np.float32)).bfloat16()
    ref = np.zeros((n_out, groups * cout_g))
    x64, w64 = feats.double().numpy(), w.double().numpy()
    for k in range(kvol):
        rows = np.nonzero(nbr[:, k] >= 0)[0]
        for g in range(groups):
            ref[rows, g * cout_g:(g + 1) * cout_g] += x64[nbr[rows, k], g * cin_g:(g + 1) * cin_g] @ w64[k, g]
    return feats.view(torch.int16).numpy(), bf16_ops.to_vnni(w.view(torch.int16).numpy()), nbr, ref


@needs_amx
@pytest.mark.parametrize("groups,cin_g,cout_g", [  # each AMX width pair costs two compiles (float32 and bf16
    # out): all but (1, 16) and (69, 80) are widths CASES compiles anyway
    (1, 32, 64), (1, 5, 16), (1, 69, 80), (1, 1, 16), (2, 7, 16), (3, 32, 16)])
def test_amx_kernel_against_float64(groups, cin_g, cout_g):
    """Odd depths (a zero pad column; depth 1), a depth over several 32-deep tiles with a partial last one
    (69), a width over one 64-column block (80), groups: float32 sums of exact products equal float64 to
    float32 error; the bf16 output is the float32 output rounded as torch rounds; two runs are bitwise
    equal; the vdpbf16ps kernel agrees to float32 error."""
    feats, w_vnni, nbr, ref = _random_problem(cin_g + cout_g, 300, 600, 7, groups, cin_g, cout_g)
    pairs = block_pairs(nbr, ROWS_PER_BLOCK)
    kernel = amx_kernels.gather_gemm_scatter(cin_g, cout_g)
    out32 = np.empty((600, groups * cout_g), np.float32)
    kernel(feats, w_vnni, *pairs, out32)
    scale = np.abs(ref).max()
    np.testing.assert_allclose(out32, ref, rtol=0, atol=scale * 1e-5)
    again = np.empty_like(out32)
    kernel(feats, w_vnni, *pairs, again)
    assert np.array_equal(out32.view(np.int32), again.view(np.int32))
    out16 = np.empty(out32.shape, np.int16)
    kernel(feats, w_vnni, *pairs, out16)
    assert np.array_equal(out16, torch.from_numpy(out32).bfloat16().view(torch.int16).numpy())
    vec = np.empty_like(out32)
    bf16_kernels.gather_gemm_scatter(cout_g, bf16_ops.use_native())(feats, w_vnni, *pairs, vec)
    np.testing.assert_allclose(out32, vec, rtol=0, atol=scale * 1e-5)


def _weight_gradient_problem(groups: int, cin_g: int, cout_g: int, n_out: int):
    """(feats int16 bits, grad bf16, table [n_out, 7], float64 reference dW [7, G, cin_g, cout_g])."""
    feats, _, nbr, _ = _random_problem(cin_g, 300, n_out, 7, groups, cin_g, cout_g)
    rng = np.random.default_rng(cout_g)
    grad = torch.from_numpy(rng.standard_normal((n_out, groups * cout_g)).astype(np.float32)).bfloat16()
    x64 = torch.from_numpy(feats).view(torch.bfloat16).double().numpy()
    g64 = grad.double().numpy()
    ref = np.zeros((7, groups, cin_g, cout_g))
    for k in range(7):
        rows = np.nonzero(nbr[:, k] >= 0)[0]
        for g in range(groups):
            ref[k, g] = x64[nbr[rows, k], g * cin_g:(g + 1) * cin_g].T @ g64[rows, g * cout_g:(g + 1) * cout_g]
    return feats, grad, nbr, ref


@pytest.mark.parametrize("groups,cin_g,cout_g,n_out", [  # (32, 64), (7, 16), (16, 32): widths CASES compiles
    (1, 32, 64, 600), (1, 7, 16, 301), (1, 33, 48, 5000), (2, 16, 32, 599), (1, 64, 128, 9000)])
def test_vdpbf16ps_weight_gradient_against_float64(groups, cin_g, cout_g, n_out):
    """The bf16 weight gradient that packs two pairs per vdpbf16ps (odd pair counts leave a zero partner;
    channel counts not a multiple of the rows per call, groups, several tasks) equals float64 to float32
    summation error, is bitwise reproducible, and its float32 fallback gives the same bits."""
    from pc3d_ops.sparse_conv import wgrad_tasks

    feats, grad, nbr, ref = _weight_gradient_problem(groups, cin_g, cout_g, n_out)
    natives = (True, False) if bf16_ops.cpu_has_avx512_bf16() else (False,)
    results = []
    for native in (*natives, natives[0]):
        partial = np.zeros((wgrad_tasks(n_out), 7, groups, cin_g, cout_g), np.float32)
        bf16_kernels.pair_weight_gradient(cin_g, cout_g, native)(feats, grad.view(torch.int16).numpy(),
                                                                 *block_pairs(nbr, ROWS_PER_BLOCK), partial)
        results.append(partial.sum(0, dtype=np.float64))
    np.testing.assert_allclose(results[0], ref, rtol=0, atol=np.abs(ref).max() * 1e-5)
    assert all(np.array_equal(results[0], r) for r in results[1:])


@needs_amx
@pytest.mark.parametrize("groups,cin_g,cout_g,n_out", [  # (32, 64), (32, 16): widths CASES compiles
    (1, 32, 64, 600), (1, 32, 16, 300), (1, 96, 80, 5000), (1, 96, 80, 40), (2, 32, 16, 600), (1, 64, 128, 9000)])
def test_amx_weight_gradient_against_float64(groups, cin_g, cout_g, n_out):
    """The AMX weight gradient (pairs transposed into panels padded to a multiple of 32, depths of several
    transposes, widths over several tiles, several tasks at 5000+ rows, fewer pairs than one panel, groups)
    equals float64 to float32 summation error and is
    bitwise reproducible; widths it does not cover are refused (the dispatch sends them to float32)."""
    from pc3d_ops.sparse_conv import wgrad_tasks

    feats, grad, nbr, ref = _weight_gradient_problem(groups, cin_g, cout_g, n_out)
    kernel = amx_kernels.weight_gradient(cin_g, cout_g)
    results = []
    for _ in range(2):
        partial = np.zeros((wgrad_tasks(n_out), 7, groups, cin_g, cout_g), np.float32)
        kernel(feats, grad.view(torch.int16).numpy(), *block_pairs(nbr, ROWS_PER_BLOCK), partial)
        results.append(partial.sum(0, dtype=np.float64))
        assert partial.shape[0] > 1 or n_out <= 4096
    np.testing.assert_allclose(results[0], ref, rtol=0, atol=np.abs(ref).max() * 1e-5)
    assert np.array_equal(results[0], results[1])
    assert not amx_kernels.wgrad_supports(16, 16) and not amx_kernels.wgrad_supports(32, 24)


@needs_amx
@pytest.mark.parametrize("n_in,n_out", [(0, 40), (50, 0), (50, 40)])
def test_amx_kernel_empty_maps(n_in, n_out):
    """No pairs at all (no inputs, no outputs, or every table entry -1): zeros, and no tile work on garbage."""
    feats, w_vnni, nbr, _ = _random_problem(1, n_in, n_out, 27, 1, 16, 32)
    nbr[:] = -1
    out = np.full((n_out, 32), np.nan, np.float32)
    amx_kernels.gather_gemm_scatter(16, 32)(feats, w_vnni, *block_pairs(nbr, ROWS_PER_BLOCK), out)
    assert not out.any()


def test_amx_routing(monkeypatch):
    """Widths the tiles do not cover (cout_g not a multiple of 16) are refused by the AMX kernel (the
    dispatch sends them to the float32 kernels first); PC3D_BF16_NO_AMX and PC3D_BF16_FALLBACK turn AMX off."""
    assert amx_ops.supports(16) and amx_ops.supports(80) and not amx_ops.supports(24) and not amx_ops.supports(8)
    with pytest.raises(ValueError):
        amx_kernels.gather_gemm_scatter(16, 24)
    for name in (amx_ops.ENV_DISABLE, bf16_ops.ENV_FORCE_FALLBACK):
        monkeypatch.delenv(name, raising=False)
    for name in (amx_ops.ENV_DISABLE, bf16_ops.ENV_FORCE_FALLBACK):
        monkeypatch.setenv(name, "1")
        assert not amx_ops.use_amx() and "disabled by" in amx_ops.why_not()
        monkeypatch.delenv(name)
    monkeypatch.setenv(amx_ops.ENV_DISABLE, "0")
    assert amx_ops.use_amx() == amx_ops.available()
