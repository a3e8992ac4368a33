"""Sparse conv blocks shared by every backbone (import them; never copy them).

Every block takes
- `ndim` (2, 3 or 4): the sparse conv classes it builds (SubMConv{ndim}d, SparseConv{ndim}d,
  SparseInverseConv{ndim}d); kernel sizes, strides and paddings are ints or per-axis tuples;
- `act`: a factory `act() -> nn.Module` applied to the [N, C] features (nn.ReLU by default; a spiking
  neuron is another); each position gets its own instance, so a stateful activation keeps its own state;
- `norm`: a factory `norm(channels) -> nn.Module` on [N, C] features; BATCH_NORM (pc3d.sparse.BatchNorm1d, eps 1e-3,
  momentum 0.01) by default, `batch_norm(momentum)` for another momentum. A SparseModule norm (e.g.
  SparseInstanceNorm, which needs each voxel's sample) is given the SparseTensor instead.
"""
from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from pc3d.sparse import (
    BatchNorm1d,
    Linear,
    SparseConv2d,
    SparseConv3d,
    SparseConv4d,
    SparseConvolution,
    SparseInverseConv2d,
    SparseInverseConv3d,
    SparseInverseConv4d,
    SparseModule,
    SparseSequential,
    SparseTensor,
    SubMConv2d,
    SubMConv3d,
    SubMConv4d,
)

Act = Callable[[], nn.Module]
Norm = Callable[[int], nn.Module]
ConvFactory = Callable[..., SparseModule]  # conv(in_channels, out_channels, indice_key=...)

CONVS = {
    2: {"subm": SubMConv2d, "spconv": SparseConv2d, "inverseconv": SparseInverseConv2d},
    3: {"subm": SubMConv3d, "spconv": SparseConv3d, "inverseconv": SparseInverseConv3d},
    4: {"subm": SubMConv4d, "spconv": SparseConv4d, "inverseconv": SparseInverseConv4d},
}


def batch_norm(momentum: float = 0.01) -> Norm:
    """The default norm factory: BatchNorm1d(channels, eps=1e-3, momentum) (OpenPCDet's eps; short CPU runs
    want momentum 0.1, else the running statistics used in eval mode lag behind the weights)."""
    return partial(BatchNorm1d, eps=1e-3, momentum=momentum)


BATCH_NORM = batch_norm(0.01)


class _InstanceNormalize(torch.autograd.Function):
    """x_hat = (x - mean_s) * rstd_s per sample s and channel, with the closed-form backward
    dx = rstd_s * (g - mean_s(g) - x_hat * mean_s(g * x_hat)). It saves x_hat and rstd [n, C] only: the
    plain composition of index_add / gather ops kept six [N, C] temporaries per norm for backward (about
    half of SCTN's feature-net memory)."""

    @staticmethod
    def forward(ctx, feats, sample, n_samples: int, eps: float):
        member = _membership(sample, n_samples, feats.dtype)
        count = member.sum(1, keepdim=True).clamp(min=1)
        x_hat = feats - _spread(member @ feats / count, member)
        rstd = torch.rsqrt(member @ (x_hat * x_hat) / count + eps)
        x_hat.mul_(_spread(rstd, member))
        ctx.save_for_backward(x_hat, rstd, member, count)
        return x_hat

    @staticmethod
    def backward(ctx, grad):
        x_hat, rstd, member, count = ctx.saved_tensors
        dx = grad - _spread(member @ grad / count, member)
        dx.addcmul_(x_hat, _spread(member @ (grad * x_hat) / count, member), value=-1).mul_(_spread(rstd, member))
        return dx, None, None, None


def _membership(sample: torch.Tensor, n_samples: int, dtype: torch.dtype) -> torch.Tensor:
    """[n_samples, N] one-hot rows: per-sample sums of [N, C] rows are one GEMM (member @ x). index_add_ into a
    handful of rows serialises on them (50 ms for 15k x 64 into one row, a fifth of SCTN's forward)."""
    return torch.nn.functional.one_hot(sample, n_samples).T.to(dtype)


def _spread(stats: torch.Tensor, member: torch.Tensor) -> torch.Tensor:
    """[N, C]: each row's sample statistics of stats [n_samples, C] (a broadcast view for one sample)."""
    if len(stats) == 1:
        return stats.expand(member.shape[1], -1)
    return member.T @ stats


