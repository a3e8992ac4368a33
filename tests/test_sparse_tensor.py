"""SparseTensor behaviour: conversions, map caching, input validation, empty inputs, determinism, memory."""
from __future__ import annotations

import gc
import subprocess
import sys
import weakref

import numpy as np
import pytest
import torch
from conftest import random_sparse
from pc3d_ops import kernel_map as km_kernels
from pc3d_ops import sparse_conv as kernels

import pc3d.sparse as sp
import pc3d.sparse.conv as conv_module
from pc3d.errors import ConfigError, SparseTensorError
from pc3d.sparse import SparseTensor, cat_features
from pc3d.sparse.kernel_map import KernelMap

SHAPE = (7, 9, 11)


def random_tensor(shape=SHAPE, channels=4, *, batch=2, occupancy=0.3, empty=None, seed=0):
    """float32 SparseTensor on shuffled random sites; sample `empty` has none."""
    x = random_sparse(shape, channels, batch=batch, occupancy=occupancy, empty=empty, seed=seed)
    return x


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ------------------------------------------------------------------------------------ conversions
@pytest.mark.parametrize("channels_first", [True, False])
def test_dense_from_dense_round_trip(channels_first):
    """dense() then from_dense() gives back the same sites (sorted) and features."""
    x = random_tensor(empty=1)
    d = x.dense(channels_first)
    assert d.shape == ((2, 4, *SHAPE) if channels_first else (2, *SHAPE, 4))
    y = SparseTensor.from_dense(d, channels_first)
    order = np.lexsort(x.coords.numpy().T[::-1])
    assert torch.equal(y.coords, x.coords[order])
    assert torch.equal(y.feats, x.feats[order])
    assert y.spatial_shape == SHAPE and y.batch_size == 2
    assert torch.equal(y.dense(channels_first), d)


def test_replace_feature_keeps_coords_and_map_cache():
    """replace_feature shares coords and the very same maps dict; a conv on it reuses the map."""
    x = random_tensor()
    sp.SubMConv3d(4, 6, 3)(x)
    kmap = next(iter(x.maps.values()))
    y = x.replace_feature(x.feats * 2)
    assert y.coords is x.coords and y.maps is x.maps and y.indice_dict is x.indice_dict
    sp.SubMConv3d(4, 6, 3)(y)
    assert len(x.maps) == 1 and next(iter(x.maps.values())) is kmap
    with pytest.raises(SparseTensorError, match=rf"\[{len(x)}, C\]"):
        x.replace_feature(x.feats[:-1])


def test_cat_features_concatenates_on_shared_sites():
    """cat_features joins channels of tensors on the same sites and refuses different sites."""
    x = random_tensor()
    y = sp.SubMConv3d(4, 6, 3)(x)
    z = cat_features([x, y])
    assert z.coords is x.coords and z.maps is x.maps
    assert torch.equal(z.feats, torch.cat([x.feats, y.feats], 1))
    with pytest.raises(SparseTensorError, match="share their coordinates"):
        cat_features([x, random_tensor(seed=1)])


@pytest.mark.parametrize("mode", ["mean", "max", "sum"])
def test_global_pool_per_sample_with_empty_sample(mode):
    """global_pool reduces each sample's features; a sample without sites gives zeros."""
    x = random_tensor(batch=3, empty=1)
    out = x.global_pool(mode)
    assert out.shape == (3, 4)
    for b in range(3):
        rows = x.feats[x.coords[:, 0] == b]
        ref = (torch.zeros(4) if len(rows) == 0 else
               {"mean": rows.mean(0), "max": rows.max(0).values, "sum": rows.sum(0)}[mode])
        torch.testing.assert_close(out[b], ref)
    assert torch.equal(out[1], torch.zeros(4))
    with pytest.raises(SparseTensorError, match="mode"):
        x.global_pool("median")


def test_prune_keeps_masked_sites():
    """prune keeps the masked rows on new coordinates (no shared map) and rejects a bad mask."""
    x = random_tensor()
    sp.SubMConv3d(4, 6, 3)(x)
    keep = torch.arange(len(x)) % 3 != 0
    y = x.prune(keep)
    assert torch.equal(y.coords, x.coords[keep]) and torch.equal(y.feats, x.feats[keep])
    assert y.maps is not x.maps and len(y.maps) == 0
    out = sp.SubMConv3d(4, 6, 3)(y)
    assert len(out) == len(y)
    with pytest.raises(SparseTensorError, match="bool mask"):
        x.prune(keep.long())


