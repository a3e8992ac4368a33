"""BatchNorm1d on feature rows [N, C] with pc3d's two-pass CPU kernels (pc3d_ops.batch_norm).

A drop-in for `nn.BatchNorm1d`: the same parameters, buffers, state_dict keys and running-statistics
update (momentum, or the cumulative average when momentum is None; unbiased variance in the running
estimate), so checkpoints move between the two and to spconv models unchanged. It takes its own path
only where batch statistics are computed (training, or track_running_stats=False) on a 2-d CPU float32 or
bfloat16 input with more than one row and an affine transform (float32 parameters); everything else (eval
mode, CUDA, [N, C, L] inputs) is torch's own batch norm. A training batch of one row (a deep stage of
a nearly empty sample) has no batch statistics: it is normalised with the running statistics, which it
leaves unchanged, where torch's raises.

Why: the norms between sparse convs are memory bound, and torch's CPU kernels move [N, C] about 3.5
times forward and 7.5 times backward (an SDSC U-Net step spent more time in batch norm than in its
sparse convs); these kernels move it twice forward and about 2.5 times backward, with float64 sums in
a fixed order (deterministic whatever the thread count).

bfloat16 (the features under bf16 autocast): the kernels widen each value to float32, compute as for a
float32 input and round the output and the feature gradient once to bf16; statistics and parameter
gradients are the float32 path's float64 sums on the same values, so the norm is float32 arithmetic with
bf16 input and output (as torch's kernel is), and its results do not depend on the thread count. Speed:
about torch's on the EPYC host (norm + ReLU forward and backward on 68,211 x 64: 3.9 ms against 5.0; on
135,767 x 32 and 125,655 x 16 within 10 %); the bf16 backbone step did not move measurably.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from pc3d_ops import batch_norm as kernels
from torch import nn

from pc3d.sparse.kernel_map import sync_threads
from pc3d.sparse.ops import numpy_bits


class _BatchNormRows(torch.autograd.Function):
    """y = (x - mean) * invstd * weight + bias with mean / invstd the batch's (given, computed from x), then
    max(y, 0) with relu; the backward carries the statistics' dependence on x (the closed form in
    pc3d_ops.batch_norm), the ReLU's mask recomputed from x (y is not kept)."""

    @staticmethod
    def forward(ctx, x, weight, bias, mean, invstd, relu: bool):
        mean32 = mean.float()
        scale = (weight.detach() * invstd).float()
        shift = bias.detach().float()
        out = torch.empty_like(x)
        kernels.normalize(relu)(numpy_bits(x.detach()), mean32.numpy(), scale.numpy(), shift.numpy(),
                                numpy_bits(out))
        ctx.save_for_backward(x, weight, mean, invstd, mean32, scale, shift)
        ctx.relu = relu
        return out

    @staticmethod
    def backward(ctx, grad):
        x, weight, mean, invstd, mean32, scale, shift = ctx.saved_tensors
        grad = numpy_bits(grad.to(x.dtype).contiguous())
        n = x.shape[0]
        sync_threads()
        x_np = numpy_bits(x.detach())
        sum_g, sum_gx = kernels.grad_sums(ctx.relu)(grad, x_np, mean.numpy(), mean32.numpy(), scale.numpy(),
                                                    shift.numpy())
        sum_g, sum_gx = torch.from_numpy(sum_g), torch.from_numpy(sum_gx)  # float64 [C]
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            w = weight.detach().double()
            a = w * invstd
            b = -w * invstd**3 * sum_gx / n
            offset = -a * sum_g / n
            grad_x = torch.empty_like(x)
            kernels.input_grad(ctx.relu)(grad, x_np, mean32.numpy(), a.float().numpy(), b.float().numpy(),
                                         offset.float().numpy(), scale.numpy(), shift.numpy(), numpy_bits(grad_x))
        if ctx.needs_input_grad[1]:
            grad_w = (sum_gx * invstd).to(weight.dtype)
        if ctx.needs_input_grad[2]:
            grad_b = sum_g.to(weight.dtype)
        return grad_x, grad_w, grad_b, None, None, None


class BatchNorm1d(nn.BatchNorm1d):
    """nn.BatchNorm1d whose batch-statistics path on CPU float32 or bf16 [N, C] runs pc3d's kernels."""

    def _own_path(self, x: torch.Tensor) -> bool:
        return (x.device.type == "cpu" and x.dtype in (torch.float32, torch.bfloat16) and x.dim() == 2
                and x.shape[0] > 1 and self.affine and self.weight.dtype == torch.float32
                and (self.training or not self.track_running_stats))

    def forward(self, x: torch.Tensor, relu: bool = False) -> torch.Tensor:
        """The norm of x [N, C]; relu=True applies the ReLU that follows it in the same pass (what
        SparseSequential does for a BatchNorm1d followed by an nn.ReLU)."""
        if self.training and self.track_running_stats and x.dim() == 2 and x.shape[0] == 1:
            y = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
            return torch.relu(y) if relu else y
        if not self._own_path(x):
            y = super().forward(x)
            return torch.relu(y) if relu else y
        x = x.contiguous()
        n = x.shape[0]
        sync_threads()  # numba on torch's thread count
        mean, var = kernels.moments(numpy_bits(x.detach()))
        mean, var = torch.from_numpy(mean), torch.from_numpy(var)  # float64 [C]
        if self.training and self.track_running_stats:
            self._update_running_stats(mean, var * n / (n - 1))
        return _BatchNormRows.apply(x, self.weight, self.bias, mean, (var + self.eps).rsqrt(), relu)

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, unbiased_var: torch.Tensor) -> None:
        self.num_batches_tracked.add_(1)
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
        self.running_var.lerp_(unbiased_var.to(self.running_var.dtype), factor)
