"""PointPillars: pillar VFE -> pillar scatter (pseudo-image) -> 2D BEV backbone -> anchor head."""
from __future__ import annotations

from torch import nn


class PointPillars(nn.Module):
    """Train mode: {"loss", loss terms}; eval mode: one prediction dict per frame (pc3d.models.postprocess)."""

    def __init__(self, vfe: nn.Module, map_to_bev: nn.Module, backbone_2d: nn.Module, dense_head: nn.Module,
                 post_process: nn.Module):
        super().__init__()
        self.vfe, self.map_to_bev, self.backbone_2d = vfe, map_to_bev, backbone_2d
        self.dense_head, self.post_process = dense_head, post_process

    def forward(self, batch: dict):
        pillars = self.vfe(batch)
        bev = self.backbone_2d(self.map_to_bev(pillars))
        out = self.dense_head(bev)
        if self.training:
            return self.dense_head.loss(out, batch)
        return self.post_process(self.dense_head.predict(out), batch["frame_id"])
