"""A voxel semantic segmentor, shared by outdoor (SemanticKITTI) and indoor (ScanNet) data.

    voxels (batch contract: mean point features per voxel, or a voxel encoder's) -> sparse backbone -> voxel logits
    -> train: loss on voxels (majority label of their points) or on points
    -> eval: every point's logits through point_to_voxel -> one label per point

Train mode: ``model(batch)`` -> {"loss", "loss_ce", "loss_lovasz", "acc"} on the labelled voxels / points.
Eval mode: a list with, per sample, {"frame_id": str, "pred_labels": int64 [N] numpy (one train id per
point of ``points``; ``ignore_index`` for points without a voxel when unmapped="ignore"),
"point_labels": int64 [N] numpy (the ground truth, when the batch has it)}; a multi-scan sample's N is its
current scan's ``num_current_points`` (the past scans inform it, they are not scored twice).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from pc3d.data.batch import sparse_input
from pc3d.errors import ConfigError
from pc3d.models.losses import SegmentationLoss
from pc3d.models.segmentors.point_head import PointFusionHead, PointHead, fill_point_to_voxel, voxel_labels
from pc3d.sparse import SparseModule, SparseTensor


class SparseSegmentor(nn.Module):
    """in_channels: the voxel feature width (3 + C: the mean of x, y, z and the dataset's feature columns).
    backbone: a partial (hydra `_partial_: true`) completed here as backbone(in_channels=in_channels), a
    SparseUNet or any sparse module returning a SparseTensor on its input sites and exposing `out_channels`
    (the head's width is taken from it). num_classes: logits per point, including the ignored class when it
    is a train id (SemanticKITTI: 20 with ignore_index 0, never predicted; ScanNet: 20 with ignore_index -1).
    class_weights, ce_weight, lovasz_weight: SegmentationLoss.
    loss_on: "voxels" (majority label per voxel; cheap: V rows) or "points" (every mapped point; exact).
    unmapped: "nearest" or "ignore" for points outside every voxel at evaluation (see point_head).
    point_branch: hidden width of a PointFusionHead (0: voxel logits only, the plain PointHead); with it
    each point is classified from its voxel's feature and its own columns, and the loss is on points.
    voxel_encoder: a partial completed as voxel_encoder(in_channels=in_channels) that encodes each voxel from its
    points, batch -> SparseTensor, exposing `out_channels` (Cylinder3D's point encoder,
    pc3d.models.vfe.cylinder_vfe); None: the voxels' mean point columns. in_channels is then the points' width.
    """

    task = "segmentation"

    def __init__(self, in_channels: int, backbone: Callable[..., SparseModule], num_classes: int,
                 ignore_index: int = -1, class_weights: Sequence[float] | None = None, ce_weight: float = 1.0,
                 lovasz_weight: float = 1.0, loss_on: str = "voxels", unmapped: str = "nearest", dropout: float = 0.0,
                 point_branch: int = 0, voxel_encoder: Callable[..., nn.Module] | None = None):
        super().__init__()
        if loss_on not in ("voxels", "points"):
            raise ValueError(f"loss_on must be 'voxels' or 'points', not {loss_on!r}")
        if point_branch and voxel_encoder is not None:
            raise ConfigError("point_branch reads the voxels' mean point columns: it does not go with a voxel_encoder")
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.loss_on, self.unmapped = ("points" if point_branch else loss_on), unmapped
        self.voxel_encoder = None if voxel_encoder is None else voxel_encoder(in_channels=in_channels)
        self.backbone = backbone(in_channels=in_channels if voxel_encoder is None else self.voxel_encoder.out_channels)
        self.fusion = point_branch > 0
        width = self.backbone.out_channels
        self.head = (PointFusionHead(width, in_channels, num_classes, point_branch, dropout)
                     if self.fusion else PointHead(width, num_classes, dropout))
        self.loss = SegmentationLoss(num_classes, ignore_index, class_weights, ce_weight, lovasz_weight)

    def forward(self, batch: dict):
        if self.training:
            x = self.voxels(batch)
            return self.losses(batch, self.backbone(x).feats, x.feats)
        return self.predictions(batch, *self.evaluated_logits(batch))

    def voxels(self, batch: dict) -> SparseTensor:
        """The backbone's input: the voxel encoder's features, or each voxel's mean point columns."""
        if self.voxel_encoder is None:
            return sparse_input(batch, batch["points"].device)
        return self.voxel_encoder(batch)

    def evaluated_logits(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits of the points that get a voxel at evaluation, in point order; that mask [sum N]): the
        `unmapped` policy decides whether a point outside every voxel takes its nearest one's."""
        x = self.voxels(batch)
        feats = self.backbone(x).feats
        point_voxel = fill_point_to_voxel(batch["point_to_voxel"], batch["points"], batch["point_batch"],
                                          x.coords[:, 0].long(), self.unmapped)
        return self.point_logits(batch, feats, x.feats, point_voxel), point_voxel >= 0

    def class_probabilities(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(float32 class probabilities [sum N, num_classes] of every point, zero rows where it has no voxel;
        the mask of the points that have one): what test-time augmentation (pc3d.models.tta) averages."""
        logits, mapped = self.evaluated_logits(batch)
        probabilities = logits.new_zeros((len(mapped), logits.shape[1]), dtype=torch.float32)
        probabilities[mapped] = logits.float().softmax(1)
        return probabilities, mapped

    def point_logits(self, batch: dict, feats: torch.Tensor, voxel_cols: torch.Tensor,
                     point_voxel: torch.Tensor) -> torch.Tensor:
        """Logits of the points with point_voxel >= 0, in point order."""
        if not self.fusion:
            return PointHead.to_points(self.head(feats), point_voxel)
        mapped = point_voxel >= 0
        return self.head(feats, point_voxel[mapped], batch["points"][mapped].to(voxel_cols.dtype), voxel_cols)

    def losses(self, batch: dict, feats: torch.Tensor, voxel_cols: torch.Tensor) -> dict:
        point_to_voxel = batch["point_to_voxel"]
        if self.loss_on == "voxels":
            logits = self.head(feats)
            labels = voxel_labels(point_to_voxel, batch["point_labels"], len(logits), self.num_classes,
                                  self.ignore_index)
        else:
            logits = self.point_logits(batch, feats, voxel_cols, point_to_voxel)
            labels = batch["point_labels"][point_to_voxel >= 0]
        out = self.loss(logits, labels)
        valid = labels != self.ignore_index
        out["acc"] = (logits.detach().argmax(1)[valid] == labels[valid]).float().mean()
        return out

    def predictions(self, batch: dict, logits: torch.Tensor, mapped: torch.Tensor) -> list[dict]:
        """The per-sample prediction dicts (see the module docstring) from the scores of the mapped points
        (logits or probabilities: each point takes its best class other than the ignored one)."""
        if 0 <= self.ignore_index < self.num_classes:  # the "unlabelled" train id is never a prediction
            logits = logits.clone()
            logits[:, self.ignore_index] = float("-inf")
        labels = torch.full_like(batch["point_to_voxel"], self.ignore_index)
        labels[mapped] = logits.argmax(1)
        offsets = batch["point_offsets"].tolist()
        # a multi-scan sample (n_past_scans) is scored and written for its current scan: its first rows
        current = batch["num_current_points"].tolist() if "num_current_points" in batch else None
        out = []
        for b in range(batch["batch_size"]):
            rows = slice(offsets[b], offsets[b + 1] if current is None else offsets[b] + current[b])
            pred = {"frame_id": batch["frame_id"][b], "pred_labels": labels[rows].cpu().numpy()}
            if "point_labels" in batch:
                pred["point_labels"] = batch["point_labels"][rows].cpu().numpy()
            out.append(pred)
        return out
