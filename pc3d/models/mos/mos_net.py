"""4DMOS-style moving-object segmentation: a 4D sparse U-Net over a window of scans (task "mos").

    batch (TemporalVoxelizer: 4D voxels (b, t, z, y, x), mean point columns per voxel)
    -> motion U-Net (motion_net.MotionUNet) -> Linear -> voxel logits [V, 2] (static, moving)
    -> train: cross-entropy on every labelled point of the window (current and past scans) through
       point_to_voxel; MOS train id 0 (unlabelled) and points outside the grid add nothing
    -> eval: the current scan's points (first num_current_points rows of each sample) take their
       voxel's argmax

Two logits, not 4DMOS's three: 4DMOS sets the unlabelled logit to -inf before its softmax, which is a
two-class softmax over static / moving with a dead weight row; here the row is simply absent (targets
are the MOS train ids minus one: -1 unlabelled, ignored; 0 static; 1 moving).

A current-scan point outside the voxel grid takes the label of the nearest current-scan voxel
(centroid distance, same sample; unmapped="nearest", the default) or static (unmapped="static").

Train mode: {"loss", "loss_mos", "acc", "moving_iou"} (the last two on this batch's points, logged).
Eval mode: per sample {"frame_id", "moving": uint8 [n_current], "point_labels": int64 [n_current] (the
current scan's MOS train ids, when the batch has them)} and with return_log_odds=True "log_odds": float32
[N] over every point of the window (log p(moving) - log p(static); 0 outside the grid) and "measured": bool
[N] (the point has a voxel), for a binary Bayes filter over overlapping windows (pc3d.eval.bayes_filter).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pc3d.data.batch import sparse_input
from pc3d.errors import ConfigError
from pc3d.models.segmentors.point_head import fill_point_to_voxel
from pc3d.sparse import SparseModule, SparseTensor

UNMAPPED = ("nearest", "static")
IGNORE = -1  # target of unlabelled points (MOS train id 0 - 1)


def current_mask(batch: dict) -> torch.Tensor:
    """bool [sum N]: the rows of each sample's current scan (all rows for a single-scan batch)."""
    if "num_current_points" not in batch:
        return torch.ones(len(batch["points"]), dtype=torch.bool, device=batch["points"].device)
    offsets, batch_of = batch["point_offsets"], batch["point_batch"]
    index_in_sample = torch.arange(len(batch_of), device=batch_of.device) - offsets[batch_of]
    return index_in_sample < batch["num_current_points"].to(batch_of.device)[batch_of]


def mos_targets(batch: dict) -> torch.Tensor:
    """int64 [sum N]: -1 unlabelled (ignored), 0 static, 1 moving (MOS train ids 0 / 1 / 2 minus one)."""
    return batch["point_labels"].long() - 1


def mos_loss(voxel_logits: torch.Tensor, batch: dict, class_weights: torch.Tensor | None = None,
             point_mask: torch.Tensor | None = None) -> dict:
    """Cross-entropy of the points' voxel logits [V, 2] over the labelled, mapped points (point_mask: also
    restrict to these rows); plus accuracy and this batch's moving IoU (detached, for the log)."""
    point_voxel, target = batch["point_to_voxel"], mos_targets(batch)
    keep = (point_voxel >= 0) & (target != IGNORE)
    if point_mask is not None:
        keep &= point_mask
    logits, target = voxel_logits[point_voxel[keep]], target[keep]
    if len(target) == 0:  # nothing labelled: a zero that still reaches every weight
        zero = voxel_logits.sum() * 0
        return {"loss": zero, "loss_mos": zero.detach(), "acc": zero.detach(), "moving_iou": zero.detach()}
    loss = F.cross_entropy(logits, target, weight=class_weights)
    pred = logits.detach().argmax(1)
    tp = ((pred == 1) & (target == 1)).sum()
    union = ((pred == 1) | (target == 1)).sum()
    return {"loss": loss, "loss_mos": loss.detach(), "acc": (pred == target).float().mean(),
            "moving_iou": tp.float() / union.clamp(min=1)}


