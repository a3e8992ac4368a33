"""A fully sparse, anchor-free indoor 3D detector in the manner of TR3D / FCAF3D (ScanNet).

    voxels (batch contract: mean x, y, z, r, g, b per voxel)
    -> backbone: sparse ResNet encoder + generative transposed-conv neck (GenerativeSparseResNet), one level
       (or several, TR3D's two: the head reads each, every class on its own level)
    -> head: per site class scores and an axis-aligned box (AxisAlignedBoxHead)
    -> train: focal + DIoU losses against the nearest sites of each box; eval: per-class axis-aligned NMS

Train mode: {"loss", "loss_cls", "loss_box", "positives"}. Eval mode: the detection predictions of
pc3d.models.contract, boxes [K, 7] with heading 0 in the frame of the sample's points.
"""
from __future__ import annotations

from collections.abc import Callable

from torch import nn

from pc3d.data.batch import sparse_input


class SparseIndoorDetector(nn.Module):
    """in_channels: voxel feature width; num_classes: K (labels 1..K, the dataset's box_class_names).
    backbone / head: partials completed here as backbone(in_channels=...) and
    head(in_channels=backbone.out_channels, num_classes=...)."""

    task = "detection"
    axis_aligned = True  # heading always 0 (pc3d.models.contract)

    def __init__(self, in_channels: int, num_classes: int, backbone: Callable[..., nn.Module],
                 head: Callable[..., nn.Module]):
        super().__init__()
        self.backbone = backbone(in_channels=in_channels)
        self.head = head(in_channels=self.backbone.out_channels, num_classes=num_classes)

    def forward(self, batch: dict):
        features = self.backbone(sparse_input(batch, batch["points"].device))
        if self.training:
            return self.head.loss(features, batch["gt_boxes"], batch["num_gt"])
        return self.head.predict(features, batch["frame_id"])
