"""Per-voxel pooling of per-point features with torch's own scatter_reduce (autograd, any device)."""
from __future__ import annotations

import numpy as np
import torch


def _index(point_to_voxel: np.ndarray | torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    index = torch.as_tensor(point_to_voxel, device=features.device).long()
    return index[:, None].expand(-1, features.shape[1])


def scatter_mean(features: torch.Tensor, point_to_voxel: np.ndarray | torch.Tensor, num_voxels: int) -> torch.Tensor:
    """Mean of the features [N', C] of each voxel's points: [num_voxels, C] (zeros for empty voxels)."""
    out = features.new_zeros(num_voxels, features.shape[1])
    return out.scatter_reduce(0, _index(point_to_voxel, features), features, "mean", include_self=False)


def scatter_max(features: torch.Tensor, point_to_voxel: np.ndarray | torch.Tensor, num_voxels: int) -> torch.Tensor:
    """Channel-wise max of the features [N', C] of each voxel's points: [num_voxels, C] (zeros for
    empty voxels); the gradient goes to the maximal points (split evenly between ties)."""
    out = features.new_zeros(num_voxels, features.shape[1])
    return out.scatter_reduce(0, _index(point_to_voxel, features), features, "amax", include_self=False)
