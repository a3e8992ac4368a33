"""VoxelBackBone8x (SECOND's sparse backbone, OpenPCDet's stage layout): 8x downsampling.

Backbone convention (every pc3d 3D backbone): `forward(x) -> SparseTensor` (the last stage);
`forward_features(x) -> (SparseTensor, dict[str, SparseTensor])` adds every stage's output
("x_conv1" .. "x_conv4", OpenPCDet's names) for multi-scale heads. Parts expose `out_channels`, and the
voxel backbones `output_shape(spatial_shape)`: the grid left after their strided convs (a detector's
BEV width is out_channels x the z cells left).
"""
from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from torch import nn

from pc3d.errors import ConfigError
from pc3d.models.backbones3d.blocks import Act, Norm, batch_norm, post_act_block
from pc3d.sparse import SparseConvolution, SparseSequential, SparseTensor
from pc3d.sparse.kernel_map import conv_output_shape


class VoxelStages(nn.Module):
    """conv_input -> conv1 .. conv4 (-> conv_out or None), set with `out_channels` and `stage_channels` (the
    widths of conv1 .. conv4) by the subclass; the methods of the convention above. `z_padding`: empty cells
    added above the grid's top in z before the first conv, as OpenPCDet's `sparse_shape = grid_size[::-1] +
    [1, 0, 0]` (z_padding 1): KITTI's and Waymo's 40 z cells then end as 2 under SECOND's stages, a BEV map of
    2 x out_channels, rather than 1."""

    z_padding: int = 0

    def forward(self, x: SparseTensor) -> SparseTensor:
        return self.forward_features(x)[0]

    def forward_features(self, x: SparseTensor) -> tuple[SparseTensor, dict[str, SparseTensor]]:
        if self.z_padding:
            x = SparseTensor(x.feats, x.coords, self._padded(x.spatial_shape), x.batch_size, stride=x.stride,
                             check=False)
        x1 = self.conv1(self.conv_input(x))
        x2 = self.conv2(x1)
        x3 = self.conv3(x2)
        x4 = self.conv4(x3)
        out = x4 if self.conv_out is None else self.conv_out(x4)
        return out, {"x_conv1": x1, "x_conv2": x2, "x_conv3": x3, "x_conv4": x4}

    def output_shape(self, spatial_shape: Sequence[int]) -> tuple[int, ...]:
        """The output's spatial shape for an input grid (Z, Y, X): spconv's output-size rule
        (in + 2p - d(k - 1) - 1) // s + 1 applied for each strided conv, in stage order."""
        shape = self._padded(spatial_shape)
        for m in self.modules():  # registration order is execution order: the stages form one chain
            if isinstance(m, SparseConvolution) and not (m.subm or m.inverse or m.transposed):
                shape = conv_output_shape(shape, m.kernel_size, m.stride, m.padding, m.dilation)
        return shape

    def _padded(self, spatial_shape: Sequence[int]) -> tuple[int, ...]:
        return (int(spatial_shape[0]) + self.z_padding, *(int(s) for s in spatial_shape[1:]))

    def _set_z_padding(self, z_padding: int) -> None:
        if isinstance(z_padding, bool) or not isinstance(z_padding, int) or z_padding < 0:
            raise ConfigError(f"z_padding must be an int >= 0 (cells added above the grid in z), got {z_padding!r}")
        self.z_padding = z_padding


class VoxelBackBone8x(VoxelStages):
    """Stages of 16, 32, 64, 64 channels (`channels`); stages 2-4 start with a stride-2 sparse conv.
    norm_momentum: of the default BatchNorm (OpenPCDet's 0.01 suits long runs; short CPU runs need ~0.1,
    else the running statistics used in eval mode lag far behind the weights). act, norm: blocks.py.

    With `out_channels` (128 in SECOND), a (3, 1, 1) / (2, 1, 1) conv further halves z for BEV. z_padding:
    VoxelStages.
    """

    def __init__(self, in_channels: int, out_channels: int | None = 128,
                 channels: Sequence[int] = (16, 32, 64, 64), norm_momentum: float = 0.01, act: Act = nn.ReLU,
                 norm: Norm | None = None, z_padding: int = 0):
        super().__init__()
        self._set_z_padding(z_padding)
        c1, c2, c3, c4 = channels
        block = partial(post_act_block, act=act, norm=norm or batch_norm(norm_momentum))
        self.conv_input = block(in_channels, c1, 3, indice_key="subm1", padding=1)
        self.conv1 = SparseSequential(block(c1, c1, 3, indice_key="subm1"))
        self.conv2 = SparseSequential(
            block(c1, c2, 3, stride=2, padding=1, indice_key="spconv2", conv_type="spconv"),
            block(c2, c2, 3, indice_key="subm2"),
            block(c2, c2, 3, indice_key="subm2"))
        self.conv3 = SparseSequential(
            block(c2, c3, 3, stride=2, padding=1, indice_key="spconv3", conv_type="spconv"),
            block(c3, c3, 3, indice_key="subm3"),
            block(c3, c3, 3, indice_key="subm3"))
        self.conv4 = SparseSequential(
            block(c3, c4, 3, stride=2, padding=(0, 1, 1), indice_key="spconv4", conv_type="spconv"),
            block(c4, c4, 3, indice_key="subm4"),
            block(c4, c4, 3, indice_key="subm4"))
        self.conv_out = z_halving(block, c4, out_channels)
        self.out_channels = out_channels or c4
        self.stage_channels = (c1, c2, c3, c4)


def z_halving(block, cin: int, out_channels: int | None) -> SparseSequential | None:
    """SECOND's (3, 1, 1) / (2, 1, 1) conv that halves z before the BEV map (None: no such conv);
    block: post_act_block with the backbone's act and norm."""
    if out_channels is None:
        return None
    return block(cin, out_channels, (3, 1, 1), stride=(2, 1, 1), indice_key="spconv_down2", conv_type="spconv")
