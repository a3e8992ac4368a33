"""Fuzzing the sparse engine with hostile input (hypothesis; the voxelizers: test_fuzz_voxelizers.py).

Every example is either computed exactly as a brute-force reference (Python ints, a dict of sites:
no keys, no grid, no overflow) or refused with the pc3d error the engine's limits predict
(pc3d.sparse.checks): never a foreign exception, never a wrong neighbour, never a hang.
"""
from __future__ import annotations

import itertools
import math
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

import pc3d.sparse as sp
import pc3d.sparse.kernel_map as kernel_map_module
from pc3d.errors import ConfigError, Pc3dError, SparseTensorError
from pc3d.sparse import SparseTensor
from pc3d.sparse.checks import INT32_MAX, KEY_LIMIT, MAX_KERNEL_VOLUME

FUZZ = settings(deadline=None, max_examples=60, suppress_health_check=list(HealthCheck), derandomize=True)

# per-axis extents: small grids, and the hostile ones (near the int32 / int64-key limits and past them)
HUGE = [2**20, 2**21 - 1, 2**21, 2**22, 2**30, INT32_MAX, 2**31, 2**32 + 1]
extent = st.one_of(st.integers(1, 9), st.sampled_from(HUGE), st.integers(-2, 0))


@st.composite
def sparse_input(draw, ndims=(1, 2, 3, 4), max_sites=10, hostile=True):
    """(spatial_shape, batch_size, int64 coords [N, 1 + D]) with sites near the grid's edges and,
    when hostile, now and then a huge or non-positive extent, a bad batch size, a site outside the
    grid or beyond int32, or a duplicate site."""
    def rarely():
        return hostile and draw(st.integers(0, 5)) == 0

    ndim = draw(st.sampled_from(ndims))
    shape = tuple(draw(extent if rarely() else st.integers(1, 9)) for _ in range(ndim))
    batch = draw(st.sampled_from([0, -1, 2**40]) if rarely() else st.integers(1, 3))
    upper = (max(batch, 1), *(max(s, 1) for s in shape))

    def value(u):
        return draw(st.one_of(st.integers(0, min(u, 6) - 1), st.integers(max(u - 3, 0), u - 1),
                              st.integers(0, u - 1)))

    rows = [[value(u) for u in upper] for _ in range(draw(st.integers(0, max_sites)))]
    if rows and rarely():  # one entry outside the grid or beyond int32
        row, axis = draw(st.integers(0, len(rows) - 1)), draw(st.integers(0, ndim))
        rows[row][axis] = draw(st.sampled_from([-1, upper[axis], 2**31, 2**32 + 1, -(2**33)]))
    if rows and rarely():
        rows.append(list(rows[draw(st.integers(0, len(rows) - 1))]))  # a duplicate site
    coords = torch.tensor(rows, dtype=torch.int64).reshape(-1, ndim + 1)
    return shape, batch, coords


def tensor_is_valid(shape, batch, coords) -> bool:
    """What SparseTensor must accept: the documented limits, computed here with Python ints."""
    if not all(1 <= s <= INT32_MAX for s in shape) or not 1 <= batch <= INT32_MAX:
        return False
    if batch * math.prod(shape) >= KEY_LIMIT:
        return False
    upper = torch.tensor([batch, *shape])
    return bool(((coords >= 0) & (coords < upper)).all())


