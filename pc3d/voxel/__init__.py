"""Voxelizers: hard, dynamic, pillar, cylindrical and spatio-temporal (4D).

Everything between raw points and a SparseTensor lives here: point clouds over a range and a voxel
size become voxel coordinates (batch index first), per-voxel features and the point<->voxel maps
that carry per-voxel predictions back to every original point. Kernels are in pc3d_ops.
"""
from pc3d.voxel.grid import unique_voxels

__all__ = ["unique_voxels"]
