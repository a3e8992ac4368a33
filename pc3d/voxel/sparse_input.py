"""Voxelizer output -> pc3d.sparse.SparseTensor, the input of a sparse backbone."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from pc3d.sparse.tensor import SparseTensor


def to_sparse_tensor(features: np.ndarray | torch.Tensor, coords: np.ndarray | torch.Tensor,
                     spatial_shape: Sequence[int], batch_size: int,
                     device: torch.device | str | None = None) -> SparseTensor:
    """SparseTensor from voxel features [M, C] (float) and coords int32 [M, 1 + D] (batch first).

    Numpy inputs are wrapped without a copy; the features are moved to `device` (default: theirs),
    the coordinates follow them. Coordinates are checked against batch_size x spatial_shape.
    """
    feats = torch.as_tensor(features)
    if device is not None:
        feats = feats.to(device)
    index = torch.as_tensor(coords, device=feats.device)
    return SparseTensor(feats, index, spatial_shape, batch_size)