def build(shape, batch, coords, channels=2, seed=0):
    """The SparseTensor, checked against the prediction: SparseTensorError exactly when invalid."""
    feats = torch.randn(len(coords), channels, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    if not tensor_is_valid(shape, batch, coords):
        event("invalid tensor")
        with pytest.raises(SparseTensorError):
            SparseTensor(feats, coords, shape, batch)
        return None
    x = SparseTensor(feats, coords, shape, batch)
    assert x.coords.dtype == torch.int32 and torch.equal(x.coords.long(), coords)  # nothing wrapped
    return x


def has_duplicate(coords) -> bool:
    return len({tuple(r) for r in coords.tolist()}) < len(coords)


def brute_subm(x, weight, dilation):
    """Submanifold conv with Python ints and a dict of sites: output o reads o + (k - K // 2) * d."""
    w, f = weight.detach().numpy(), x.feats.numpy()
    kernel = weight.shape[1:-1]
    index = {tuple(c): i for i, c in enumerate(x.coords.tolist())}
    out = np.zeros((len(x), w.shape[0]))
    for row, c in enumerate(x.coords.tolist()):
        for off in itertools.product(*[range(k) for k in kernel]):
            q = (c[0], *(v + (o - k // 2) * d for v, o, k, d in zip(c[1:], off, kernel, dilation, strict=True)))
            if q in index:
                out[row] += w[(slice(None), *off)] @ f[index[q]]
    return out


def out_shape_of(shape, kernel, stride, padding, dilation, transposed):
    if transposed:
        return tuple((s - 1) * st_ - 2 * p + d * (k - 1) + 1
                     for s, k, st_, p, d in zip(shape, kernel, stride, padding, dilation, strict=True))
    return tuple((s + 2 * p - d * (k - 1) - 1) // st_ + 1
                 for s, k, st_, p, d in zip(shape, kernel, stride, padding, dilation, strict=True))


def brute_strided(x, weight, stride, padding, dilation, transposed):
    """Strided / transposed conv by a loop over (site, offset): {output coord: feature}."""
    w, f = weight.detach().numpy(), x.feats.numpy()
    kernel = weight.shape[1:-1]
    out_shape = out_shape_of(x.spatial_shape, kernel, stride, padding, dilation, transposed)
    out = {}
    for row, c in enumerate(x.coords.tolist()):
        for off in itertools.product(*[range(k) for k in kernel]):
            q = []
            for a, (p, k) in enumerate(zip(c[1:], off, strict=True)):
                if transposed:
                    q.append(p * stride[a] - padding[a] + k * dilation[a])
                else:
                    t = p + padding[a] - k * dilation[a]
                    q.append(t // stride[a] if t >= 0 and t % stride[a] == 0 else -1)
            if all(0 <= v < s for v, s in zip(q, out_shape, strict=True)):
                key = (c[0], *q)
                out[key] = out.get(key, 0) + w[(slice(None), *off)] @ f[row]
    return out


param = st.sampled_from([1, 2, 3] * 4 + [0, -1])  # mostly valid, now and then zero or negative


@FUZZ
@given(data=sparse_input(), kernel=param, dilation=param)
def test_fuzz_subm_equals_brute_force_or_refuses(data, kernel, dilation):
    x = build(*data)
    if x is None:
        return
    ndim = x.ndim
    if kernel < 1 or dilation < 1:
        with pytest.raises(ConfigError, match="kernel_size|dilation"):
            sp.SparseConvolution(ndim, 2, 3, kernel, dilation=dilation, subm=True)
        return
    conv = sp.SparseConvolution(ndim, 2, 3, kernel, dilation=dilation, subm=True, bias=False).double()
    padded = (x.batch_size, *(s + (kernel - 1) * dilation + 1 for s in x.spatial_shape))
    if has_duplicate(x.coords):
        with pytest.raises(SparseTensorError, match="duplicate|do not fit"):
            conv(x)
    elif math.prod(padded) >= KEY_LIMIT:
        with pytest.raises(SparseTensorError, match="do not fit int64 keys"):
            conv(x)
    else:
        event("compared")
        y = conv(x)
        assert torch.equal(y.coords, x.coords)
        np.testing.assert_allclose(y.feats.detach().numpy(), brute_subm(x, conv.weight, (dilation,) * ndim),
                                   rtol=1e-12, atol=1e-12)


@settings(FUZZ, max_examples=100)
@given(data=sparse_input(), kernel=param, stride=param, padding=st.sampled_from([0, 1, 2] * 3 + [-1]), dilation=param,
       transposed=st.booleans())
def test_fuzz_strided_and_transposed_equal_brute_force_or_refuse(data, kernel, stride, padding, dilation,
                                                                 transposed):
    x = build(*data)
    if x is None:
        return
    ndim = x.ndim
    args = dict(stride=stride, padding=padding, dilation=dilation, transposed=transposed, bias=False)
    if min(kernel, stride, dilation) < 1 or padding < 0:
        with pytest.raises(ConfigError, match=r"must be in \[[01], 2147483647\]"):
            sp.SparseConvolution(ndim, 2, 3, kernel, **args)
        return
    conv = sp.SparseConvolution(ndim, 2, 3, kernel, **args).double()

    def tup(v):
        return (v,) * ndim

    out_shape = out_shape_of(x.spatial_shape, tup(kernel), tup(stride), tup(padding), tup(dilation), transposed)
    if min(out_shape) < 1 or max(out_shape) > INT32_MAX or x.batch_size * math.prod(out_shape) >= KEY_LIMIT:
        with pytest.raises(SparseTensorError, match="empty output|int32 coordinate range|do not fit int64"):
            conv(x)
        return
    if has_duplicate(x.coords):
        with pytest.raises(SparseTensorError, match="duplicate"):
            conv(x)
        return
    event("compared")
    y = conv(x)
    ref = brute_strided(x, conv.weight, tup(stride), tup(padding), tup(dilation), transposed)
    keys = sorted(ref)
    assert y.spatial_shape == out_shape
    assert y.coords.tolist() == [list(k) for k in keys]  # sorted (batch, z, y, x), exactly the reachable sites
    if keys:
        np.testing.assert_allclose(y.feats.detach().numpy(), np.stack([ref[k] for k in keys]), rtol=1e-12,
                                   atol=1e-12)


@FUZZ
@given(data=sparse_input(ndims=(2, 3)), kernel=st.integers(1, 3), stride=st.integers(1, 3))
def test_fuzz_max_pool_equals_brute_force_or_refuses(data, kernel, stride):
    x = build(*data)
    if x is None:
        return
    pool = sp.SparsePool(x.ndim, kernel, stride)

    def tup(v):
        return (v,) * x.ndim

    out_shape = out_shape_of(x.spatial_shape, tup(kernel), tup(stride), tup(0), tup(1), False)
    if min(out_shape) < 1 or has_duplicate(x.coords):
        with pytest.raises(SparseTensorError, match="empty output|duplicate"):
            pool(x)
        return
    y = pool(x)
    ref = {}
    for row, c in enumerate(x.coords.tolist()):
        for off in itertools.product(range(kernel), repeat=x.ndim):
            t = [p - k for p, k in zip(c[1:], off, strict=True)]
            if all(v >= 0 and v % stride == 0 and v // stride < s for v, s in zip(t, out_shape, strict=True)):
                key = (c[0], *(v // stride for v in t))
                ref[key] = np.maximum(ref.get(key, -np.inf), x.feats[row].numpy())
    keys = sorted(ref)
    assert y.coords.tolist() == [list(k) for k in keys]
    if keys:
        np.testing.assert_array_equal(y.feats.numpy(), np.stack([ref[k] for k in keys]))


bad_value = st.one_of(st.integers(-3, 4), st.sampled_from([2**31, 2**40, 2.5, 3.0, True, "3", None, (3, 3), ()]))


@st.composite
def layer_arguments(draw):
    """(ndim, kind, kernel, stride, padding, dilation, in_channels, groups) of a conv or pool (out_channels 4).

    In two examples of three every value is plausible: a parameter is an int or ndim ints in [its lower
    bound, 4], now and then 2**8 (a kernel at the volume limit in 2-D, past it in 3-D) or 2**31 - 1 (the
    largest int allowed); channels 1, 2 or 4 and groups 1 or 2 (which 1 channel does not divide); a
    submanifold conv mostly gets stride 1. In the third, about half the values are hostile (bad_value,
    zero, negative or non-int channels and groups)."""
    hostile = draw(st.integers(0, 2)) == 0

    def rarely_bad():
        return hostile and draw(st.booleans())

    def one(low):
        return draw(st.integers(low, 4)) if draw(st.integers(0, 7)) else draw(st.sampled_from([2**8, INT32_MAX]))

    def parameter(low):
        if rarely_bad():
            return draw(bad_value)
        return one(low) if draw(st.booleans()) else tuple(one(low) for _ in range(ndim))

    ndim = draw(st.sampled_from([2, 3, 4]))
    kind = draw(st.sampled_from(["subm", "conv", "transposed", "maxpool", "avgpool"]))
    kernel, padding, dilation = parameter(1), parameter(0), parameter(1)
    stride = 1 if kind == "subm" and draw(st.integers(0, 3)) else parameter(1)
    channels = draw(st.sampled_from([0, -2, 2.0, 3]) if rarely_bad() else st.sampled_from([1, 2, 4]))
    groups = draw(st.sampled_from([4, 0, -1, True]) if rarely_bad() else st.sampled_from([1, 2]))
    return ndim, kind, kernel, stride, padding, dilation, channels, groups


def ints_or_none(value, ndim: int, low: int):
    """The ndim ints a layer must store for `value` (an int or a tuple of ndim ints, every one in
    [low, 2**31 - 1]; no bool, float or str), or None when the value is invalid."""
    if type(value) is int:
        value = (value,) * ndim
    if not isinstance(value, tuple) or len(value) != ndim or any(type(v) is not int for v in value):
        return None
    return value if all(low <= v <= INT32_MAX for v in value) else None


def expected_layer(ndim, kind, kernel, stride, padding, dilation, channels, groups):
    """({parameter: the ndim ints the layer must store}, {names of the invalid parameters}) by the
    documented limits: kernel_size, stride, dilation >= 1 and padding >= 0 (ints, at most 2**31 - 1),
    at most MAX_KERNEL_VOLUME kernel offsets, stride 1 for a submanifold conv, a pool's stride
    defaulting to its kernel; for a conv, channels and groups ints >= 1, groups dividing in_channels
    and out_channels (4)."""
    pool = kind.endswith("pool")
    if pool and stride is None:
        stride = kernel
    want = {"kernel_size": ints_or_none(kernel, ndim, 1), "stride": ints_or_none(stride, ndim, 1),
            "padding": ints_or_none(padding, ndim, 0), "dilation": ints_or_none(dilation, ndim, 1)}
    invalid = {name for name, values in want.items() if values is None}
    if want["kernel_size"] is not None and math.prod(want["kernel_size"]) > MAX_KERNEL_VOLUME:
        invalid.add("kernel_size")
    if kind == "subm" and want["stride"] not in (None, (1,) * ndim):
        invalid.add("stride")
    if not pool:
        if type(channels) is not int or not 1 <= channels <= INT32_MAX:
            invalid.add("channels")
        if type(groups) is not int or not 1 <= groups <= INT32_MAX:
            invalid.add("groups")
        elif "channels" not in invalid and (channels % groups or 4 % groups):
            invalid.add("groups")
    return want, invalid


@FUZZ
@example(args=(3, "conv", 3, 1, 3, (1, 2, 1), 4, 2))  # valid, padding 3: always run
@example(args=(2, "maxpool", (2, 3), None, (0, 4), 1, 1, 1))  # a pool's stride defaults to its kernel
@given(args=layer_arguments())
def test_fuzz_layer_parameters_are_ints_in_range_or_config_error(args):
    """Any parameter a user can type: ConfigError naming an invalid parameter exactly when the
    documented limits (expected_layer) say some parameter is invalid, else a layer that stores the
    given values as ndim Python ints."""
    ndim, kind, kernel, stride, padding, dilation, channels, groups = args
    want, invalid = expected_layer(*args)
    try:
        if kind.endswith("pool"):
            layer = sp.SparsePool(ndim, kernel, stride, padding, dilation, mode=kind[:3])
        else:
            layer = sp.SparseConvolution(ndim, channels, 4, kernel, stride, padding, dilation, groups=groups,
                                         subm=kind == "subm", transposed=kind == "transposed")
    except ConfigError as error:
        event("refused")
        assert invalid, f"valid parameters refused: {args!r}: {error}"
        assert any(name in str(error) for name in invalid), f"{error} names none of the invalid {sorted(invalid)}"
        return
    event("built")
    assert not invalid, f"invalid {sorted(invalid)} accepted: {args!r}"
    for name, values in want.items():
        stored = getattr(layer, name)
        assert stored == values and all(type(v) is int for v in stored), (name, stored, values)
    assert math.prod(layer.kernel_size) <= MAX_KERNEL_VOLUME


@FUZZ
@given(dtype=st.sampled_from([torch.int64, torch.int32, torch.int16, torch.uint8, torch.float32, torch.bool]),
       values=st.lists(st.sampled_from([0, 1, 5, 6, -1, 2**31 - 1, 2**31, 2**32 + 1, -(2**32) + 1]), min_size=4,
                       max_size=12))
def test_fuzz_coordinate_dtypes_never_wrap(dtype, values):
    """Coords of any dtype: accepted only if every value is an in-range integer, and then unchanged."""
    n = len(values) // 4
    wide = torch.tensor(values[:4 * n], dtype=torch.int64).reshape(n, 4)
    try:
        coords = wide.to(dtype)  # the caller's own cast may wrap; the engine sees `coords`
    except RuntimeError:
        return
    try:
        x = SparseTensor(torch.zeros(n, 1), coords, (7, 7, 7), 2)
    except SparseTensorError:
        assert dtype in (torch.float32, torch.bool) or not bool(
            ((coords.long() >= 0) & (coords.long() < torch.tensor([2, 7, 7, 7]))).all())
        return
    assert dtype not in (torch.float32, torch.bool)
    assert torch.equal(x.coords.long(), coords.long())


def test_key_space_refused_before_any_key_is_built(monkeypatch):
    """The grids of the probe: 2**21 per axis (a radix-sort hang before) and 2**22 (wrong neighbours)
    are refused by SparseTensor; a grid that fits but whose padded submanifold grid does not is
    refused by the map builder before linear keys or a sort run."""
    coords = torch.tensor([[0, 5, 5, 5], [0, 5, 5, 6], [0, 6, 5, 5]], dtype=torch.int32)
    for side in (2**21, 2**22):
        with pytest.raises(SparseTensorError, match=r"do not fit int64 keys \(at most 2\*\*63 - 1\)"):
            SparseTensor(torch.ones(3, 1), coords, (side,) * 3, 1)
    x = SparseTensor(torch.ones(3, 1), coords, (2**21 - 1,) * 3, 1)

    def forbidden(*args):
        raise AssertionError("a key was built for a grid beyond int64")

    monkeypatch.setattr(kernel_map_module.km, "linear_keys", forbidden)
    monkeypatch.setattr(kernel_map_module.km, "radix_argsort", forbidden)
    with pytest.raises(SparseTensorError, match="submanifold map of kernel .* do not fit int64 keys"):
        sp.SubMConv3d(1, 1, 3)(x)


def test_radix_sort_terminates_at_the_largest_key():
    """The radix sort with a key space of 2**63 - 1 (the largest allowed) ends and sorts, in a
    subprocess with a timeout: a loop that shifted past 63 bits would never end."""
    code = ("import numpy as np; from pc3d_ops import kernel_map as km; "
            "k = np.random.default_rng(0).integers(0, 2**63 - 1, 5000, dtype=np.int64); "
            "s, o = km.radix_argsort(k, 2**63 - 1); "
            "assert (s == np.sort(k)).all() and (k[o] == s).all(); print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.stdout.strip() == "ok", out.stderr


def test_huge_grid_strided_map_uses_memory_of_the_sites_not_the_grid():
    """A strided conv on a 2**30-wide grid tabulates only the coordinates present (a dense table
    would need tens of GB) and matches the brute force."""
    coords = torch.tensor([[0, 0, 2**30 - 1], [0, 1, 2**30 - 2], [1, 5, 12345677], [0, 0, 2**30 - 3]])
    x = build((6, 2**30), 2, coords)
    conv = sp.SparseConv2d(2, 3, 3, 2, 1, bias=False).double()
    y = conv(x)
    ref = brute_strided(x, conv.weight, (2, 2), (1, 1), (1, 1), False)
    assert y.coords.tolist() == [list(k) for k in sorted(ref)]
    np.testing.assert_allclose(y.feats.detach().numpy(), np.stack([ref[k] for k in sorted(ref)]), rtol=1e-12)


# ------------------------------------------------------------------------------------------ spconv


def _spconv_available() -> bool:
    from pc3d.sparse.backend import _spconv_or_error

    return _spconv_or_error()[0] is not None


@pytest.mark.skipif(not _spconv_available(), reason="spconv is not installed")
@settings(deadline=None, max_examples=25, suppress_health_check=list(HealthCheck), derandomize=True)
@given(data=sparse_input(ndims=(2, 3), max_sites=6), kernel=st.sampled_from([1, 3]), stride=st.integers(1, 2),
       subm=st.booleans())
def test_fuzz_spconv_backend_matches_native_or_refuses(data, kernel, stride, subm):
    """The spconv backend (CPU, ConvAlgo.Native) gets the same checks, plus its own CPU limit (int32
    keys): either the native result or a pc3d error, never spconv's silent wrong map."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x = build(*data)
        if x is None:
            return
        conv = sp.SparseConvolution(x.ndim, 2, 3, kernel, 1 if subm else stride, kernel // 2, subm=subm,
                                    backend="spconv").double()
        try:
            y = conv(x)
        except Pc3dError as error:
            event(f"refused: {str(error)[:40]}")
            message = str(error)
            assert any(m in message for m in ("duplicate", "int32 keys", "empty output", "no sites"))
            if "no sites" in message:
                assert len(x) == 0
            if "int32 keys" in message:
                assert x.batch_size * math.prod(x.spatial_shape) >= INT32_MAX or not subm
            if "duplicate" in message:
                assert has_duplicate(x.coords)
            return
        assert not has_duplicate(x.coords)
        event("compared")
        conv.backend = "native"
        ref = conv(x)
        got = dict(zip(map(tuple, y.coords.tolist()), y.feats.detach().numpy(), strict=True))
        want = dict(zip(map(tuple, ref.coords.tolist()), ref.feats.detach().numpy(), strict=True))
        assert got.keys() == want.keys()
        for key, value in want.items():
            np.testing.assert_allclose(got[key], value, rtol=1e-9, atol=1e-9)
