"""PointPillars: pillar VFE -> pillar scatter (pseudo-image) -> 2D BEV backbone -> anchor head."""
from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from pc3d.models.detectors.bev_detector import BEVDetector, Part


class PointPillars(BEVDetector):
    """The BEVDetector pipeline without a 3D backbone (see bev_detector.py for the parts and their widths)."""

    task = "detection"

    def __init__(self, vfe: nn.Module, map_to_bev: Part, backbone_2d: Part, dense_head: Part, post_process: nn.Module,
                 voxel_size: Sequence[float], point_cloud_range: Sequence[float]):
        super().__init__(vfe, None, map_to_bev, backbone_2d, dense_head, post_process, voxel_size, point_cloud_range)