def test_to_float64_keeps_sites_and_runs_in_double():
    """.to(torch.float64) converts the features, keeps coords and maps, and a double conv runs on it."""
    x = random_tensor()
    y = x.to(torch.float64)
    assert y.feats.dtype == torch.float64 and y.coords is x.coords and y.maps is x.maps
    assert torch.equal(y.feats, x.feats.double())
    out = sp.SubMConv3d(4, 6, 3).double()(y)
    assert out.feats.dtype == torch.float64 and len(out) == len(x)


# ---------------------------------------------------------------------------------------- errors
def duplicate_tensor():
    x = random_tensor()
    coords = torch.cat([x.coords, x.coords[3:4]])
    return SparseTensor(torch.cat([x.feats, x.feats[:1]]), coords, SHAPE, 2), x.coords[3].tolist()


@pytest.mark.parametrize("layer", [
    lambda: sp.SubMConv3d(4, 6, 3), lambda: sp.SparseConv3d(4, 6, 3, 2, 1),
    lambda: sp.SparseConv3d(4, 6, 2, 2), lambda: sp.SparseMaxPool3d(3, 2, 1)])
def test_duplicate_coordinates_raise_when_the_map_is_built(layer):
    """A duplicated site is an error naming the coordinate when a conv or pool builds its map."""
    x, dup = duplicate_tensor()
    with pytest.raises(SparseTensorError, match=rf"duplicate coordinate \[{', '.join(map(str, dup))}\]"):
        layer()(x)


@pytest.mark.parametrize("layer", [lambda: sp.SparseConv3d(1, 1, 2, 2), lambda: sp.SparseMaxPool3d(2, 2)])
def test_duplicate_that_reaches_no_output_still_raises(layer):
    """A duplicate at z = 6 of a 7-deep grid (outside every k2 s2 window) is still reported."""
    coords = torch.tensor([[0, 1, 1, 1], [0, 6, 0, 0], [0, 2, 3, 4], [0, 6, 0, 0]], dtype=torch.int32)
    x = SparseTensor(torch.ones(4, 1), coords, (7, 8, 8), 1)
    with pytest.raises(SparseTensorError, match=r"duplicate coordinate \[0, 6, 0, 0\]"):
        layer()(x)


def test_duplicate_coordinates_raise_on_dense():
    """dense() refuses duplicated sites instead of silently keeping one of them."""
    x, dup = duplicate_tensor()
    with pytest.raises(SparseTensorError, match="duplicate coordinate"):
        x.dense()


@pytest.mark.parametrize("bad,match", [
    ([0, 7, 0, 0], "outside"), ([0, 0, 9, 0], "outside"), ([0, 0, 0, -1], "outside"),
    ([2, 0, 0, 0], "batch_size 2"), ([-1, 0, 0, 0], "outside")])
def test_out_of_range_coordinates_raise(bad, match):
    """Coordinates outside the grid, negative, or with batch >= batch_size are rejected with the row."""
    coords = torch.tensor([[0, 1, 1, 1], bad, [1, 2, 2, 2]], dtype=torch.int32)
    with pytest.raises(SparseTensorError, match=match) as err:
        SparseTensor(torch.zeros(3, 4), coords, SHAPE, 2)
    assert "row 1" in str(err.value) and str(bad) in str(err.value)


@pytest.mark.parametrize("feats,coords,match", [
    (torch.zeros(3, 4), torch.zeros(3, 4, dtype=torch.float32), "integers"),
    (torch.zeros(3, 4), torch.zeros(3, 3, dtype=torch.int32), r"\[N, 4\]"),
    (torch.zeros(3, 4), torch.zeros(3, dtype=torch.int32), r"\[N, 4\]"),
    (torch.zeros(3, 4), torch.zeros(3, 4, 1, dtype=torch.int32), r"\[N, 4\]"),
    (torch.zeros(5, 4), torch.zeros(3, 4, dtype=torch.int32), "N = 3"),
    (torch.zeros(3), torch.zeros(3, 4, dtype=torch.int32), r"\[N, C\]"),
    (torch.zeros(3, 4, dtype=torch.int64), torch.zeros(3, 4, dtype=torch.int32), "floating point"),
])
def test_malformed_inputs_raise(feats, coords, match):
    """Float coords, wrong coords rank, feats/coords length mismatch and integer feats are rejected."""
    with pytest.raises(SparseTensorError, match=match):
        SparseTensor(feats, coords, SHAPE, 2)


