"""E-3DSNN's spiking shape classifier (ModelNet40), reading top to bottom:

    voxels (mean x, y, z, normals)  ->  stem: encoding SubM conv + BN, then two SpikeConvs  (stride 1)
    stage i: SpikeConv stride 2 (kernel 2) -> blocks[i] residual blocks                      (stride 2^(i+1))
    head: 1x1 conv to num_classes (no norm)  ->  mean over each sample's sites  ->  logits

Widths: "T" (16, 32, 64, 128) and "S" (24, 48, 96, 160); `neuron=nn.ReLU` builds the ANN twin of the same
widths. Loss: cross-entropy with label smoothing (0.2 in E-3DSNN).

E-3DSNN as released (`block="basic", blocks=(1, 1, 1, 1), head="plain"`: 1,874,216 parameters at T and 40
classes, the paper's 1.87 M): one SpikingBasicBlock (three convs) per stage, and a head that reads the last
block's pre-spike values with a bias. pc3d's defaults (`block="pair"`, SpikingBlocks of two convs, `blocks=(1, 1,
2, 1)`, `head="spike"`: a spike before a bias-free 1x1 conv; 1,504,544 parameters) are what the simulated-shapes
recipe was measured with.

Train mode: {"loss", "loss_cls", "acc"}. Eval mode: classification predictions (pc3d.models.contract):
{"frame_id", "label": int, "scores": float32 [num_classes] probabilities, "logits"}.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from pc3d.data.batch import sparse_input
from pc3d.errors import ConfigError
from pc3d.models.backbones3d.blocks import batch_norm
from pc3d.models.snn.blocks import RESIDUAL_BLOCKS, Neuron, SpikeConv
from pc3d.models.snn.neuron import MultiSpike
from pc3d.sparse import SparseSequential

WIDTHS = {"T": (16, 32, 64, 128), "S": (24, 48, 96, 160)}


class SpikingClassifier(nn.Module):
    """in_channels: voxel feature width (3 + C); num_classes; widths: a WIDTHS key or 4 ints (the stem has
    the first stage's width); blocks: residual blocks per stage, of kind `block` ("pair" | "basic");
    head: "spike" (spike -> bias-free 1x1 conv) | "plain" (1x1 conv with a bias on pre-spike values, E-3DSNN's);
    label_smoothing of the loss; neuron: factory (MultiSpike, or nn.ReLU for the ANN twin); norm_momentum of
    BatchNorm."""

    task = "classification"

    def __init__(self, in_channels: int = 6, num_classes: int = 40, widths: str | Sequence[int] = "T",
                 blocks: Sequence[int] = (1, 1, 2, 1), label_smoothing: float = 0.2, neuron: Neuron = MultiSpike,
                 norm_momentum: float = 0.1, block: str = "pair", head: str = "spike"):
        super().__init__()
        widths = WIDTHS[widths] if isinstance(widths, str) else tuple(widths)
        if len(widths) != len(blocks):
            raise ValueError(f"need one block count per stage: widths {widths}, blocks {tuple(blocks)}")
        if block not in RESIDUAL_BLOCKS or head not in ("spike", "plain"):
            raise ConfigError(f"SpikingClassifier: block must be one of {sorted(RESIDUAL_BLOCKS)} and head 'spike' or "
                              f"'plain', got {block!r}, {head!r}")
        norm = batch_norm(norm_momentum)
        self.label_smoothing = label_smoothing
        self.stem = SparseSequential(
            SpikeConv(in_channels, widths[0], 3, "stem", padding=1, neuron=nn.Identity, norm=norm),
            SpikeConv(widths[0], widths[0], 3, "stem", padding=1, neuron=neuron, norm=norm),
            SpikeConv(widths[0], widths[0], 3, "stem", padding=1, neuron=neuron, norm=norm))
        stages, width, unit = [], widths[0], RESIDUAL_BLOCKS[block]
        for i, (out, depth) in enumerate(zip(widths, blocks, strict=True)):
            stage = [SpikeConv(width, out, 2, f"down{i}", stride=2, conv_type="spconv", neuron=neuron, norm=norm)]
            stage += [unit(out, indice_key=f"stage{i}", neuron=neuron, norm=norm) for _ in range(depth)]
            stages.append(SparseSequential(*stage))
            width = out
        self.stages = nn.ModuleList(stages)
        self.head = SpikeConv(width, num_classes, 1, "head", neuron=neuron if head == "spike" else nn.Identity,
                              norm=None)
        self.head_bias = nn.Parameter(torch.zeros(num_classes)) if head == "plain" else None

    def logits(self, batch: dict) -> torch.Tensor:
        x = self.stem(sparse_input(batch, batch["points"].device))
        for stage in self.stages:
            x = stage(x)
        x = self.head(x)
        sample = x.coords[:, 0].long()
        total = x.feats.new_zeros(x.batch_size, x.feats.shape[1]).index_add_(0, sample, x.feats)
        count = torch.bincount(sample, minlength=x.batch_size).clamp(min=1).to(total.dtype)
        logits = (total / count[:, None]).float()
        return logits if self.head_bias is None else logits + self.head_bias  # the mean of conv + bias

    def forward(self, batch: dict):
        logits = self.logits(batch)
        if self.training:
            loss = F.cross_entropy(logits, batch["label"], label_smoothing=self.label_smoothing)
            acc = (logits.detach().argmax(1) == batch["label"]).float().mean()
            return {"loss": loss, "loss_cls": loss.detach(), "acc": acc}
        prob = logits.softmax(1).cpu()
        return [{"frame_id": frame, "label": int(p.argmax()), "scores": p.numpy(), "logits": lg.cpu().numpy()}
                for frame, p, lg in zip(batch["frame_id"], prob, logits, strict=True)]
