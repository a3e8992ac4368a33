"""SparseSequential: sparse modules run on the tensor, any other module on its features."""
from __future__ import annotations

from torch import nn

from pc3d.sparse.conv import SparseModule
from pc3d.sparse.norm import BatchNorm1d
from pc3d.sparse.tensor import SparseTensor


class SparseSequential(nn.Sequential, SparseModule):
    """Like nn.Sequential; feature-wise layers (BatchNorm1d, ReLU, Linear, ...) map `feats`.

    A pc3d BatchNorm1d followed by an nn.ReLU runs as one fused norm + ReLU (`BatchNorm1d.forward(x,
    relu=True)`): the same result and gradients without the ReLU's passes over the features (its forward
    hooks, if any, do not run)."""

    def forward(self, x: SparseTensor) -> SparseTensor:
        modules = list(self)
        i = 0
        while i < len(modules):
            module = modules[i]
            if isinstance(module, SparseModule):
                x = module(x)
            elif isinstance(module, BatchNorm1d) and i + 1 < len(modules) and type(modules[i + 1]) is nn.ReLU:
                x = x.replace_feature(module(x.feats, relu=True))
                i += 1
            else:
                x = x.replace_feature(module(x.feats))
            i += 1
        return x
