"""Models composed explicitly from parts, one concept per file.

Sub-packages: vfe (voxel feature encoders), backbones3d (sparse conv and window-attention
backbones), bev (sparse-to-BEV mapping and 2D backbones), heads (anchor, CenterPoint, segmentation),
detectors, segmentors, flow, mos and snn. Configs pick parts with hydra `_target_`; no registry.
"""
