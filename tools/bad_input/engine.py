"""Engine cases: pc3d.sparse and pc3d.voxel limits, results checked against a numpy reference."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .core import Ctx, case, expect


def ref_conv(coords, feats, weight, bias, kernel, stride, padding, dilation, subm, spatial_shape):
    """{coord tuple: feature vector} of a sparse conv (spconv semantics), by brute force (small inputs)."""
    coords = [tuple(int(v) for v in c) for c in coords]
    table = {c: i for i, c in enumerate(coords)}
    nd = len(kernel)
    ks = list(np.ndindex(*kernel))
    out: dict = {}
    if subm:
        for c in coords:
            acc = np.zeros(weight.shape[0], np.float64)
            for k in ks:
                src = (c[0], *[c[1 + a] + (k[a] - kernel[a] // 2) * dilation[a] for a in range(nd)])
                if src in table:
                    acc += weight[(slice(None), *k, slice(None))] @ feats[table[src]]
            out[c] = acc + (bias if bias is not None else 0)
        return out
    oshape = [(spatial_shape[a] + 2 * padding[a] - dilation[a] * (kernel[a] - 1) - 1) // stride[a] + 1
              for a in range(nd)]
    for c in coords:
        for k in ks:
            o = []
            for a in range(nd):
                v = c[1 + a] + padding[a] - k[a] * dilation[a]
                if v % stride[a] or not 0 <= v // stride[a] < oshape[a]:
                    break
                o.append(v // stride[a])
            else:
                key = (c[0], *o)
                out.setdefault(key, np.zeros(weight.shape[0], np.float64))
                out[key] += weight[(slice(None), *k, slice(None))] @ feats[table[c]]
    if bias is not None:
        for key in out:
            out[key] = out[key] + bias
    return out


def _conv_check(module, x, subm):
    """valid(result) comparing a conv's output to ref_conv."""
    w = module.weight.detach().double().numpy()
    b = None if module.bias is None else module.bias.detach().double().numpy()
    ref = ref_conv(x.coords.numpy(), x.feats.detach().double().numpy(), w, b, module.kernel_size, module.stride,
                   module.padding, module.dilation, subm, x.spatial_shape)

    def check(y):
        got = {tuple(int(v) for v in c): f for c, f in zip(y.coords.numpy(), y.feats.detach().double().numpy(),
                                                            strict=True)}
        if set(got) != set(ref):
            return False, f"output sites differ: {len(got)} vs reference {len(ref)}"
        nan_same = all(np.array_equal(np.isnan(got[k]), np.isnan(ref[k])) for k in ref)
        diffs = [np.abs(got[k] - ref[k])[~np.isnan(ref[k]) & ~np.isnan(got[k])] for k in ref]
        err = max((float(d.max()) for d in diffs if d.size), default=0.0)
        ok = err < 1e-3 and nan_same
        return ok, f"{len(got)} sites, max |diff| {err:.2e} vs the numpy reference" + ("" if nan_same else
                                                                                          ", NaN pattern differs")
    return check


def _torch():
    import torch

    return torch


def _st(coords, feats=None, shape=(8, 8, 8), batch=1, channels=4, cdtype=None, fdtype=None):
    import torch

    from pc3d.sparse import SparseTensor

    coords = torch.as_tensor(np.asarray(coords), dtype=cdtype or torch.int32)
    if feats is None:
        feats = torch.as_tensor(np.random.default_rng(0).standard_normal((len(coords), channels)),
                                dtype=fdtype or torch.float32)
    return SparseTensor(feats, coords, shape, batch)


def _rand_coords(n, shape, batch=1, seed=0, scale=None):
    rng = np.random.default_rng(seed)
    upper = np.array(shape if scale is None else [min(s, scale) for s in shape])
    c = np.unique(np.concatenate([rng.integers(0, batch, (n, 1)), rng.integers(0, upper, (n, len(shape)))], 1), axis=0)
    return c


