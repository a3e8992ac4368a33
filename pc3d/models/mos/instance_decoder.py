"""InsMOS's upsample fusion as released: OpenPCDet's UNetV2 decoder over the instance branch's encoder (a
VoxelBackBone8x-style encoder on the current scan's voxels), the box masks joined at every level by SubM blocks.

    deepest   the encoder output brought back by a plain inverse of conv_out (no norm; x_conv4 when the
              encoder has no conv_out)                                                     stride 8, c4
    level 4   F4 = fuse(cat(., masks));  UR(F4, F4) -> inverse of conv4 (spconv4)          stride 4, c3
    level 3   F3 = fuse(cat(., masks));  UR(x_conv3, F3) -> inverse of conv3 (spconv3)     stride 2, c2
    level 2   F2 = fuse(cat(., masks));  UR(x_conv2, F2) -> inverse of conv2 (spconv2)     stride 1, c1
    level 1   F1 = fuse(cat(., masks));  UR(x_conv1, F1) -> SubM block                     stride 1, c1
    out       fuse(cat(., masks)) -> Linear -> logits [V, 2] on the encoder input's sites, in its row order

fuse(cat(features, masks)): a SubM 3^3 block (conv, norm, ReLU) from c + num_classes channels back to c; masks:
[V, num_classes], 1 where the site's centre lies in a predicted box of that class (InsMOS's
find_features_by_bbox_with_yaw, which tests the sites' integer corners; pc3d tests their centres).
UR(lateral, bottom) is UNetV2's UR_block_forward: t = SparseBasicBlock(lateral); m = SubM block(cat(bottom, t))
(2c -> c); m plus cat(bottom, t) with consecutive channel pairs summed (its channel_reduction) -> the next conv.
As released, the deepest level's lateral input is the fused F4 itself (UNetV2 passes x_conv4 there).

Widths come from the encoder (`stage_channels`) and the inverse convs take its strided convs' keys ("spconv2" ..
"spconv4", "spconv_down2"), so they run the encoder's own kernel maps; the SubM blocks use "subm1" .. "subm4"
(VoxelBackBone8x's; VoxelResBackBone8x names its "res1" .. "res4": a SubM map is cached by kernel, so the blocks
find it either way).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from pc3d.models.backbones3d.blocks import SparseBasicBlock, batch_norm, post_act_block
from pc3d.sparse import SparseInverseConv3d, SparseTensor

MaskFn = Callable[[SparseTensor], torch.Tensor]


class URBlock(nn.Module):
    """UNetV2's UR block at width c: lateral [V, c], bottom [V, c] on the same sites -> `then` applied to
    m(cat(bottom, t(lateral))) + the channel-pair sums of that concatenation."""

    def __init__(self, channels: int, key: str, then: nn.Module, norm):
        super().__init__()
        self.transform = SparseBasicBlock(channels, indice_key=key, norm=norm)
        self.merge = post_act_block(2 * channels, channels, 3, indice_key=key, norm=norm)
        self.then = then

    def forward(self, lateral: SparseTensor, bottom: SparseTensor) -> SparseTensor:
        joined = bottom.replace_feature(torch.cat([bottom.feats, self.transform(lateral).feats], 1))
        merged = self.merge(joined).feats
        reduced = joined.feats.view(len(merged), merged.shape[1], -1).sum(2)
        return self.then(joined.replace_feature(merged + reduced))


class InstanceDecoder(nn.Module):
    """stage_channels: the encoder's (c1, c2, c3, c4); out_channels: its conv_out width (None: no conv_out);
    num_classes: box classes (mask columns). norm_momentum: the decoder's BatchNorm (InsMOS: 0.01).
    forward(encoded, stages, masks) with the encoder's forward_features output and masks(tensor) -> [V, K]
    gives logits [V, 2] (static, moving) on the encoder input's sites."""

    def __init__(self, stage_channels: Sequence[int], out_channels: int | None, num_classes: int,
                 norm_momentum: float = 0.01):
        super().__init__()
        c1, c2, c3, c4 = stage_channels
        norm = batch_norm(norm_momentum)

        def fuse(c: int, key: str):
            return post_act_block(c + num_classes, c, 3, indice_key=key, norm=norm)

        def inverse(cin: int, cout: int, key: str):
            return post_act_block(cin, cout, 3, indice_key=key, conv_type="inverseconv", norm=norm)

        self.inv_conv_out = None if out_channels is None else SparseInverseConv3d(
            out_channels, c4, (3, 1, 1), bias=False, indice_key="spconv_down2")
        self.fuse = nn.ModuleList([fuse(c4, "subm4"), fuse(c3, "subm3"), fuse(c2, "subm2"), fuse(c1, "subm1"),
                                   fuse(c1, "subm1")])
        self.ur = nn.ModuleList([URBlock(c4, "subm4", inverse(c4, c3, "spconv4"), norm),
                                 URBlock(c3, "subm3", inverse(c3, c2, "spconv3"), norm),
                                 URBlock(c2, "subm2", inverse(c2, c1, "spconv2"), norm),
                                 URBlock(c1, "subm1", post_act_block(c1, c1, 3, indice_key="subm1", norm=norm), norm)])
        self.classifier = nn.Linear(c1, 2)

    def forward(self, encoded: SparseTensor, stages: dict[str, SparseTensor], masks: MaskFn) -> torch.Tensor:
        x = stages["x_conv4"] if self.inv_conv_out is None else self.inv_conv_out(encoded)
        laterals = [None, stages["x_conv3"], stages["x_conv2"], stages["x_conv1"]]
        for fuse, ur, lateral in zip(self.fuse[:-1], self.ur, laterals, strict=True):
            mask = masks(x)
            fused = fuse(x.replace_feature(torch.cat([x.feats, mask], 1)))
            x = ur(fused if lateral is None else lateral, fused)
        # the last UR block kept level 1's sites and rows: its masks hold (as released)
        return self.classifier(self.fuse[-1](x.replace_feature(torch.cat([x.feats, mask], 1))).feats)