def current_point_voxel(batch: dict, voxel_batch: torch.Tensor, unmapped: str = "nearest",
                        current: torch.Tensor | None = None) -> torch.Tensor:
    """int64 [sum n_current]: the voxel of every current-scan point (rows in batch order); a point outside
    the grid gets the nearest voxel holding current-scan points (unmapped="nearest") or -1 ("static").
    current: current_mask(batch), when the caller has it."""
    if unmapped not in UNMAPPED:
        raise ValueError(f"unmapped must be one of {UNMAPPED}, not {unmapped!r}")
    current = current_mask(batch) if current is None else current
    point_voxel = batch["point_to_voxel"][current]
    if unmapped == "static":
        return point_voxel
    mapped = point_voxel[point_voxel >= 0]
    holds_current = torch.full_like(voxel_batch, -1)  # other voxels (past scans only) are not candidates
    holds_current[mapped] = voxel_batch[mapped]
    return fill_point_to_voxel(point_voxel, batch["points"][current], batch["point_batch"][current], holds_current)


def point_probabilities(batch: dict, voxel_logits: torch.Tensor, voxel_batch: torch.Tensor,
                        unmapped: str = "nearest") -> tuple[torch.Tensor, torch.Tensor]:
    """(float32 [sum N, 2] (static, moving) probabilities of every point of the window, its voxel's softmax, zero
    rows where it has none; that mask [sum N]). A current-scan point outside the grid takes the nearest
    current-scan voxel's (unmapped="nearest") or stays unmapped ("static": it is predicted static)."""
    current = current_mask(batch)
    point_voxel = batch["point_to_voxel"].clone()
    point_voxel[current] = current_point_voxel(batch, voxel_batch, unmapped, current)
    mapped = point_voxel >= 0
    probabilities = voxel_logits.new_zeros((len(point_voxel), 2), dtype=torch.float32)
    probabilities[mapped] = voxel_logits.float().softmax(1)[point_voxel[mapped]]
    return probabilities, mapped


def mos_predictions(batch: dict, probabilities: torch.Tensor, mapped: torch.Tensor,
                    return_log_odds: bool = False) -> list[dict]:
    """One prediction dict per sample (see the module docstring) from the (static, moving) probabilities [M, 2]
    of the `mapped` points [sum N]: a current-scan point is moving where p(moving) > p(static), static where
    unmapped. log_odds: log p(moving) - log p(static) where the point has a voxel of the scan's own grid
    (``measured``: batch["point_to_voxel"] >= 0), 0 elsewhere."""
    full = probabilities.new_zeros((len(mapped), 2))
    full[mapped] = probabilities.float()
    current = current_mask(batch)
    moving = (full[:, 1] > full[:, 0])[current].to(torch.uint8)
    counts = torch.bincount(batch["point_batch"][current], minlength=batch["batch_size"]).tolist()
    starts = [0]
    for n in counts:
        starts.append(starts[-1] + n)
    labels = batch["point_labels"][current] if "point_labels" in batch else None
    if return_log_odds:
        measured = (batch["point_to_voxel"] >= 0) & mapped
        tiny = torch.finfo(torch.float32).tiny
        log_odds = torch.where(measured, full[:, 1].clamp_min(tiny).log() - full[:, 0].clamp_min(tiny).log(), 0.0)
    offsets = batch["point_offsets"].tolist()
    out = []
    for b in range(batch["batch_size"]):
        pred = {"frame_id": batch["frame_id"][b], "moving": moving[starts[b]:starts[b + 1]].cpu().numpy()}
        if labels is not None:
            pred["point_labels"] = labels[starts[b]:starts[b + 1]].cpu().numpy()
        if return_log_odds:
            pred["log_odds"] = log_odds[offsets[b]:offsets[b + 1]].detach().cpu().numpy()
            pred["measured"] = measured[offsets[b]:offsets[b + 1]].cpu().numpy()
        out.append(pred)
    return out