def test_int64_coordinates_beyond_int32_are_refused_not_wrapped():
    """2**32 + 1 would wrap to 1 in int32: it is refused with the row and the allowed range."""
    coords = torch.tensor([[0, 1, 1, 1], [0, 2**32 + 1, 1, 1]], dtype=torch.int64)
    with pytest.raises(SparseTensorError, match=r"allowed: batch \[0, 0\], axis 0 \[0, 6\].*row 1 = "
                                                r"\[0, 4294967297, 1, 1\]"):
        SparseTensor(torch.zeros(2, 4), coords, SHAPE, 1)
    x = SparseTensor(torch.zeros(2, 4), coords.clamp(max=6), SHAPE, 1)  # in range: cast, unchanged
    assert x.coords.dtype == torch.int32 and x.coords.tolist() == [[0, 1, 1, 1], [0, 6, 1, 1]]


@pytest.mark.parametrize("shape,batch,match", [
    ((7, -1, 11), 2, r"spatial_shape must be in \[1, 2147483647\]"), ((7, 2**31, 11), 2, "spatial_shape"),
    ((7, 9.5, 11), 2, "spatial_shape must be an int or"), ((), 2, "1 to 4 dims"), (7, 2, "sequence"),
    (SHAPE, 0, r"batch_size must be an int in \[1, 2147483647\]"), (SHAPE, 2.0, "batch_size"),
    ((2**21,) * 3, 1, r"2\*\*63\.0\) do not fit int64 keys"), ((2**22,) * 3, 1, "do not fit int64 keys")])
def test_bad_spatial_shape_or_batch_size_raise(shape, batch, match):
    """Extents beyond int32, non-integers, an empty batch and grids whose keys pass int64 are refused."""
    with pytest.raises(SparseTensorError, match=match):
        SparseTensor(torch.zeros(0, 4), torch.zeros(0, 1 + (len(shape) if isinstance(shape, tuple) else 1),
                                                    dtype=torch.int32), shape, batch)


@pytest.mark.parametrize("make,match", [
    (lambda: sp.SubMConv3d(4, 4, 0), r"kernel_size must be in \[1, "), (lambda: sp.SubMConv3d(4, 4, -1), "kernel_size"),
    (lambda: sp.SparseConv3d(4, 4, 3, 0), r"stride must be in \[1, "), (lambda: sp.SparseConv3d(4, 4, 3, -2), "stride"),
    (lambda: sp.SparseConv3d(4, 4, 3, 1, dilation=0), r"dilation must be in \[1, "),
    (lambda: sp.SparseConv3d(4, 4, 3, 1, padding=-1), r"padding must be in \[0, "),
    (lambda: sp.SparseConv3d(4, 4, 2.5), "kernel_size must be an int or 3 ints"),
    (lambda: sp.SparseConv3d(4, 4, (3, 3)), "kernel_size must be an int or 3 ints"),
    (lambda: sp.SparseConv3d(4, 4, 100), "more than the engine's 65536"),
    (lambda: sp.SparseConv3d(4, 4, 3, groups=0), r"groups must be an int in \[1, "),
    (lambda: sp.SparseConv3d(0, 4, 3), "in_channels"),
    (lambda: sp.SubMConv3d(4, 4, 3, stride=2), "submanifold conv keeps its input sites: stride must be 1"),
    (lambda: sp.SparseMaxPool3d(0), "kernel_size"), (lambda: sp.SparseAvgPool3d(2, 0), "stride")])
def test_zero_negative_or_non_int_layer_parameters_raise_config_error(make, match):
    """kernel_size / stride / dilation 0 used to raise ZeroDivisionError deep in the map builder."""
    with pytest.raises(ConfigError, match=match):
        make()


def test_transposed_output_beyond_int32_is_refused():
    """A transposed conv whose output grid passes int32 coordinates is refused before any map."""
    x = SparseTensor(torch.ones(1, 1), torch.zeros(1, 4, dtype=torch.int32), (4, 4, 2**30), 1)
    with pytest.raises(SparseTensorError, match="beyond the int32 coordinate range"):
        sp.SparseConvTranspose3d(1, 1, 2, 4)(x)


