"""The BEV detector pipeline of SECOND, PointPillars and CenterPoint, built part by part with derived widths.

    vfe (built by the config; its in_channels are the dataset's point columns)      -> out_channels
    backbone_3d(in_channels)            sparse, optional            -> out_channels, output_shape(grid)
    map_to_bev(in_channels, spatial_shape)                           -> out_channels (C x z cells left)
    backbone_2d(in_channels)                                         -> out_channels
    dense_head(in_channels)

Every part after the VFE arrives as a partial (hydra `_partial_: true`) and the detector completes it with
the width of the part before, so no config carries a derived channel count. The grid is the voxelizer's:
VoxelGrid(voxel_size, point_cloud_range).spatial_shape, (Z, Y, X), passed on by the dataset config.

Train mode: `model(batch)` -> {"loss", loss terms}; eval mode: one prediction dict per frame
(pc3d.models.postprocess).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from pc3d.voxel import VoxelGrid

Part = Callable[..., nn.Module]


class BEVDetector(nn.Module):
    """Base of SECOND, PointPillars and CenterPoint (each sets `task`); parts as in the module docstring."""

    def __init__(self, vfe: nn.Module, backbone_3d: Part | None, map_to_bev: Part, backbone_2d: Part,
                 dense_head: Part, post_process: nn.Module, voxel_size: Sequence[float],
                 point_cloud_range: Sequence[float]):
        super().__init__()
        self.vfe = vfe
        width, shape = vfe.out_channels, VoxelGrid(voxel_size, point_cloud_range).spatial_shape
        self.backbone_3d = None if backbone_3d is None else backbone_3d(in_channels=width)
        if self.backbone_3d is not None:
            width, shape = self.backbone_3d.out_channels, self.backbone_3d.output_shape(shape)
        self.map_to_bev = map_to_bev(in_channels=width, spatial_shape=shape)
        self.backbone_2d = backbone_2d(in_channels=self.map_to_bev.out_channels)
        self.dense_head = dense_head(in_channels=self.backbone_2d.out_channels)
        self.post_process = post_process

    def forward(self, batch: dict):
        features = self.vfe(batch)
        if self.backbone_3d is not None:
            features = self.backbone_3d(features)
        bev = self.backbone_2d(self.map_to_bev(features))
        out = self.dense_head(bev)
        if self.training:
            return self.dense_head.loss(out, batch)
        return self.post_process(self.dense_head.predict(out), batch["frame_id"])
