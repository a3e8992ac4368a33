"""Linear on feature rows [N, C] with pc3d's GEMM kernels: the 1x1 (pointwise) conv of sparse networks.

A drop-in for `nn.Linear` (the same parameters and state_dict keys). It takes its own path where the
engine's micro-kernels do better than torch's CPU GEMM: a 2-d CPU float32 input outside autocast, with the
output width (forward) and the input width (feature gradient) a multiple of 16 up to
`pc3d_ops.rows_gemm.MAX_COLS`. A pass whose width does not fit, everything else (bf16 under autocast,
CUDA, [B, L, C] inputs) is torch's own. The weight gradient is computed in whichever orientation has the
narrower output (g^T x or x^T g, transposed), torch's mm when neither fits.

Why: on the tall-skinny shapes of an SDSC U-Net ([80k, 64] x [64, 96]) torch's GEMM ran at 56-62 GFLOP/s
inside a training step and took 40 % of the step; these kernels do forward + both gradients 1.0-1.6x
faster (`tools/bench.py sparse`, the pointwise rows, 64->96 the least). Sums run in a fixed order (see
pc3d_ops.rows_gemm), so results do not depend on the thread count.
"""
from __future__ import annotations

import numpy as np
import torch
from pc3d_ops import rows_gemm as kernels
from pc3d_ops.aligned import host_zeros64
from torch import nn

from pc3d.sparse.kernel_map import sync_threads
from pc3d.sparse.ops import _sum_tasks


def _matmul(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x [N, depth] @ w [depth, cols] by the row kernels (cols supported)."""
    out = torch.empty(x.shape[0], w.shape[1], dtype=x.dtype)
    sync_threads()
    kernels.matmul(w.shape[1])(x.contiguous().numpy(), w.contiguous().numpy(), out.numpy())
    return out


def _at_b(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a^T b for a [N, r], b [N, cols] by the row kernels (cols supported)."""
    a, b = a.contiguous(), b.contiguous()
    partial = host_zeros64((kernels.wgrad_tasks(a.shape[0]), a.shape[1], b.shape[1]), np.float32)
    sync_threads()
    kernels.weight_gradient(b.shape[1])(a.numpy(), b.numpy(), np.arange(a.shape[0], dtype=np.int64), partial)
    return torch.from_numpy(_sum_tasks(partial))  # tasks added in order: deterministic


class _RowsLinear(torch.autograd.Function):
    """y = x W^T (+ b); the gradients by the row kernels where their widths fit, else torch's."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        x = x.contiguous()
        out = _matmul(x, weight.detach().t())
        if bias is not None:
            out.add_(bias.detach())
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        out_features, in_features = weight.shape
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _matmul(grad, weight.detach()) if kernels.supports(in_features) else grad @ weight.detach()
        if ctx.needs_input_grad[1]:
            if kernels.supports(in_features) and (in_features <= out_features or not kernels.supports(out_features)):
                grad_w = _at_b(grad, x.detach())
            elif kernels.supports(out_features):
                grad_w = _at_b(x.detach(), grad).t().contiguous()
            else:
                grad_w = grad.t() @ x.detach()
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum(0)
        return grad_x, grad_w, grad_b


class Linear(nn.Linear):
    """nn.Linear whose CPU float32 path on feature rows [N, C] runs pc3d's GEMM kernels."""

    def _own_path(self, x: torch.Tensor) -> bool:
        return (x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 2
                and self.weight.dtype == torch.float32 and kernels.supports(self.out_features)
                and not torch.is_autocast_enabled("cpu"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._own_path(x):
            return super().forward(x)
        return _RowsLinear.apply(x, self.weight, self.bias)
