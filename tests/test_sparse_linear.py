"""pc3d.sparse.Linear (the row GEMM kernels of pc3d_ops.rows_gemm) against torch's nn.Linear in float64."""
from __future__ import annotations

import pytest
import torch
from conftest import torch_threads
from pc3d_ops import rows_gemm
from torch import nn

from pc3d.sparse import Linear


def _pair(n: int, cin: int, cout: int, bias: bool, seed: int = 0):
    torch.manual_seed(seed)
    ours = Linear(cin, cout, bias=bias)
    ref = nn.Linear(cin, cout, bias=bias).double()
    ref.load_state_dict(ours.state_dict())
    return ours, ref, torch.randn(n, cin, dtype=torch.float64) + 0.5, torch.randn(n, cout, dtype=torch.float64)


def _run(module: nn.Module, x: torch.Tensor, grad: torch.Tensor):
    x = x.clone().requires_grad_(True)
    y = module(x)
    y.backward(grad)
    grads = [p.grad for p in module.parameters()]
    return [y.detach(), x.grad, *grads]


@pytest.mark.parametrize(("n", "cin", "cout", "bias"), [
    (1000, 64, 96, False),   # the SDSC U-Net's shapes: every pass on the row kernels
    (777, 96, 32, True),     # one row per 256-row block left over; bias
    (300, 224, 128, False),  # feature gradient (224 wide) by torch, the weight gradient transposed
    (300, 5, 32, True),      # a narrow input: forward ours, feature gradient torch's
    (1, 16, 16, False),
])
def test_equals_float64_linear(n, cin, cout, bias):
    ours, ref, x, grad = _pair(n, cin, cout, bias)
    assert ours._own_path(x.float())
    got = _run(ours, x.float(), grad.float())
    want = _run(ref, x, grad)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == torch.float32 and g.shape == w.shape
        torch.testing.assert_close(g.double(), w, rtol=1e-5, atol=1e-5 * w.abs().max().item())


def test_widths_the_kernels_do_not_take_are_torchs():
    ours, ref, x, grad = _pair(50, 32, 200, False)
    assert not rows_gemm.supports(200) and not ours._own_path(x.float())
    got = _run(ours, x.float(), grad.float())
    for g, w in zip(got, _run(ref, x, grad), strict=True):
        torch.testing.assert_close(g.double(), w, rtol=1e-5, atol=1e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast: torch's bf16 linear
        assert not Linear(32, 64)._own_path(x.float())
        assert Linear(32, 64)(x.float()).dtype == torch.bfloat16


def test_empty_input():
    ours, _, x, grad = _pair(0, 32, 64, False)
    y, gx, gw = _run(ours, x.float(), grad.float())
    assert y.shape == (0, 64) and gx.shape == (0, 32) and torch.equal(gw, torch.zeros(64, 32))


def test_gradient_only_where_asked():
    ours, _, x, _ = _pair(40, 32, 48, True)
    ours.weight.requires_grad_(False)
    ours(x.float()).sum().backward()
    assert ours.weight.grad is None and ours.bias.grad is not None
    x32 = x.float().requires_grad_(True)
    ours.weight.requires_grad_(True)
    ours(x32).sum().backward()
    assert x32.grad is not None and ours.weight.grad is not None


def test_bitwise_repeatable_across_thread_counts():
    ours, _, x, grad = _pair(9000, 64, 96, False, seed=3)  # 3 weight-gradient tasks
    with torch_threads(2):  # the kernels follow torch's count
        first = _run(ours, x.float(), grad.float())
    ours.weight.grad = None
    with torch_threads(1):
        again = _run(ours, x.float(), grad.float())
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a, b)


def test_loads_nn_linear_checkpoints():
    ref = nn.Linear(64, 32, bias=False)
    ours = Linear(64, 32, bias=False)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(10, 64)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-6)
