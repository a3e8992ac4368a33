"""Sparse 3D backbones as explicit stage lists (VoxelBackBone8x, sparse U-Nets, DSVT, FlatFormer);
shared blocks live in one module.
"""