def _subm(cin=4, cout=16, k=3, **kw):
    import torch

    from pc3d.sparse import SubMConv3d

    torch.manual_seed(0)
    return SubMConv3d(cin, cout, k, bias=True, **kw)


def _sconv(cin=4, cout=16, k=3, s=2, p=1, **kw):
    import torch

    from pc3d.sparse import SparseConv3d

    torch.manual_seed(0)
    return SparseConv3d(cin, cout, k, stride=s, padding=p, bias=True, **kw)


def _engine_run(make_x: Callable, make_conv: Callable, subm: bool, names=(), legit=False):
    import torch

    def action():
        x = make_x()
        conv = make_conv()
        action.check = _conv_check(conv, x, subm)
        with torch.no_grad():
            return conv(x)

    def valid(y):
        return action.check(y)
    return expect(action, names, valid, legit)


def _eng(name: str, fn: Callable[[], object], names=(), valid=None, legit=False):
    @case("engine", name)
    def run(ctx: Ctx):
        return expect(fn, names, valid, legit)
    return run


def _cluster(shape, n=40, offset=None):
    """Unique coords of a tight cluster (neighbours exist) placed at `offset` in a (possibly huge) grid."""
    base = np.array(offset if offset is not None else [s // 2 for s in shape], np.int64)
    c = _rand_coords(n, (4, 4, 4), seed=1)
    c[:, 1:] = c[:, 1:] + base - 2
    return c


@case("engine", "sparse/int64-coords-beyond-int32")
def _(ctx):
    import torch

    coords = np.array([[0, 1, 1, 1], [0, 1, 1, 2 ** 32 + 2]], np.int64)
    return expect(lambda: _st(coords, shape=(8, 8, 8), cdtype=torch.int64), ["int32", "2", "coord"],
                  valid=lambda x: (bool((x.coords.long() == torch.as_tensor(coords)).all()), "coords kept as given"))


@case("engine", "sparse/spatial-shape-beyond-int32")
def _(ctx):
    import torch

    shape = (2 ** 31 + 10, 8, 8)
    coords = np.array([[0, 2 ** 31 + 5, 1, 1]], np.int64)
    return expect(lambda: _st(coords, shape=shape, cdtype=torch.int64), ["spatial_shape", "int32", str(2 ** 31 + 10)],
                  valid=lambda x: (int(x.coords[0, 1]) == 2 ** 31 + 5, f"coords {x.coords.tolist()}"))


@case("engine", "sparse/subm-huge-shape-2^22-per-axis")
def _(ctx):
    shape = (2 ** 22,) * 3
    return _engine_run(lambda: _st(_cluster(shape, offset=[2 ** 22 - 3] * 3), shape=shape), _subm, True,
                       ["spatial_shape", "key"], legit=False)


@case("engine", "sparse/strided-huge-shape-2^21-per-axis")
def _(ctx):
    shape = (2 ** 21,) * 3
    return _engine_run(lambda: _st(_cluster(shape, offset=[2 ** 21 - 3] * 3), shape=shape), _sconv, False,
                       ["spatial_shape", "key"])


@case("engine", "sparse/subm-shape-2^20-per-axis-legit")
def _(ctx):
    shape = (2 ** 20,) * 3
    return _engine_run(lambda: _st(_cluster(shape, offset=[7, 2 ** 20 - 3, 123456]), shape=shape), _subm, True,
                       legit=True)


@case("engine", "sparse/subm-4d-2^16-per-axis")
def _(ctx):
    import torch

    from pc3d.sparse import SubMConv4d

    shape = (2 ** 16,) * 4
    c = _rand_coords(30, (3, 3, 3, 3), seed=2)
    c[:, 1:] += 2 ** 16 - 3

    def action():
        x = _st(c, shape=shape)
        torch.manual_seed(0)
        conv = SubMConv4d(4, 8, 3, bias=True)
        action.check = _conv_check(conv, x, True)
        with torch.no_grad():
            return conv(x)
    return expect(action, ["spatial_shape", "key"], lambda y: action.check(y))


_eng("sparse/negative-coords", lambda: _st([[0, -1, 2, 2], [0, 1, 1, 1]]), ["coordinate", "-1"])
_eng("sparse/coords-outside-shape", lambda: _st([[0, 8, 2, 2]]), ["coordinate", "8"])
_eng("sparse/batch-index-beyond-batch-size", lambda: _st([[3, 1, 2, 2]], batch=2), ["batch"])
_eng("sparse/coords-3-columns-for-3d", lambda: _st([[1, 2, 2]]), ["coords"])
_eng("sparse/coords-float", lambda: _st([[0, 1, 2, 2]], cdtype=_torch().float32), ["coords"])
_eng("sparse/feats-int", lambda: _st([[0, 1, 2, 2]], fdtype=_torch().int64), ["feats"])
_eng("sparse/feats-rows-mismatch", lambda: _st([[0, 1, 2, 2], [0, 1, 2, 3]],
                                               feats=_torch().zeros(3, 4)), ["feats"])
_eng("sparse/spatial-shape-zero", lambda: _st(np.zeros((0, 4), np.int32), shape=(0, 8, 8)), ["spatial_shape"])
_eng("sparse/spatial-shape-negative", lambda: _st(np.zeros((0, 4), np.int32), shape=(-5, 8, 8)), ["spatial_shape"])
_eng("sparse/spatial-shape-5d", lambda: _st(np.zeros((0, 6), np.int32), shape=(2, 2, 2, 2, 2)), ["spatial_shape"])
_eng("sparse/batch-size-zero-with-sites", lambda: _st([[0, 1, 1, 1]], batch=0), ["batch"])


@case("engine", "sparse/duplicate-coords-subm")
def _(ctx):
    return _engine_run(lambda: _st([[0, 1, 1, 1], [0, 1, 1, 1], [0, 2, 2, 2]]), _subm, True, ["duplicate"])


@case("engine", "sparse/duplicate-coords-strided")
def _(ctx):
    return _engine_run(lambda: _st([[0, 1, 1, 1], [0, 3, 3, 3], [0, 1, 1, 1]]), _sconv, False, ["duplicate"])


@case("engine", "sparse/duplicate-coords-dense")
def _(ctx):
    return expect(lambda: _st([[0, 1, 1, 1], [0, 1, 1, 1]]).dense(), ["duplicate"])


for _arg, _val in (("kernel_size", 0), ("kernel_size", -1), ("stride", 0), ("stride", -2), ("dilation", 0),
                   ("padding", -1)):
    def _mk(arg=_arg, val=_val):
        from pc3d.sparse import SparseConv3d

        kw = {"kernel_size": 3, "stride": 1, "padding": 0, "dilation": 1, arg: val}
        conv = SparseConv3d(4, 8, **kw)
        return conv(_st(_rand_coords(20, (8, 8, 8))))
    _eng(f"sparse/conv-{_arg}-{_val}", _mk, [_arg])


def _maxpool_k0():
    from pc3d.sparse import SparseMaxPool3d

    return SparseMaxPool3d(0, 1)(_st(_rand_coords(10, (8, 8, 8))))


_eng("sparse/maxpool-kernel-0", _maxpool_k0, ["kernel_size"])


def _subm_stride_2():
    return _subm(stride=2)(_st(_rand_coords(20, (8, 8, 8))))


def _chan_mismatch():
    return _subm(cin=4)(_st(_rand_coords(20, (8, 8, 8)), channels=3))


def _groups_bad():
    from pc3d.sparse import SubMConv3d

    return SubMConv3d(4, 6, 3, groups=4)


def _inverse_no_key():
    from pc3d.sparse import SparseInverseConv3d

    return SparseInverseConv3d(8, 4, 3)


def _inverse_unknown_key():
    from pc3d.sparse import SparseInverseConv3d

    return SparseInverseConv3d(4, 4, 3, indice_key="never_built")(_st(_rand_coords(10, (8, 8, 8))))


def _float64_feats():
    import torch

    x = _st(_rand_coords(20, (8, 8, 8)), fdtype=torch.float64)
    return _subm()(x)


def _requires_grad_int_coords_on_meta():
    import torch

    return _st([[0, 1, 1, 1]], feats=torch.zeros(1, 4, device="meta"))


_eng("sparse/subm-stride-2", _subm_stride_2, ["stride", "subm", "SubM"])
_eng("sparse/channel-mismatch", _chan_mismatch, ["channel", "in_channels", "4", "3"])
_eng("sparse/groups-not-dividing", _groups_bad, ["groups"])
_eng("sparse/inverse-without-indice-key", _inverse_no_key, ["indice_key"])
_eng("sparse/inverse-unknown-indice-key", _inverse_unknown_key, ["never_built"])
_eng("sparse/feats-float64-weights-float32", _float64_feats, ["dtype", "float64", "Double"],
     valid=lambda y: (y.feats.shape[1] == 16 and bool(_torch().isfinite(y.feats).all()),
                      f"output {y.feats.dtype} {tuple(y.feats.shape)}"))
_eng("sparse/feats-and-coords-on-different-devices", _requires_grad_int_coords_on_meta, ["device", "meta"])


@case("engine", "sparse/empty-tensor-subm-legit")
def _(ctx):
    return _engine_run(lambda: _st(np.zeros((0, 4), np.int32)), _subm, True, legit=True)


@case("engine", "sparse/empty-tensor-strided-legit")
def _(ctx):
    return _engine_run(lambda: _st(np.zeros((0, 4), np.int32)), _sconv, False, legit=True)


@case("engine", "sparse/nan-features")
def _(ctx):
    import torch

    def make():
        c = _cluster((16, 16, 16), n=30)
        f = torch.randn(len(c), 4)
        f[0, 1] = float("nan")
        return _st(c, feats=f, shape=(16, 16, 16))
    outcome, msg = _engine_run(make, _subm, True, ["NaN", "nan"])
    if outcome == "OK-valid":
        msg += " (NaN propagates exactly to the neighbours of the NaN site)"
    return outcome, msg


@case("engine", "sparse/even-kernel-subm")
def _(ctx):
    return _engine_run(lambda: _st(_cluster((16, 16, 16), n=30), shape=(16, 16, 16)), lambda: _subm(k=2), True,
                       ["kernel_size", "even", "odd"])


@case("engine", "sparse/strided-shape-smaller-than-kernel")
def _(ctx):
    return _engine_run(lambda: _st([[0, 0, 0, 0]], shape=(1, 1, 1)), lambda: _sconv(k=3, s=2, p=0), False,
                       ["spatial_shape", "kernel"])


@case("engine", "sparse/strided-random-legit")
def _(ctx):
    return _engine_run(lambda: _st(_rand_coords(200, (12, 10, 9), batch=2), shape=(12, 10, 9), batch=2), _sconv,
                       False, legit=True)


# voxelizers


def _vox_points(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.uniform([-10, -10, -2], [10, 10, 1], (n, 3)), rng.random((n, 1))], 1).astype(np.float32)


def _hard(voxel=0.5, rng=(-10, -10, -2, 10, 10, 1), p=5, m=20000, **kw):
    from pc3d.voxel import HardVoxelizer

    return HardVoxelizer(voxel, rng, p, m, **kw)


def _dyn(voxel=0.5, rng=(-10, -10, -2, 10, 10, 1), **kw):
    from pc3d.voxel import DynamicVoxelizer

    return DynamicVoxelizer(voxel, rng, **kw)


_eng("voxel/voxel-size-zero", lambda: _hard(0.0)(_vox_points()), ["voxel_size"])
_eng("voxel/voxel-size-negative", lambda: _dyn([0.5, -0.5, 0.5])(_vox_points()), ["voxel_size"])
_eng("voxel/voxel-size-nan", lambda: _dyn(float("nan"))(_vox_points()), ["voxel_size"])
_eng("voxel/range-inverted", lambda: _hard(0.5, (10, 10, 1, -10, -10, -2))(_vox_points()), ["point_range", "range"])
_eng("voxel/range-5-numbers", lambda: _dyn(0.5, (0, 0, 0, 1, 1))(_vox_points()), ["point_range", "range"])
_eng("voxel/max-voxels-zero", lambda: _hard(m=0)(_vox_points()), ["max_voxels"])
_eng("voxel/max-points-negative", lambda: _hard(p=-1)(_vox_points()), ["max_points"])
_eng("voxel/points-2-columns", lambda: _dyn()(_vox_points()[:, :2]), ["column", "shape"])
_eng("voxel/points-int64", lambda: _dyn()(_vox_points().astype(np.int64)), ["dtype", "int64"])
_eng("voxel/points-list-not-array", lambda: _dyn()(_vox_points().tolist()), ["numpy", "list"])
_eng("voxel/nan-policy-bogus", lambda: _dyn(nan_policy="ignore"), ["nan_policy"])


@case("engine", "voxel/some-nan-points-warn")
def _(ctx):
    pts = _vox_points()
    pts[::100, 0] = np.nan
    return expect(lambda: _dyn()(pts), ["20"])


@case("engine", "voxel/all-nan-points")
def _(ctx):
    pts = np.full((50, 4), np.nan, np.float32)
    return expect(lambda: _dyn()(pts), ["50", "NaN", "nan"])


@case("engine", "voxel/max-voxels-exceeded-counted")
def _(ctx):
    def check(hv):
        ok = hv.n_dropped_voxels > 0 and len(hv) == 10
        return ok, f"{len(hv)} voxels kept, n_dropped_voxels={hv.n_dropped_voxels}, n_dropped_points=" \
                   f"{hv.n_dropped_points}"
    return expect(lambda: _hard(m=10)(_vox_points()), [], check, legit=True)


@case("engine", "voxel/key-space-beyond-int64")
def _(ctx):
    pts = _vox_points(200)

    def check(dv):
        ref = np.floor((pts[:, :3] - np.array([-10, -10, -2], np.float32)) / np.float32(1e-6)).astype(np.int64)
        got = dv.coords[:, 1:][:, ::-1][dv.point_to_voxel]
        ok = np.array_equal(got, ref[dv.keep])
        return ok, f"{len(dv)} voxels; per-point cells {'match' if ok else 'DIFFER from'} floor((p - min) / size)"
    return expect(lambda: _dyn(1e-6)(pts), ["voxel_size", "grid", "key", "int"], check)


@case("engine", "voxel/cells-beyond-int32-per-axis")
def _(ctx):
    pts = _vox_points(200)

    def check(dv):
        ref = np.floor((pts[:, :3].astype(np.float64) + [10, 10, 2]) / 1e-9).astype(np.int64)
        got = np.asarray(dv.coords, np.int64)[:, 1:][:, ::-1][dv.point_to_voxel]
        ok = np.allclose(got, ref[dv.keep], rtol=1e-6)
        return ok, f"{len(dv)} voxels, coords dtype {dv.coords.dtype}; cells {'match' if ok else 'DIFFER'}"
    return expect(lambda: _dyn(1e-9)(pts), ["voxel_size", "grid", "int32", "cells"], check)


@case("engine", "voxel/grid-sample-empty-cloud-legit")
def _(ctx):
    from pc3d.voxel import grid_sample

    def check(r):
        coords, shape, inverse, keep = r
        return len(coords) == 0 and len(inverse) == 0 and len(keep) == 0, f"{len(coords)} voxels, shape {shape}"
    return expect(lambda: grid_sample(np.zeros((0, 4), np.float32), 0.1), [], check, legit=True)


@case("engine", "voxel/out-of-range-points-counted")
def _(ctx):
    pts = _vox_points()
    pts[:300, 0] += 100

    def check(hv):
        return hv.n_cropped == 300, f"n_cropped={hv.n_cropped} of 300 moved out of range"
    return expect(lambda: _hard()(pts), [], check, legit=True)