def test_wrong_channel_count_raises():
    """A conv given the wrong number of input channels says what it expected."""
    with pytest.raises(SparseTensorError, match="expects 6 channels, got 4"):
        sp.SubMConv3d(6, 6, 3)(random_tensor())
    with pytest.raises(SparseTensorError, match="expects 6 channels, got 4"):
        sp.SparseConv3d(6, 6, 3, 2, 1)(random_tensor())


def test_dtype_mismatch_and_inverse_kernel_mismatch_raise():
    """float32 features into a float64 conv, or an inverse conv with another kernel, are refused."""
    x = random_tensor()
    with pytest.raises(SparseTensorError, match="float32 but weights are torch.float64"):
        sp.SubMConv3d(4, 6, 3).double()(x)
    coarse = sp.SparseConv3d(4, 6, 3, 2, 1, indice_key="down")(x)
    with pytest.raises(SparseTensorError, match=r"kernel \(2, 2, 2\) differs"):
        sp.SparseInverseConv3d(6, 4, 2, indice_key="down")(coarse)


def test_inverse_conv_without_matching_strided_conv_raises():
    """An inverse conv needs the sites produced by the strided conv of its indice_key."""
    x = random_tensor()
    with pytest.raises(SparseTensorError, match="indice_key 'down'"):
        sp.SparseInverseConv3d(4, 4, 3, indice_key="down")(x)
    sp.SparseConv3d(4, 6, 3, 2, 1, indice_key="down")(x)
    with pytest.raises(SparseTensorError, match="indice_key 'down'"):  # fine sites, not the coarse ones
        sp.SparseInverseConv3d(4, 4, 3, indice_key="down")(x)
    y = sp.SubMConv3d(4, 4, 3, indice_key="subm")(x)  # a SubM map's sites are its own: running it back is no inverse
    with pytest.raises(SparseTensorError, match="indice_key 'subm' names a submanifold conv's map"):
        sp.SparseInverseConv3d(4, 4, 3, indice_key="subm")(y)


# ----------------------------------------------------------------------------------- empty input
def test_empty_tensor_through_subm_strided_inverse():
    """A tensor with 0 sites runs forward and backward through SubM, strided and inverse conv."""
    feats = torch.zeros(0, 4, requires_grad=True)
    x = SparseTensor(feats, torch.zeros(0, 4, dtype=torch.int32), SHAPE, 2)
    net = sp.SparseSequential(sp.SubMConv3d(4, 6, 3), sp.SparseConv3d(6, 4, 3, 2, 1, indice_key="d"),
                              sp.SparseInverseConv3d(4, 6, 3, indice_key="d"))
    mid = net[1](net[0](x))
    assert mid.feats.shape == (0, 4) and mid.coords.shape == (0, 4) and mid.spatial_shape == (4, 5, 6)
    y = net[2](mid)
    assert y.feats.shape == (0, 6) and y.coords.shape == (0, 4) and y.spatial_shape == SHAPE
    y.feats.sum().backward()
    assert feats.grad.shape == (0, 4)
    assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in net[0].parameters())


def test_half_precision_torch_path_matches_float64():
    """float16 features take the torch gather/mm path (the one CUDA uses); it agrees with float64."""
    torch.manual_seed(1)
    layers = [sp.SubMConv3d(4, 6, 3, groups=2), sp.SparseConv3d(6, 4, 3, 2, 1, indice_key="d"),
              sp.SparseInverseConv3d(4, 6, 3, indice_key="d"), sp.SparseMaxPool3d(3, 2, 1),
              sp.SparseAvgPool3d(2, 2)]
    results = {}
    for dtype in (torch.float64, torch.float16):
        subm, down, up, max_pool, avg_pool = (m.to(dtype) for m in layers)
        for m in layers:
            m.zero_grad()
        x = random_tensor().to(dtype)
        x.feats.requires_grad_()
        y = subm(x)
        outs = [y, up(down(y)), max_pool(y), avg_pool(y)]
        sum(o.feats.float().square().sum() for o in outs).backward()
        results[dtype] = [o.feats.detach() for o in outs] + [x.feats.grad] + [
            p.grad for m in layers for p in m.parameters()]
    for got, ref in zip(results[torch.float16], results[torch.float64], strict=True):
        assert got.dtype == torch.float16
        err = (got.double() - ref).abs().max() / ref.abs().max()
        assert err < 5e-3, f"float16 differs from float64 by {err:.2g} (relative to max)"


