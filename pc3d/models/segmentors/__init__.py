"""Segmentors: a sparse backbone plus a point-level head, shared by outdoor and indoor data."""
from pc3d.models.segmentors.point_head import PointFusionHead, PointHead, fill_point_to_voxel, voxel_labels
from pc3d.models.segmentors.sparse_segmentor import SparseSegmentor

__all__ = ["PointFusionHead", "PointHead", "SparseSegmentor", "fill_point_to_voxel", "voxel_labels"]
