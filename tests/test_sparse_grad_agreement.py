"""Float32 gradients of the native engine against float64 (issue #16's gradient table, in small).

The benchmark's table (`tools/bench.py sparse`) finds pc3d's and spconv's float32 weight gradients of
VoxelBackBone8x 1e-3 to 5e-2 away from float64, and traces that to the float32 arithmetic around the
convs (a few ReLU inputs within rounding of 0 change sign; BatchNorm's sums), not to the conv kernels.
These tests pin the two halves of that finding: the kernels are as accurate as a float32 GEMM on the
same inputs (weight gradient, feature gradient, forward), on the sums that cancel the most (inputs
with a large mean against a zero-mean output gradient, as BatchNorm's backward makes them); and a
stack without kinks (SiLU) gets float32 gradients close to float64's.
"""
from __future__ import annotations

import copy

import pytest
import torch
from conftest import random_sparse

import pc3d.sparse as sp
from pc3d.sparse import SparseTensor
from pc3d.sparse.kernel_map import submanifold_map


def norm_rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    return float((a.detach().double() - ref.detach()).norm() / ref.detach().norm())


def inputs(cin: int, cout: int, seed: int = 0):
    """Sites on a 48^3 grid (~33k), post-ReLU-like features (mean 1) and a zero-mean output gradient per
    channel: the weight-gradient sum cancels ~50x (the benchmark's early layers)."""
    x = random_sparse((48, 48, 48), cin, batch=1, seed=seed)
    g = torch.Generator().manual_seed(seed)
    feats = (x.feats.abs() + 0.5).float()
    dy = torch.randn(len(feats), cout, generator=g)
    dy -= dy.mean(0)
    return SparseTensor(feats, x.coords, x.spatial_shape, 1), dy


def gemm_reference(feats, dy, weight, table):
    """What spconv's CPU path does: per offset, gather the pairs and torch.mm (float32). Returns
    (forward out [N, Cout], weight gradient in weight's layout, feature gradient)."""
    cout, cin = weight.shape[0], weight.shape[-1]
    kvol = table.shape[1]
    w = weight.detach().reshape(cout, kvol, cin).permute(1, 2, 0)  # [K, Cin, Cout]
    out = torch.zeros(len(table), cout, dtype=feats.dtype)
    dw = torch.zeros(kvol, cin, cout, dtype=feats.dtype)
    dx = torch.zeros_like(feats)
    for k in range(kvol):
        rows = (table[:, k] >= 0).nonzero().squeeze(1)
        src = table[rows, k]
        out.index_add_(0, rows, torch.mm(feats[src], w[k]))
        dw[k] = torch.mm(feats[src].t(), dy[rows])
        dx.index_add_(0, src, torch.mm(dy[rows], w[k].t()))
    return out, dw.permute(2, 0, 1).reshape(weight.shape), dx


def conv_grads(conv, x: SparseTensor, dy: torch.Tensor, dtype: torch.dtype):
    conv = copy.deepcopy(conv).to(dtype)
    xi = SparseTensor(x.feats.to(dtype).requires_grad_(True), x.coords, x.spatial_shape, 1)
    y = conv(xi)
    y.feats.backward(dy.to(dtype))
    return y.feats.detach(), conv.weight.grad, xi.feats.grad


@pytest.mark.parametrize(("cin", "cout"), [(4, 16), (16, 16), (32, 32), (64, 64)])
def test_subm_kernels_as_accurate_as_float32_gemm(cin, cout):
    """Weight gradient (micro-kernel at Cout 16, loops above), feature gradient and forward: the error
    against float64 on the same float32 inputs is at most that of the gather + torch.mm route."""
    x, dy = inputs(cin, cout)
    torch.manual_seed(0)
    conv = sp.SubMConv3d(cin, cout, 3, bias=False)
    table = torch.from_numpy(submanifold_map(x, (3, 3, 3), (1, 1, 1)).table()).long()
    exact = conv_grads(conv, x, dy, torch.float64)
    ours = conv_grads(conv, x, dy, torch.float32)
    gemm = gemm_reference(x.feats, dy, conv.weight, table)
    for what, o, g, e in zip(("forward", "weight gradient", "feature gradient"), ours, gemm, exact, strict=True):
        err, ref_err = norm_rel(o, e), norm_rel(g, e)
        assert err <= 1.2 * ref_err + 1e-8, f"{what}: pc3d {err:.3g} vs gather + torch.mm {ref_err:.3g}"
        assert err < 1e-5, f"{what}: {err:.3g} away from float64"


def stack(act):
    def block(conv):
        return [conv, torch.nn.BatchNorm1d(conv.out_channels, eps=1e-3), act()]

    return sp.SparseSequential(
        *block(sp.SubMConv3d(4, 16, 3, bias=False, indice_key="s1")),
        *block(sp.SubMConv3d(16, 16, 3, bias=False, indice_key="s1")),
        *block(sp.SparseConv3d(16, 32, 3, 2, 1, bias=False)),
        *block(sp.SubMConv3d(32, 32, 3, bias=False, indice_key="s2")),
        *block(sp.SparseConv3d(32, 32, 3, 2, 1, bias=False)),
        *block(sp.SubMConv3d(32, 32, 3, bias=False, indice_key="s3")))


def stack_grads(net, x: SparseTensor, dtype: torch.dtype) -> list[torch.Tensor]:
    net = copy.deepcopy(net).to(dtype)
    out = net(SparseTensor(x.feats.to(dtype), x.coords, x.spatial_shape, x.batch_size))
    out.feats.square().mean().backward()
    return [m.weight.grad for m in net.modules() if isinstance(m, sp.SparseConvolution)]


def test_smooth_stack_float32_gradients_close_to_float64():
    """Conv -> BatchNorm -> SiLU, strided and submanifold: every weight gradient within 1e-3 of float64's
    (norm-relative; the benchmark's 0.1 m stack: 1e-4). With ReLU the same stack may be 1e-2 off where a
    few inputs of a ReLU sit within float32 rounding of 0: that is the activation's kink, not the engine."""
    x = random_sparse((24, 24, 24), 4, batch=1)
    torch.manual_seed(0)
    net = stack(torch.nn.SiLU)
    exact = stack_grads(net, x, torch.float64)
    ours = stack_grads(net, x, torch.float32)
    errors = [norm_rel(o, e) for o, e in zip(ours, exact, strict=True)]
    assert max(errors) < 1e-3, errors
