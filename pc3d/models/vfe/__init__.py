"""Voxel feature encoders: turn the points of each voxel or pillar into one feature vector (mean,
pillar, dynamic with cluster and voxel-centre offsets).
"""
