"""Voxel R-CNN (Deng et al. 2021): a SECOND-style first stage whose boxes become RoIs, refined by a second stage
that pools the sparse backbone's stages at a grid of points inside each RoI.

    vfe -> backbone_3d.forward_features -> (last stage, x_conv1..4)
    map_to_bev -> backbone_2d -> dense_head                  first stage: anchor boxes (its own loss)
    dense_head.candidates -> roi_head                        second stage: proposals, RoI grid pooling, refinement
    post_process                                             score threshold, class-agnostic NMS

The parts and their derived widths are BEVDetector's; roi_head arrives as a partial and gets the backbone's
stage widths, the voxel grid and the point cloud range. Train mode: the sum of both stages' losses (each
term logged); eval mode: the refined boxes, scored by the second stage, through post_process.
"""
from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from pc3d.errors import ConfigError
from pc3d.models.detectors.bev_detector import BEVDetector, Part

STAGES = ("x_conv1", "x_conv2", "x_conv3", "x_conv4")


class VoxelRCNN(BEVDetector):
    """BEVDetector's parts plus roi_head (a VoxelRCNNHead partial); proposals: the first stage's best boxes handed
    to the second, per frame (the roi head's own NMS then keeps its train / test count)."""

    task = "detection"

    def __init__(self, vfe: nn.Module, backbone_3d: Part, map_to_bev: Part, backbone_2d: Part, dense_head: Part,
                 roi_head: Part, post_process: nn.Module, voxel_size: Sequence[float],
                 point_cloud_range: Sequence[float], proposals: int = 9000):
        super().__init__(vfe, backbone_3d, map_to_bev, backbone_2d, dense_head, post_process, voxel_size,
                         point_cloud_range)
        widths = getattr(self.backbone_3d, "stage_channels", None)
        if widths is None:
            raise ConfigError(f"Voxel R-CNN pools the 3D backbone's stages; {type(self.backbone_3d).__name__} does "
                              "not name their widths (stage_channels)")
        self.roi_head = roi_head(stage_channels=dict(zip(STAGES, widths, strict=True)), voxel_size=voxel_size,
                                 point_cloud_range=point_cloud_range)
        self.proposals = int(proposals)

    def forward(self, batch: dict):
        last, stages = self.backbone_3d.forward_features(self.vfe(batch))
        out = self.dense_head(self.backbone_2d(self.map_to_bev(last)))
        candidates = self.dense_head.candidates(out, self.proposals)
        if self.training:
            rpn = self.dense_head.loss(out, batch)
            rcnn = self.roi_head.loss(stages, candidates, batch)
            terms = {f"rpn_{k.removeprefix('loss_')}": v for k, v in rpn.items() if k != "loss"}
            return {**terms, **{k: v for k, v in rcnn.items() if k != "loss"},
                    "loss": rpn["loss"] + rcnn["loss"], "loss_rpn": rpn["loss"].detach()}
        return self.post_process(self.roi_head.predict(stages, candidates), batch["frame_id"])