class SparseInstanceNorm(SparseModule):
    """Instance norm of a sparse tensor: each sample's voxels (coords[:, 0]) normalised per channel to zero
    mean and unit variance (biased variance, + eps), then an optional per-channel affine. [N, C] -> [N, C].
    Statistics in float32 at least (bf16 features come back bf16). A norm factory:
    ``partial(SparseInstanceNorm, affine=True)``."""

    def __init__(self, channels: int, eps: float = 1e-5, affine: bool = True):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels)) if affine else None
        self.bias = nn.Parameter(torch.zeros(channels)) if affine else None

    def forward(self, x: SparseTensor) -> SparseTensor:
        feats = x.feats if x.feats.dtype in (torch.float32, torch.float64) else x.feats.float()
        out = _InstanceNormalize.apply(feats, x.coords[:, 0].long(), x.batch_size, self.eps)
        if self.weight is not None:
            out = torch.addcmul(self.bias.to(out.dtype), out, self.weight.to(out.dtype))
        return x.replace_feature(out.to(x.feats.dtype))


def sparse_conv(kind: str, ndim: int, in_channels: int, out_channels: int, kernel_size=3,
                indice_key: str | None = None, stride=1, padding=0, groups: int = 1,
                generative: bool = True) -> SparseConvolution:
    """A bias-free sparse conv: kind 'subm' (sites kept), 'spconv' (strided; generative=False keeps only the
    input sites floored to the stride, MinkowskiEngine's sites) or 'inverseconv' (restores the sites of the
    strided conv registered under `indice_key`); ndim 2, 3 or 4."""
    if ndim not in CONVS:
        raise ValueError(f"ndim must be 2, 3 or 4, not {ndim!r}")
    if kind not in CONVS[ndim]:
        raise ValueError(f"conv kind must be 'subm', 'spconv' or 'inverseconv', not {kind!r}")
    options = {} if generative else {"generative": False}
    return CONVS[ndim][kind](in_channels, out_channels, kernel_size, stride=stride, padding=padding, groups=groups,
                             bias=False, indice_key=indice_key, **options)


def post_act_block(in_channels: int, out_channels: int, kernel_size=3, indice_key: str | None = None,
                   stride=1, padding=0, conv_type: str = "subm", ndim: int = 3, act: Act = nn.ReLU,
                   norm: Norm = BATCH_NORM, generative: bool = True) -> SparseSequential:
    """conv -> norm -> act, with conv_type 'subm', 'spconv' (strided) or 'inverseconv'."""
    conv = sparse_conv(conv_type, ndim, in_channels, out_channels, kernel_size, indice_key, stride, padding,
                       generative=generative)
    return SparseSequential(conv, norm(out_channels), act())


class SparseBasicBlock(SparseModule):
    """ResNet basic block on one set of sites: two SubM 3^ndim convs with norm, identity shortcut.
    [N, channels] -> [N, channels]."""

    def __init__(self, channels: int, indice_key: str | None = None, ndim: int = 3, act: Act = nn.ReLU,
                 norm: Norm = BATCH_NORM):
        super().__init__()
        self.conv1 = sparse_conv("subm", ndim, channels, channels, 3, indice_key, padding=1)
        self.bn1 = norm(channels)
        self.act1 = act()
        self.conv2 = sparse_conv("subm", ndim, channels, channels, 3, indice_key, padding=1)
        self.bn2 = norm(channels)
        self.act2 = act()

    def forward(self, x: SparseTensor) -> SparseTensor:
        out = self.conv1(x)
        out = out.replace_feature(self.act1(self.bn1(out.feats)))
        out = self.conv2(out)
        return out.replace_feature(self.act2(self.bn2(out.feats) + x.feats))


class ResidualBlock(SparseModule):
    """Basic residual block: conv -> norm -> act -> conv -> norm, + shortcut (Linear + norm when the width
    changes), act. [N, in] -> [N, out], sites kept. conv(in, out, indice_key=...) builds each conv: a SubM
    3^ndim conv by default, a depthwise-separable one in the separable U-Net (dsconv.DSResidualBlock).
    The shortcut is a SparseSequential (empty when the width is kept), so a SparseModule norm works there too."""

    def __init__(self, in_channels: int, out_channels: int, indice_key: str | None = None,
                 conv: ConvFactory | None = None, ndim: int = 3, act: Act = nn.ReLU, norm: Norm = BATCH_NORM):
        super().__init__()
        conv = conv or partial(sparse_conv, "subm", ndim, kernel_size=3)
        self.conv1 = SparseSequential(conv(in_channels, out_channels, indice_key=indice_key), norm(out_channels), act())
        self.conv2 = SparseSequential(conv(out_channels, out_channels, indice_key=indice_key), norm(out_channels))
        self.shortcut = (SparseSequential() if in_channels == out_channels else
                         SparseSequential(Linear(in_channels, out_channels, bias=False), norm(out_channels)))
        self.act = act()

    def forward(self, x: SparseTensor) -> SparseTensor:
        out = self.conv2(self.conv1(x))
        return out.replace_feature(self.act(out.feats + self.shortcut(x).feats))
