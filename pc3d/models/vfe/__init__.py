"""Voxel feature encoders: turn the points of each voxel or pillar into one feature vector (mean,
pillar, dynamic with cluster and voxel-centre offsets). Each returns a pc3d.sparse.SparseTensor.
"""
from .dynamic_vfe import DynamicVFE
from .mean_vfe import MeanVFE
from .pfn import PFNLayer
from .pillar_vfe import PillarVFE

__all__ = ["DynamicVFE", "MeanVFE", "PFNLayer", "PillarVFE"]