VOXEL_INPUTS = ("mean", "occupancy")


def net_input(x: SparseTensor, kind: str) -> SparseTensor:
    """What a motion net reads of the 4D voxels x: "mean" (their mean point columns) or "occupancy" (a 1 per voxel:
    4DMOS's and InsMOS's input, a constant 0.5 there, whose scale the first BatchNorm takes away)."""
    return x if kind == "mean" else x.replace_feature(x.feats.new_ones(len(x.feats), 1))


def motion_channels(in_channels: int, kind: str) -> int:
    """The motion net's input width for `net_input(x, kind)` of voxels with in_channels columns."""
    if kind not in VOXEL_INPUTS:
        raise ConfigError(f"the motion net's input (MosNet voxel_input, InsMOS motion_input) must be one of "
                          f"{VOXEL_INPUTS}, got {kind!r}")
    return in_channels if kind == "mean" else 1


class MosNet(nn.Module):
    """in_channels: voxel feature width (mean x, y, z, intensity, time: 5). backbone: a partial (hydra
    `_partial_: true`) completed as backbone(in_channels=...), a MotionUNet or any 4D sparse module
    with `out_channels`. voxel_input: "mean" (the voxels' mean point columns) or "occupancy" (a 1 per voxel,
    4DMOS's input; `net_input`). class_weights: cross-entropy weights of (static, moving), or None.
    unmapped: "nearest" or "static" for current-scan points outside the grid. return_log_odds: add the
    window's per-point log-odds to each prediction (for a Bayes filter)."""

    task = "mos"

    def __init__(self, in_channels: int, backbone: Callable[..., SparseModule],
                 class_weights: Sequence[float] | None = None, unmapped: str = "nearest",
                 return_log_odds: bool = False, voxel_input: str = "mean"):
        super().__init__()
        if unmapped not in UNMAPPED:
            raise ValueError(f"unmapped must be one of {UNMAPPED}, not {unmapped!r}")
        if class_weights is not None and len(class_weights) != 2:
            raise ValueError(f"class_weights: two floats (static, moving), got {list(class_weights)}")
        self.unmapped, self.return_log_odds, self.voxel_input = unmapped, return_log_odds, voxel_input
        self.backbone = backbone(in_channels=motion_channels(in_channels, voxel_input))
        self.head = nn.Linear(self.backbone.out_channels, 2)
        self.register_buffer("class_weights", None if class_weights is None else
                             torch.tensor(class_weights, dtype=torch.float32), persistent=False)

    def voxels(self, batch: dict) -> SparseTensor:
        """The backbone's input: the window's voxels with their mean point columns, or a 1 each (occupancy: the
        points' columns are never averaged)."""
        return sparse_input(batch, batch["points"].device, occupancy=self.voxel_input == "occupancy")

    def forward(self, batch: dict):
        if self.training:
            return mos_loss(self.head(self.backbone(self.voxels(batch)).feats), batch, self.class_weights)
        scores = self.moving_probabilities(batch)
        return self.predictions(batch, scores["probabilities"][scores["mapped"]], scores["mapped"])

    def moving_probabilities(self, batch: dict) -> dict:
        """{"probabilities": float32 [sum N, 2], "mapped": bool [sum N]} of every point of the window
        (point_probabilities): what test-time augmentation (pc3d.models.tta) averages over views."""
        x = self.voxels(batch)
        logits = self.head(self.backbone(x).feats)
        probabilities, mapped = point_probabilities(batch, logits, x.coords[:, 0].long(), self.unmapped)
        return {"probabilities": probabilities, "mapped": mapped}

    def predictions(self, batch: dict, probabilities: torch.Tensor, mapped: torch.Tensor) -> list[dict]:
        """The per-sample prediction dicts from the probabilities [M, 2] of the mapped points (mos_predictions)."""
        return mos_predictions(batch, probabilities, mapped, self.return_log_odds)
