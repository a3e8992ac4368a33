"""CenterPoint (voxel or pillar): VFE -> [sparse 3D backbone] -> BEV map -> 2D BEV backbone -> center head."""
from __future__ import annotations

from pc3d.models.detectors.bev_detector import BEVDetector


class CenterPoint(BEVDetector):
    """backbone_3d: a sparse backbone (voxel CenterPoint) or None (pillar CenterPoint, with a pillar VFE and
    PointPillarScatter). Parts and widths: see bev_detector.py."""

    task = "detection"
