"""SparseSequential: sparse modules run on the tensor, any other module on its features."""
from __future__ import annotations

from torch import nn

from pc3d.sparse.conv import SparseModule
from pc3d.sparse.tensor import SparseTensor


class SparseSequential(nn.Sequential, SparseModule):
    """Like nn.Sequential; feature-wise layers (BatchNorm1d, ReLU, Linear, ...) map `feats`."""

    def forward(self, x: SparseTensor) -> SparseTensor:
        for module in self:
            if isinstance(module, SparseModule):
                x = module(x)
            else:
                x = x.replace_feature(module(x.feats))
        return x
