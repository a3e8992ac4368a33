"""SECOND: mean VFE -> sparse VoxelBackBone8x -> height compression -> 2D BEV backbone -> anchor head."""
from __future__ import annotations

from pc3d.models.detectors.bev_detector import BEVDetector


class SECOND(BEVDetector):
    """The BEVDetector pipeline with a sparse 3D backbone (see bev_detector.py for the parts and their widths)."""

    task = "detection"
