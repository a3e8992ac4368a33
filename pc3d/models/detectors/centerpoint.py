"""CenterPoint (voxel or pillar): VFE -> [sparse 3D backbone] -> BEV map -> 2D BEV backbone -> center head."""
from __future__ import annotations

from torch import nn


class CenterPoint(nn.Module):
    """backbone_3d: a sparse backbone (voxel CenterPoint) or None (pillar CenterPoint, with a pillar VFE
    and PointPillarScatter). Train mode: {"loss", loss terms}; eval mode: one prediction dict per frame."""

    def __init__(self, vfe: nn.Module, backbone_3d: nn.Module | None, map_to_bev: nn.Module,
                 backbone_2d: nn.Module, dense_head: nn.Module, post_process: nn.Module):
        super().__init__()
        self.vfe, self.backbone_3d, self.map_to_bev = vfe, backbone_3d, map_to_bev
        self.backbone_2d, self.dense_head, self.post_process = backbone_2d, dense_head, post_process

    def forward(self, batch: dict):
        features = self.vfe(batch)
        if self.backbone_3d is not None:
            features, _ = self.backbone_3d(features)
        bev = self.backbone_2d(self.map_to_bev(features))
        out = self.dense_head(bev)
        if self.training:
            return self.dense_head.loss(out, batch)
        return self.post_process(self.dense_head.predict(out), batch["frame_id"])
