"""pc3d.sparse.BatchNorm1d against torch's batch norm in float64 (the reference) and float32."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from conftest import torch_threads
from torch import nn

from pc3d.sparse import BatchNorm1d


def _pair(channels: int, **kwargs) -> tuple[BatchNorm1d, nn.BatchNorm1d]:
    ours = BatchNorm1d(channels, eps=1e-3, **kwargs)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5)
        ours.bias.uniform_(-0.5, 0.5)
    ref = nn.BatchNorm1d(channels, eps=1e-3, **kwargs)
    ref.load_state_dict(ours.state_dict())
    return ours, ref


def _run(module: nn.Module, x: torch.Tensor, grad: torch.Tensor):
    x = x.clone().requires_grad_(True)
    y = module(x)
    y.backward(grad)
    return y.detach(), x.grad, module.weight.grad, module.bias.grad


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.mark.parametrize("offset", [0.0, 100.0])
@pytest.mark.parametrize("channels", [5, 64])
def test_training_step_matches_float64_batch_norm(channels, offset):
    """Output and all three gradients against torch's batch norm run in float64; no less accurate
    than torch's float32 kernel, also when the mean is 100 standard deviations from zero."""
    torch.manual_seed(0)
    x = torch.randn(3000, channels) * 2 + offset
    grad = torch.randn(3000, channels)
    ours, ref32 = _pair(channels)
    ref64 = nn.BatchNorm1d(channels, eps=1e-3).double()
    ref64.load_state_dict(ours.state_dict())
    got = _run(ours, x, grad)
    f32 = _run(ref32, x, grad)
    exact = _run(ref64, x.double(), grad.double())
    for mine, torch32, truth in zip(got, f32, exact, strict=True):
        assert mine.dtype == torch.float32
        assert _rel(mine, truth) <= _rel(torch32, truth)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(ours, name).to(getattr(ref64, name).dtype), getattr(ref64, name),
                                   rtol=1e-6, atol=1e-6)


def test_running_statistics_over_steps_and_cumulative_momentum():
    torch.manual_seed(1)
    for momentum in (0.1, None):
        ours, ref = _pair(8, momentum=momentum)
        for step in range(3):
            x = torch.randn(200, 8) * (step + 1) + step
            ours(x)
            ref(x)
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            torch.testing.assert_close(getattr(ours, name), getattr(ref, name), rtol=1e-5, atol=1e-6)


def test_torch_paths_left_alone_and_state_dict_shared():
    """Eval mode and [N, C, L] inputs are torch's own kernel, bit for bit (one row: the test below)."""
    torch.manual_seed(2)
    ours, ref = _pair(6)
    assert ours.state_dict().keys() == ref.state_dict().keys()
    ours(torch.randn(50, 6))
    ref(torch.randn(50, 6))
    ours.eval()
    ref.load_state_dict(ours.state_dict())
    ref.eval()
    x = torch.randn(40, 6)
    assert torch.equal(ours(x), ref(x))
    ours.train()
    ref.train()
    x3 = torch.randn(4, 6, 7)
    assert torch.equal(ours(x3), ref(x3))


@pytest.mark.parametrize("relu", [False, True])
def test_bf16_is_the_float32_path_rounded_once(relu):
    """bf16 features (as under autocast): statistics, parameter gradients and running statistics are the float32
    path's on the same (widened) values, bit for bit; output and feature gradient are its float32 results rounded
    once to bf16; all within bf16 rounding of torch's float64 batch norm."""
    torch.manual_seed(7)
    xb = (torch.randn(3000, 24) * 2 + 5).bfloat16()
    gb = torch.randn(3000, 24).bfloat16()
    on_bf16, ref = _pair(24)
    on_f32, _ = _pair(24)
    on_f32.load_state_dict(on_bf16.state_dict())

    def run(module, x, grad):
        x = x.clone().requires_grad_(True)
        y = module(x, relu=relu)
        y.backward(grad)
        return y.detach(), x.grad

    yb, dxb = run(on_bf16, xb, gb)
    y32, dx32 = run(on_f32, xb.float(), gb.float())
    assert yb.dtype == dxb.dtype == torch.bfloat16
    assert torch.equal(yb.view(torch.int16), y32.bfloat16().view(torch.int16))
    assert torch.equal(dxb.view(torch.int16), dx32.bfloat16().view(torch.int16))
    for name in ("weight", "bias"):
        assert torch.equal(getattr(on_bf16, name).grad, getattr(on_f32, name).grad)
    for name in ("running_mean", "running_var"):
        assert torch.equal(getattr(on_bf16, name), getattr(on_f32, name))
    ref.double()
    x64 = xb.double().requires_grad_(True)
    y64 = ref(x64)
    y64 = torch.relu(y64) if relu else y64
    y64.backward(gb.double())
    torch.testing.assert_close(yb.double(), y64.detach(), rtol=2**-8, atol=1e-6)
    assert _rel(dxb, x64.grad) < 2**-8


