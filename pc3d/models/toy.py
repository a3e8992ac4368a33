"""A demo / test model: a small PointNet classifier for pc3d.data.toy.ToyShapes.

Not a research model; it exists to exercise the training engine. Shared per-point MLP, max pool,
MLP head with dropout (so the engine's RNG handling is exercised too).

Train mode: `model(batch)` -> {"loss": cross-entropy, "loss_cls": same, "acc": batch accuracy}.
Eval mode: a list of classification predictions (pc3d.models.contract): {"frame_id": the sample index,
"label": int, "scores": float32 [num_classes] probabilities, "logits": float32 [num_classes]}.
"""
from __future__ import annotations

from torch import nn
from torch.nn import functional as F


class ToyPointNet(nn.Module):
    task = "classification"

    def __init__(self, num_classes: int = 4, in_channels: int = 3, width: int = 64, dropout: float = 0.1):
        super().__init__()
        self.point_mlp = nn.Sequential(
            nn.Linear(in_channels, width), nn.ReLU(),
            nn.Linear(width, 2 * width), nn.ReLU(),
            nn.Linear(2 * width, 4 * width),
        )
        self.head = nn.Sequential(nn.LayerNorm(4 * width), nn.Linear(4 * width, width), nn.ReLU(),
                                  nn.Dropout(dropout), nn.Linear(width, num_classes))

    def forward(self, batch: dict):
        feats = self.point_mlp(batch["points"]).amax(dim=1)  # [B, 4 * width]
        logits = self.head(feats).float()
        if self.training:
            loss = F.cross_entropy(logits, batch["label"])
            acc = (logits.detach().argmax(1) == batch["label"]).float().mean()
            return {"loss": loss, "loss_cls": loss.detach(), "acc": acc}
        prob = logits.softmax(1).cpu()
        return [{"frame_id": str(int(i)), "label": int(p.argmax()), "scores": p.numpy(), "logits": lg.cpu().numpy()}
                for i, p, lg in zip(batch["index"], prob, logits, strict=True)]
