"""Sparse-to-BEV mapping (height compression, pillar scatter) and 2D BEV backbones with FPN upsampling."""
