"""Sparse tensors and sparse convolution.

SparseTensor (spconv's argument order: feats, coords, spatial_shape, batch_size) and the
convolution family: submanifold, strided, inverse, transposed, pooling, grouped and depthwise, for
D = 2, 3 and 4. Two backends share spconv 2.x's weight layout: the native one (torch + numba, any
device, the default on CPU) and spconv (used for CUDA tensors when installed).
"""
from pc3d.sparse.backend import get_backend, set_backend
from pc3d.sparse.conv import (
    SparseConv2d,
    SparseConv3d,
    SparseConv4d,
    SparseConvolution,
    SparseConvTranspose2d,
    SparseConvTranspose3d,
    SparseConvTranspose4d,
    SparseInverseConv2d,
    SparseInverseConv3d,
    SparseInverseConv4d,
    SparseModule,
    SubMConv2d,
    SubMConv3d,
    SubMConv4d,
)
from pc3d.sparse.linear import Linear
from pc3d.sparse.norm import BatchNorm1d
from pc3d.sparse.pool import (
    SparseAvgPool2d,
    SparseAvgPool3d,
    SparseAvgPool4d,
    SparseMaxPool2d,
    SparseMaxPool3d,
    SparseMaxPool4d,
    SparsePool,
)
from pc3d.sparse.sequential import SparseSequential
from pc3d.sparse.tensor import SparseTensor, add_at_sites, cat_features

__all__ = [
    "BatchNorm1d", "Linear", "SparseAvgPool2d", "SparseAvgPool3d", "SparseAvgPool4d", "SparseConv2d", "SparseConv3d",
    "SparseConv4d", "SparseConvTranspose2d", "SparseConvTranspose3d", "SparseConvTranspose4d",
    "SparseConvolution", "SparseInverseConv2d", "SparseInverseConv3d", "SparseInverseConv4d",
    "SparseMaxPool2d", "SparseMaxPool3d", "SparseMaxPool4d", "SparseModule", "SparsePool",
    "SparseSequential", "SparseTensor", "SubMConv2d", "SubMConv3d", "SubMConv4d", "add_at_sites", "cat_features",
    "get_backend", "set_backend",
]
