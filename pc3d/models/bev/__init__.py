"""Sparse-to-BEV mapping (height compression, pillar scatter) and 2D BEV backbones with FPN upsampling."""
from .map_to_bev import HeightCompression, PointPillarScatter
from .second_bev import BaseBEVBackbone

__all__ = ["BaseBEVBackbone", "HeightCompression", "PointPillarScatter"]