# --------------------------------------------------------------------------------- map reuse
def test_subm_stack_builds_its_map_once(monkeypatch):
    """A stack of SubM layers (with BatchNorm/ReLU between) builds one map and shares it."""
    calls = []
    build = conv_module.submanifold_map
    monkeypatch.setattr(conv_module, "submanifold_map", lambda *a: calls.append(1) or build(*a))
    net = sp.SparseSequential(sp.SubMConv3d(4, 6, 3), torch.nn.BatchNorm1d(6), torch.nn.ReLU(),
                              sp.SubMConv3d(6, 4, 3), sp.SubMConv3d(4, 6, 3))
    x = random_tensor()
    y = net(x)
    assert len(calls) == 1 and len(x.maps) == 1
    assert y.maps is x.maps and y.coords is x.coords


def test_block_pairs_group_the_table_by_block_and_offset_in_output_order():
    """The pair lists the micro-kernels read hold exactly the table's pairs, each group in output order."""
    rng = np.random.default_rng(0)
    nbr = np.where(rng.random((600, 5)) < 0.4, rng.integers(0, 50, (600, 5)), -1).astype(np.int32)
    block = 256
    starts, ins, outs = kernels.block_pairs(nbr, block)
    assert starts[-1] == (nbr >= 0).sum() == len(ins) == len(outs)
    for b in range(3):
        for k in range(5):
            g = b * 5 + k
            rows = np.flatnonzero(nbr[b * block:(b + 1) * block, k] >= 0)
            assert outs[starts[g]:starts[g + 1]].tolist() == rows.tolist()
            assert ins[starts[g]:starts[g + 1]].tolist() == nbr[b * block + rows, k].tolist()


def test_transposed_block_pairs_are_the_transposed_tables_pairs():
    """Read straight from the table, the transposed pair lists hold the transposed table's pairs group by
    group (as sets: inside a group the order is by source row, not input row); a conv map reads an input at
    an offset from one output at most, which random tables get by a permutation per offset."""
    rng = np.random.default_rng(1)
    n_out, n_in, kvol, block = 700, 900, 5, 256
    nbr = np.stack([np.where(rng.random(n_out) < 0.5, rng.permutation(n_in)[:n_out], -1) for _ in range(kvol)],
                   1).astype(np.int32)
    t = km_kernels.transpose_table(nbr, n_in)
    want = kernels.block_pairs(t, block)
    got = kernels.transposed_block_pairs(nbr, n_in, block)
    np.testing.assert_array_equal(got[0], want[0])
    for g in range(len(want[0]) - 1):
        lo, hi = want[0][g], want[0][g + 1]
        assert (sorted(zip(got[1][lo:hi], got[2][lo:hi], strict=True))
                == sorted(zip(want[1][lo:hi], want[2][lo:hi], strict=True)))
    again = kernels.transposed_block_pairs(nbr, n_in, block)
    assert all(np.array_equal(a, b) for a, b in zip(got, again, strict=True))


def test_block_pairs_are_built_once_per_map_and_direction():
    x = random_tensor()
    sp.SubMConv3d(4, 4, 3)(x)
    kmap = next(iter(x.maps.values()))
    assert kmap.block_pairs(kmap.table()) is kmap.block_pairs(kmap.table())
    assert kmap.block_pairs(kmap.table(True)) is kmap.block_pairs(kmap.table(True)) is not kmap.block_pairs(kmap.nbr)
    other = kmap.table().copy()
    assert kmap.block_pairs(other) is not kmap.block_pairs(other)  # a derived table is not cached


