"""The wide weight gradient (pc3d.sparse.ops: one torch GEMM per kernel offset from (96, 192) channels): equal to a
dense conv's weight gradient on the active sites, to the register-blocked kernel's for strided and inverse convs,
deterministic, and taken only at the widths where it is faster."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import pc3d.sparse as sp
from pc3d.sparse import SparseTensor, ops


def random_tensor(shape, channels, occupancy=0.3, seed=0, dtype=torch.float32) -> SparseTensor:
    rng = np.random.default_rng(seed)
    coords = np.argwhere(rng.random((1, *shape)) < occupancy).astype(np.int32)
    feats = torch.from_numpy(rng.standard_normal((len(coords), channels))).to(dtype)
    return SparseTensor(feats, torch.from_numpy(coords), tuple(shape), 1)


def weight_grad(conv, x: SparseTensor, seed: int = 1) -> torch.Tensor:
    conv.zero_grad()
    y = conv(x)
    g = torch.from_numpy(np.random.default_rng(seed).standard_normal(tuple(y.feats.shape))).to(y.feats.dtype)
    (y.feats * g).sum().backward()
    return conv.weight.grad.clone()


def test_subm_weight_gradient_equals_the_dense_convs_on_the_active_sites():
    x = random_tensor((6, 7, 8), 96)
    conv = sp.SubMConv3d(96, 192, 3, bias=False)
    got = weight_grad(conv, x)
    # dense reference in float64: the conv over the zero-filled grid, read at the active sites
    dense = torch.zeros(1, 96, 6, 7, 8, dtype=torch.float64)
    c = x.coords.long()
    dense[0, :, c[:, 1], c[:, 2], c[:, 3]] = x.feats.double().t()
    w = conv.weight.detach().double().movedim(-1, 1).requires_grad_(True)  # [Cout, Cin, k, k, k]
    out = F.conv3d(dense, w, padding=1)[0, :, c[:, 1], c[:, 2], c[:, 3]].t()
    g = torch.from_numpy(np.random.default_rng(1).standard_normal(tuple(out.shape)))
    (out * g).sum().backward()
    torch.testing.assert_close(got.double(), w.grad.movedim(1, -1), rtol=1e-4, atol=1e-4 * w.grad.abs().max().item())


@pytest.mark.parametrize("kind", ["strided", "inverse"])
@pytest.mark.parametrize("silent_rows", [False, True])
def test_strided_and_inverse_weight_gradients_equal_the_register_blocked_kernels(kind, silent_rows, monkeypatch):
    """silent_rows: every third input row all zeros and the conv told to skip such rows (a spiking layer's): the GEMMs
    read them anyway (they add zeros), the kernel leaves them out."""
    x = random_tensor((8, 9, 10), 192 if kind == "inverse" else 96, seed=2)
    down = sp.SparseConv3d(192 if kind == "inverse" else 96, 96 if kind == "inverse" else 192, 3, 2, 1,
                           bias=False, indice_key="d")
    conv = down if kind == "strided" else sp.SparseInverseConv3d(96, 192, 3, bias=False, indice_key="d")
    if kind == "inverse":
        coarse = down(x)
        x = coarse.replace_feature(coarse.feats.detach())
    if silent_rows:
        x = x.replace_feature(x.feats * (torch.arange(len(x.feats)) % 3 != 0)[:, None])
        conv.skip_zero_rows = True
    wide = weight_grad(conv, x)
    assert torch.equal(wide, weight_grad(conv, x))  # deterministic
    monkeypatch.setattr(ops, "WIDE_WGRAD", (10**9, 10**9))  # the register-blocked kernel
    blocked = weight_grad(conv, x)
    torch.testing.assert_close(wide, blocked, rtol=1e-4, atol=1e-4 * blocked.abs().max().item())


@pytest.mark.parametrize("cin,cout,wide", [(96, 192, True), (256, 256, True), (256, 128, False), (64, 512, False),
                                           (128, 128, False)])
def test_the_gemm_path_is_taken_from_96_by_192_channels(cin, cout, wide, monkeypatch):
    calls = []
    real = ops._gemm_weight_gradient
    monkeypatch.setattr(ops, "_gemm_weight_gradient", lambda *a: calls.append(1) or real(*a))
    weight_grad(sp.SubMConv3d(cin, cout, 3, bias=False), random_tensor((4, 5, 6), cin, seed=3))
    assert bool(calls) == wide
