"""Voxelizers: hard, dynamic, pillar, cylindrical and spatio-temporal (4D).

Everything between raw points and a SparseTensor lives here: point clouds over a range and a voxel
size become voxel coordinates (batch index first), per-voxel features and the point<->voxel maps
that carry per-voxel predictions back to every original point. Kernels are in pc3d_ops.voxelize.
Cells are spconv's: float32 floor((p - range_min) / voxel_size), coords (b, z, y, x).

Every voxelizer is built by its ``__init__`` and has one batch method, ``voxelize(clouds, seeds=None,
frames=None) -> dict`` (the voxel keys of pc3d.data.batch as torch tensors), which ``Collate`` calls;
calling it on one cloud (``vox(points, ..., batch_index=b)``) gives the numpy result with its counters.
"""
from pc3d.voxel.checks import NonFinitePointsWarning, VoxelLimitWarning
from pc3d.voxel.cylindrical import CylindricalGrid, CylindricalVoxelizer, HardCylindricalVoxelizer
from pc3d.voxel.dynamic import DynamicGridVoxelizer, DynamicVoxelizer, DynamicVoxels, grid_sample, point_offsets
from pc3d.voxel.grid import VoxelGrid
from pc3d.voxel.hard import HardGridVoxelizer, HardVoxelizer, HardVoxels
from pc3d.voxel.pillar import DynamicPillarVoxelizer, PillarVoxelizer, pillar_grid
from pc3d.voxel.scatter import scatter_max, scatter_mean
from pc3d.voxel.sparse_input import to_sparse_tensor
from pc3d.voxel.temporal import HardTemporalVoxelizer, TemporalVoxelizer, temporal_grid

__all__ = [
    "CylindricalGrid", "CylindricalVoxelizer", "DynamicGridVoxelizer", "DynamicPillarVoxelizer", "DynamicVoxelizer",
    "DynamicVoxels", "HardCylindricalVoxelizer", "HardGridVoxelizer", "HardTemporalVoxelizer", "HardVoxelizer",
    "HardVoxels", "NonFinitePointsWarning", "VoxelLimitWarning",
    "PillarVoxelizer", "TemporalVoxelizer", "VoxelGrid", "grid_sample", "pillar_grid", "point_offsets",
    "scatter_max", "scatter_mean", "temporal_grid", "to_sparse_tensor",
]