# ------------------------------------------------------------------------------ determinism
def test_forward_backward_is_bitwise_deterministic():
    """Two forward+backward runs (maps rebuilt) give bitwise-identical outputs and gradients."""
    torch.manual_seed(3)
    net = sp.SparseSequential(sp.SubMConv3d(4, 6, 3), torch.nn.ReLU(),
                              sp.SparseConv3d(6, 4, 3, 2, 1, indice_key="d"), sp.SubMConv3d(4, 6, 3),
                              sp.SparseInverseConv3d(6, 4, 3, indice_key="d"))
    pool = sp.SparseMaxPool3d(3, 2, 1)
    results = []
    for _ in range(2):
        # > 4096 rows: several row blocks and several weight-gradient tasks
        x = random_tensor((20, 24, 28), occupancy=0.35, batch=1, seed=7)
        x.feats.requires_grad_()
        net.zero_grad()
        y, pooled = net(x), pool(x)
        loss = (y.feats * torch.linspace(-1, 1, y.feats.numel()).view_as(y.feats)).sum()
        (loss + pooled.feats.sin().sum()).backward()
        results.append([y.feats.detach(), pooled.feats, x.feats.grad] + [p.grad.clone() for p in net.parameters()])
    assert len(results[0][0]) > 4096
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)


# ----------------------------------------------------------------------------------- memory
def test_kernel_maps_are_freed_and_caches_do_not_grow():
    """50 training steps on changing inputs: every KernelMap dies with its tensors, no cache grows."""
    net = sp.SparseSequential(sp.SubMConv3d(4, 6, 3, indice_key="s"), torch.nn.ReLU(),
                              sp.SparseConv3d(6, 4, 3, 2, 1, indice_key="d"),
                              sp.SubMConv3d(4, 6, 3, indice_key="s2"), sp.SparseInverseConv3d(6, 4, 3, indice_key="d"))
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)
    refs, sizes = [], []
    for step in range(50):
        x = random_tensor((6, 7, 8), occupancy=0.2 + 0.005 * step, seed=step)
        opt.zero_grad()
        y = net(x)
        y.feats.square().mean().backward()
        opt.step()
        assert len(x.maps) == 2  # the subm and the strided map of the fine sites, nothing older
        assert len(x.indice_dict) == 3 and all(isinstance(m, KernelMap) for m in x.indice_dict.values())
        refs += [weakref.ref(m) for m in x.indice_dict.values()]  # includes the coarse subm map
        sizes.append((kernels.gather_gemm_scatter.cache_info().currsize,
                      kernels.pair_weight_gradient.cache_info().currsize))
        del x, y
        assert all(r() is None for r in refs), "a KernelMap outlived its tensors (reference cycle?)"
    gc.collect()
    alive = [r() for r in refs if r() is not None]
    assert not alive, f"{len(alive)} KernelMaps still alive, e.g. referenced by {gc.get_referrers(alive[0])}"
    assert len(set(sizes)) == 1, f"kernel caches grew: {sizes[0]} -> {sizes[-1]}"


def test_native_conv_keeps_torch_thread_count():
    """The native engine follows torch's thread count and never changes it (fresh process)."""
    code = ("import torch, pc3d.sparse as sp\n"
            "torch.set_num_threads(1)\n"
            "x = sp.SparseTensor(torch.randn(3, 4), torch.tensor([[0, 0, 0], [0, 1, 1], [0, 2, 1]],"
            " dtype=torch.int32), (4, 4), 1)\n"
            "sp.SubMConv2d(4, 6, 3)(x)\n"
            "print(torch.get_num_threads())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1", "torch.get_num_threads() changed after the first native conv"


def test_kernel_scratch_starts_on_cache_lines():
    """Scratch rows of 64 bytes (an AVX-512 vector, an AMX tile row) must not straddle two cache lines:
    numba's np.empty aligns to 32 bytes and numpy's to 16, whatever the heap's state."""
    import numba
    from pc3d_ops.aligned import empty64, host_zeros64, zeros64

    @numba.njit
    def offsets(like):
        out = np.empty(40, np.int64)
        for i in range(20):
            out[2 * i] = zeros64(3 + 17 * i, like.dtype).ctypes.data % 64
            out[2 * i + 1] = empty64(5 + 11 * i, np.int16).ctypes.data % 64
        return out, zeros64(9, like.dtype).sum(), len(empty64(7, np.int16))

    for dtype in (np.float32, np.float64):
        got, total, n = offsets(np.zeros(1, dtype))
        assert (got == 0).all() and total == 0 and n == 7
    for shape in [(3,), (16, 27, 1, 32, 16), (5, 7)]:
        a = host_zeros64(shape, np.float32)
        assert a.ctypes.data % 64 == 0 and a.shape == shape and a.dtype == np.float32 and not a.any()
