"""The semantic segmentation loss: weighted cross-entropy + Lovasz-softmax on the labelled points."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from pc3d.models.losses.lovasz import lovasz_softmax


class SegmentationLoss(nn.Module):
    """ce_weight * CE(logits, labels; class_weights, ignore_index) + lovasz_weight * Lovasz-softmax.

    logits float [P, C], labels int64 [P] -> {"loss", "loss_ce", "loss_lovasz"} (the parts detached).
    class_weights: C floats or None. ignore_index: label never scored (0 for SemanticKITTI, -1 ScanNet).
    """

    def __init__(self, num_classes: int, ignore_index: int = -1, class_weights: Sequence[float] | None = None,
                 ce_weight: float = 1.0, lovasz_weight: float = 1.0):
        super().__init__()
        if class_weights is not None and len(class_weights) != num_classes:
            raise ValueError(f"class_weights has {len(class_weights)} entries for {num_classes} classes")
        weights = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        self.register_buffer("class_weights", weights, persistent=False)
        self.ignore_index, self.ce_weight, self.lovasz_weight = ignore_index, ce_weight, lovasz_weight

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = logits.float()
        scored = labels[labels != self.ignore_index]
        total = len(scored) if self.class_weights is None else self.class_weights[scored].sum()
        if total > 0:
            ce = F.cross_entropy(logits, labels, weight=self.class_weights, ignore_index=self.ignore_index)
        else:  # all ignored, or only classes of weight 0: torch's weighted mean would be 0 / 0
            ce = logits.sum() * 0.0
        lovasz = (lovasz_softmax(logits.softmax(1), labels, self.ignore_index) if self.lovasz_weight
                  else logits.sum() * 0.0)
        loss = self.ce_weight * ce + self.lovasz_weight * lovasz
        return {"loss": loss, "loss_ce": ce.detach(), "loss_lovasz": lovasz.detach()}
