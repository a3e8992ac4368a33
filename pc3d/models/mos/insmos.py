"""InsMOS: the 4D motion net plus an instance branch whose boxes guide the moving / static decision (task "mos").

    batch (4D voxels (b, t, z, y, x) of a scan window, mean point columns per voxel)
    -> motion_net (MotionUNet) -> motion logits [V, 2] (static, moving)                     NLL (motion)
    -> instance branch: the current scan's voxels (b, z, y, x), features = point columns + motion logits
       -> backbone_3d (sparse encoder) -> map_to_bev -> backbone_2d -> dense_head (CenterHead: car,
       pedestrian, cyclist)                                                                   detection loss
    -> upsample fusion of one-hot "voxel centre inside a predicted box of class c" masks (boxes scoring
       >= mask_threshold), `fusion`:
       "motion" (UpsampleFusion, pc3d's): from the deepest decoder level of the motion net to the finest,
         each level's features concatenated with the masks and the coarser level's fused features brought
         up by the inverse of the motion net's strided conv -> final Linear -> fused logits [V, 2]
       "instance" (InstanceDecoder, InsMOS's released): a UNetV2 decoder over the instance encoder's stages
         joins the masks at every level with SubM blocks -> logits on the current scan's voxels (the past
         scans' voxels keep the motion logits; the fused NLL counts the current scan alone)   NLL (fused)
    -> eval: current-scan points from the fused logits (as MosNet), plus the detections

InsMOS takes both NLL terms on the current scan's points only (loss_on "current";
configs/experiment/semantickitti_insmos.yaml lists the remaining differences).

Parts after the motion net arrive as partials (hydra `_partial_: true`) completed with the widths before them,
as in pc3d.models.detectors.bev_detector; the BEV grid is VoxelGrid(voxel_size, point_cloud_range) (the
spatial part of the 4D grid). Two logits (static, moving) as in MosNet: the unlabelled train id is ignored.
Train mode: {"loss", "loss_fused", "loss_motion", "loss_det", "loss_hm", "loss_reg", "acc", "moving_iou"}
(acc / moving_iou of the fused output). Eval mode: per sample {"frame_id", "moving", "point_labels" (when
present), "boxes", "scores", "labels"} (labels 1..3 in dense_head's class_names).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from pc3d.data.batch import sparse_input
from pc3d.errors import ConfigError
from pc3d.geometry.points_in_boxes import points_in_boxes
from pc3d.models.backbones3d.blocks import batch_norm, post_act_block
from pc3d.models.mos.instance_decoder import InstanceDecoder
from pc3d.models.mos.mos_net import (
    UNMAPPED,
    current_mask,
    mos_loss,
    mos_predictions,
    motion_channels,
    net_input,
    point_probabilities,
)
from pc3d.models.mos.motion_net import MotionUNet
from pc3d.sparse import SparseTensor
from pc3d.voxel import VoxelGrid

Part = Callable[..., nn.Module]


def current_voxels(batch: dict) -> torch.Tensor:
    """int64 [Vc]: the (sorted) 4D voxels holding current-scan points; one time cell, so their (b, z, y, x)
    are unique."""
    point_voxel = batch["point_to_voxel"][current_mask(batch)]
    return torch.unique(point_voxel[point_voxel >= 0])


def box_masks(x: SparseTensor, detections: list[dict], num_classes: int, voxel_size: Sequence[float],
              point_cloud_range: Sequence[float], threshold: float) -> torch.Tensor:
    """float [V, num_classes]: 1 where the centre of a voxel of x (4D or 3D, any stride) lies inside a detection
    of class c (label c + 1) of its sample scoring >= threshold."""
    coords = x.coords.cpu().numpy()
    stride = np.asarray(x.stride[-3:][::-1], np.float64)  # (x, y, z) strides of a (t,) z, y, x tensor
    centres = np.asarray(point_cloud_range[:3]) + (coords[:, [-1, -2, -3]] + 0.5) * stride * np.asarray(voxel_size)
    masks = np.zeros((len(coords), num_classes), np.float32)
    for b, det in enumerate(detections):
        rows = np.flatnonzero(coords[:, 0] == b)
        keep = det["scores"] >= threshold
        for c in range(num_classes):
            boxes = det["boxes"][keep & (det["labels"] == c + 1)]
            if len(rows) and len(boxes):
                masks[rows, c] = points_in_boxes(centres[rows].astype(np.float32), boxes) >= 0
    return torch.from_numpy(masks).to(device=x.feats.device, dtype=x.feats.dtype)


class UpsampleFusion(nn.Module):
    """levels: the motion net's decoder tensors, deepest first; masks: [V_l, num_classes] per level.
    Level j: Linear + BN + ReLU over cat(features, masks, the fused level j - 1 brought up by an inverse conv
    paired with the motion net's strided conv `up_keys[j - 1]`) -> `channels`; returns logits [V_last, 2]."""

    def __init__(self, level_channels: Sequence[int], num_classes: int, channels: int, up_keys: Sequence[str],
                 up_kernel: Sequence[int], norm_momentum: float = 0.1):
        super().__init__()
        norm = batch_norm(norm_momentum)
        self.mix = nn.ModuleList(
            nn.Sequential(nn.Linear(c + num_classes + (channels if j else 0), channels, bias=False), norm(channels),
                          nn.ReLU()) for j, c in enumerate(level_channels))
        self.up = nn.ModuleList(post_act_block(channels, channels, tuple(up_kernel), indice_key=key,
                                               conv_type="inverseconv", ndim=4, norm=norm) for key in up_keys)
        self.classifier = nn.Linear(channels, 2)

    def forward(self, levels: Sequence[SparseTensor], masks: Sequence[torch.Tensor]) -> torch.Tensor:
        fused = None
        for j, (level, mask) in enumerate(zip(levels, masks, strict=True)):
            parts = [level.feats, mask]
            if fused is not None:
                parts.append(self.up[j - 1](fused).feats)
            fused = level.replace_feature(self.mix[j](torch.cat(parts, 1)))
        return self.classifier(fused.feats)


class InsMOS(nn.Module):
    """in_channels: voxel feature width (x, y, z, intensity, time: 5). motion_net: partial MotionUNet.
    backbone_3d, map_to_bev, backbone_2d, dense_head: partials as in BEVDetector (dense_head: a CenterHead
    over the box classes); post_process: a PostProcessor. voxel_size, point_cloud_range: the spatial part of
    the 4D grid. fusion_channels: width of the fusion levels. mask_threshold: detection score for the box
    masks. motion_weight, detection_weight: loss weights (the fused NLL weighs 1). class_weights: (static,
    moving) cross-entropy weights. unmapped, return_log_odds: as MosNet (of the fused output). motion_input: what the
    motion net reads, "mean" or "occupancy" (MosNet's voxel_input; InsMOS's: a constant); the instance branch reads
    the mean point columns either way. loss_on: the NLL terms over every point of the window ("window", as
    4DMOS) or the current scan's points alone ("current", InsMOS's released training). fusion: "motion" or
    "instance" (module docstring; "instance" needs a VoxelStages backbone_3d: VoxelBackBone8x or
    VoxelResBackBone8x). fusion_norm_momentum: the fusion layers' BatchNorm momentum (InsMOS: 0.01)."""

    task = "mos"

    def __init__(self, in_channels: int, motion_net: Part, backbone_3d: Part, map_to_bev: Part, backbone_2d: Part,
                 dense_head: Part, post_process: nn.Module, voxel_size: Sequence[float],
                 point_cloud_range: Sequence[float], fusion_channels: int = 16, mask_threshold: float = 0.3,
                 motion_weight: float = 1.0, detection_weight: float = 1.0,
                 class_weights: Sequence[float] | None = None, unmapped: str = "nearest",
                 return_log_odds: bool = False, motion_input: str = "mean", loss_on: str = "window",
                 fusion: str = "motion", fusion_norm_momentum: float = 0.1):
        super().__init__()
        if loss_on not in ("window", "current"):
            raise ConfigError(f"InsMOS loss_on must be 'window' or 'current', got {loss_on!r}")
        if fusion not in ("motion", "instance"):
            raise ConfigError(f"InsMOS fusion must be 'motion' or 'instance', got {fusion!r}")
        self.loss_on, self.fusion_on = loss_on, fusion
        if unmapped not in UNMAPPED:
            raise ValueError(f"unmapped must be one of {UNMAPPED}, not {unmapped!r}")
        self.voxel_size, self.point_cloud_range = list(voxel_size)[:3], list(point_cloud_range)
        self.mask_threshold, self.unmapped, self.return_log_odds = mask_threshold, unmapped, return_log_odds
        self.motion_weight, self.detection_weight = motion_weight, detection_weight
        self.motion_input = motion_input
        self.motion_net: MotionUNet = motion_net(in_channels=motion_channels(in_channels, motion_input))
        self.motion_head = nn.Linear(self.motion_net.out_channels, 2)
        shape = VoxelGrid(self.voxel_size, self.point_cloud_range).spatial_shape
        self.backbone_3d = backbone_3d(in_channels=in_channels + 2)
        self.map_to_bev = map_to_bev(in_channels=self.backbone_3d.out_channels,
                                     spatial_shape=self.backbone_3d.output_shape(shape))
        self.backbone_2d = backbone_2d(in_channels=self.map_to_bev.out_channels)
        self.dense_head = dense_head(in_channels=self.backbone_2d.out_channels)
        self.post_process = post_process
        self.num_box_classes = len(self.dense_head.class_names)
        if fusion == "instance":
            if not hasattr(self.backbone_3d, "stage_channels"):
                raise ConfigError("InsMOS fusion 'instance' decodes the instance encoder's stages: backbone_3d must "
                                  f"be VoxelBackBone8x or VoxelResBackBone8x, not {type(self.backbone_3d).__name__}")
            self.fusion = InstanceDecoder(self.backbone_3d.stage_channels,
                                          None if self.backbone_3d.conv_out is None else self.backbone_3d.out_channels,
                                          self.num_box_classes, fusion_norm_momentum)
        else:
            stages = len(self.motion_net.down)
            self.fusion = UpsampleFusion(self.motion_net.dec_channels, self.num_box_classes, fusion_channels,
                                         [f"down{i}" for i in range(stages - 2, -1, -1)],
                                         self.motion_net.down[0][0].kernel_size, fusion_norm_momentum)
        self.register_buffer("class_weights", None if class_weights is None else
                             torch.tensor(class_weights, dtype=torch.float32), persistent=False)

    def forward(self, batch: dict):
        if self.training:
            x, motion, fused, heads, _ = self.fused_logits(batch)
            return self.losses(batch, motion, fused, heads)
        scores = self.moving_probabilities(batch)
        return self.predictions(batch, scores["probabilities"][scores["mapped"]], scores["mapped"],
                                scores["detections"])

    def fused_logits(self, batch: dict):
        """(the 4D input, motion logits [V, 2], fused logits [V, 2], the dense head's maps, the detections)."""
        x = sparse_input(batch, batch["points"].device)
        _, scales = self.motion_net.forward_features(net_input(x, self.motion_input))
        motion = self.motion_head(scales["dec0"].feats)
        current = current_voxels(batch)
        scan = SparseTensor(torch.cat([x.feats[current], motion[current]], 1), x.coords[current][:, [0, 2, 3, 4]],
                            x.spatial_shape[1:], batch["batch_size"])
        encoded, stages = self.backbone_3d.forward_features(scan)
        heads = self.dense_head(self.backbone_2d(self.map_to_bev(encoded)))
        detections = self.post_process(self.dense_head.predict(heads), batch["frame_id"])

        def masks(level: SparseTensor) -> torch.Tensor:
            return box_masks(level, detections, self.num_box_classes, self.voxel_size, self.point_cloud_range,
                             self.mask_threshold)

        if self.fusion_on == "instance":  # rows of the scan's voxels, in the order of `current`
            fused = motion.index_copy(0, current, self.fusion(encoded, stages, masks).to(motion.dtype))
        else:
            levels = [scales[f"dec{i}"] for i in range(len(self.motion_net.down) - 1, -1, -1)]
            fused = self.fusion(levels, [masks(level) for level in levels])
        return x, motion, fused, heads, detections

    def moving_probabilities(self, batch: dict) -> dict:
        """{"probabilities": float32 [sum N, 2], "mapped": bool [sum N]} of every point of the window from the
        fused logits (mos_net.point_probabilities), and "detections": the instance branch's boxes per sample:
        what test-time augmentation (pc3d.models.tta) combines over views."""
        x, _, fused, _, detections = self.fused_logits(batch)
        probabilities, mapped = point_probabilities(batch, fused, x.coords[:, 0].long(), self.unmapped)
        return {"probabilities": probabilities, "mapped": mapped, "detections": detections}

    def predictions(self, batch: dict, probabilities: torch.Tensor, mapped: torch.Tensor,
                    detections: list[dict]) -> list[dict]:
        """The per-sample prediction dicts from the probabilities [M, 2] of the mapped points (mos_net.mos_predictions)
        with each sample's boxes, scores and labels."""
        out = mos_predictions(batch, probabilities, mapped, self.return_log_odds)
        for pred, det in zip(out, detections, strict=True):
            pred.update(boxes=det["boxes"], scores=det["scores"], labels=det["labels"])
        return out

    def losses(self, batch: dict, motion: torch.Tensor, fused: torch.Tensor, heads) -> dict:
        if "gt_boxes" not in batch:
            raise ConfigError("InsMOS trains its detection head on gt_boxes / gt_labels: the batch has none "
                              "(SemanticKittiDataset mode 'mos' with boxes)")
        points = current_mask(batch) if self.loss_on == "current" else None
        # the instance decoder's logits cover the current scan alone (the past voxels' are the motion logits)
        out = mos_loss(fused, batch, self.class_weights,
                       point_mask=current_mask(batch) if self.fusion_on == "instance" else points)
        motion_terms = mos_loss(motion, batch, self.class_weights, point_mask=points)
        det = self.dense_head.loss(heads, batch)
        loss = out["loss"] + self.motion_weight * motion_terms["loss"] + self.detection_weight * det["loss"]
        return {"loss": loss, "loss_fused": out["loss_mos"], "loss_motion": motion_terms["loss_mos"],
                "loss_det": det["loss"].detach(), "loss_hm": det["loss_hm"], "loss_reg": det["loss_reg"],
                "acc": out["acc"], "moving_iou": out["moving_iou"]}