def test_no_statistics_tracked_uses_batch_statistics_in_eval():
    torch.manual_seed(3)
    ours, ref = _pair(4, track_running_stats=False)
    ours.eval()
    ref.eval()
    x = torch.randn(100, 4) + 5
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)


def test_bitwise_repeatable_across_thread_counts():
    torch.manual_seed(4)
    x = torch.randn(5000, 32) + 3
    grad = torch.randn(5000, 32)
    ours, _ = _pair(32)
    with torch_threads(2):  # the kernels follow torch's count
        first = _run(ours, x, grad)
    ours.weight.grad = ours.bias.grad = None
    with torch_threads(1):
        again = _run(ours, x, grad)
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a, b)


def test_gradient_only_where_asked():
    ours, _ = _pair(3)
    ours.weight.requires_grad_(False)
    x = torch.randn(20, 3, requires_grad=True)
    ours(x).sum().backward()
    assert ours.weight.grad is None and ours.bias.grad is not None and x.grad is not None


def test_kernels_follow_torch_thread_count():
    """The norm's numba kernels run on torch's thread count and leave it alone (fresh process: the norm is the
    first numba launch, as in a pillar VFE)."""
    code = ("import torch, numba, pc3d.sparse as sp\n"
            "torch.set_num_threads(1)\n"
            "x = torch.randn(3000, 8, requires_grad=True)\n"
            "sp.BatchNorm1d(8)(x).sum().backward()\n"
            "print(torch.get_num_threads(), numba.get_num_threads())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "1"]


@pytest.mark.parametrize("channels", [32, 96])
def test_fused_relu_equals_norm_then_relu(channels):
    """BatchNorm1d(x, relu=True) is bitwise the norm followed by torch.relu, gradients included (the ReLU's
    mask is recomputed from x in backward), and matches float64 torch within float32 rounding."""
    torch.manual_seed(5)
    x = torch.randn(3000, channels) + 1
    grad = torch.randn(3000, channels)
    fused, ref = _pair(channels)
    plain, _ = _pair(channels)
    plain.load_state_dict(fused.state_dict())
    xf = x.clone().requires_grad_(True)
    y = fused(xf, relu=True)
    y.backward(grad)
    xp = x.clone().requires_grad_(True)
    torch.relu(plain(xp)).backward(grad)
    assert 0.3 < (y == 0).float().mean() < 0.7
    assert torch.equal(y, torch.relu(plain(x))) and torch.equal(xf.grad, xp.grad)
    assert torch.equal(fused.weight.grad, plain.weight.grad) and torch.equal(fused.bias.grad, plain.bias.grad)
    ref.double()
    xr = x.double().requires_grad_(True)
    torch.relu(ref(xr)).backward(grad.double())
    torch.testing.assert_close(xf.grad.double(), xr.grad, rtol=1e-4, atol=1e-5)


def test_sparse_sequential_fuses_norm_and_relu():
    from pc3d.sparse import SparseSequential, SparseTensor

    torch.manual_seed(6)
    norm, _ = _pair(16)
    seq = SparseSequential(norm, nn.ReLU())
    calls = []
    seq[1].register_forward_hook(lambda *_: calls.append(1))  # the fused path does not call the ReLU module
    x = SparseTensor(torch.randn(200, 16), torch.zeros(200, 4, dtype=torch.int32), [4, 4, 4], 1)
    y = seq(x).feats
    assert not calls and torch.equal(y, torch.relu(norm(x.feats)))
    seq.eval()  # eval mode: torch's norm, then torch.relu
    torch.testing.assert_close(seq(x).feats, torch.relu(norm(x.feats)))


@pytest.mark.parametrize("relu", [False, True])
def test_one_row_in_training_uses_the_running_statistics_and_keeps_them(relu):
    torch.manual_seed(0)
    bn = BatchNorm1d(6).train()
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    nn.init.uniform_(bn.weight)
    nn.init.uniform_(bn.bias)
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    x = torch.randn(1, 6, requires_grad=True)
    y = bn(x, relu=relu)
    want = (x - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
    torch.testing.assert_close(y, want.relu() if relu else want)
    y.sum().backward()
    assert x.grad is not None and bn.weight.grad is not None
    for k, v in bn.state_dict().items():
        assert torch.equal(v, before[k]), k
