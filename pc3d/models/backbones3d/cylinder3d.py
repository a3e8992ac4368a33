"""Cylinder3D's asymmetric U-Net (Zhu et al., CVPR 2021) over a cylindrical grid, dense or with LiM3D's SDSC.

    context   ResContextBlock  c_in -> h                                                      stride 1
    down i    ResBlock  -> (pooled, pre-pool skip): h -> 2h -> 4h -> 8h -> 16h; the first two pool rho, phi and z,
              the last two rho and phi (z kept)                                                stride 2 .. 16
    up i      UpBlock(x, skip): SubM 3^3 -> inverse of down i's pool -> + skip -> three SubM 1x3x3 convs
    recon     ReconBlock (DDCM): sigmoid(bn(conv 3x1x1)) + sigmoid(bn(conv 1x3x1)) + sigmoid(bn(conv 1x1x3)), times x
    out       cat(recon, up) [V, 4h] on the input sites

Kernels are written in Cylinder3D's (rho, phi, z) order: "3x1" is (3, 1, 3), "1x3" is (1, 3, 3). pc3d's cylindrical
tensors are (b, z, phi, rho) (pc3d.voxel.cylindrical), so each kernel and stride is reversed when built. Every conv
runs conv -> LeakyReLU -> BatchNorm (Cylinder3D's order; the recon block: conv -> norm -> sigmoid). An asymmetric
residual block sums two branches: 3x1 then 1x3 convs, and 1x3 then 3x1 (ResContextBlock: the other way round).

separable=True builds every submanifold conv as a Sparse Depthwise Separable Convolution (LiM3D's network: its
strided and inverse convs stay dense). The logits (Cylinder3D: a SubM 3^3 conv with bias over the 4h features)
are the segmentor's head (a Linear). The released recon block feeds its second branch sigmoid(first branch) (its
1x3x1 conv's output is computed and dropped, in Cylinder3D's code as in LiM3D's); here each branch reads its own
conv, as the paper's DDCM describes.

Backbone convention: `forward(x) -> SparseTensor`, `out_channels`.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pc3d.models.backbones3d.blocks import batch_norm, sparse_conv
from pc3d.models.backbones3d.dsconv import SparseDepthwiseSeparableConv
from pc3d.sparse import SparseModule, SparseSequential, SparseTensor

K3x1, K1x3, K3 = (3, 1, 3), (1, 3, 3), (3, 3, 3)


def _zyx(size: Sequence[int]) -> tuple[int, ...]:
    """A (rho, phi, z) kernel or stride in pc3d's (z, phi, rho) axis order."""
    return tuple(size)[::-1]


class _Units:
    """The conv units of one network: subm(cin, cout, kernel, key) -> conv -> LeakyReLU -> BatchNorm."""

    def __init__(self, separable: bool, norm_momentum: float):
        self.separable, self.norm = separable, batch_norm(norm_momentum)

    def conv(self, cin: int, cout: int, kernel: Sequence[int], key: str) -> SparseModule:
        key = f"{key}_{''.join(map(str, kernel))}"  # one key per kernel shape (spconv keys a SubM map by name alone)
        if self.separable:
            return SparseDepthwiseSeparableConv(cin, cout, _zyx(kernel), "subm", indice_key=key, norm=self.norm)
        return sparse_conv("subm", 3, cin, cout, _zyx(kernel), key)

    def subm(self, cin: int, cout: int, kernel: Sequence[int], key: str) -> SparseSequential:
        return SparseSequential(self.conv(cin, cout, kernel, key), nn.LeakyReLU(), self.norm(cout))


class AsymmetricResBlock(SparseModule):
    """Two branches summed: first_kernel then second_kernel convs, and second then first (c_in -> c_out)."""

    def __init__(self, cin: int, cout: int, key: str, units: _Units, first: Sequence[int], second: Sequence[int]):
        super().__init__()
        self.shortcut = SparseSequential(units.subm(cin, cout, first, key), units.subm(cout, cout, first, key))
        self.branch = SparseSequential(units.subm(cin, cout, second, key), units.subm(cout, cout, second, key))

    def forward(self, x: SparseTensor) -> SparseTensor:
        out = self.branch(x)
        return out.replace_feature(out.feats + self.shortcut(x).feats)


class DownBlock(SparseModule):
    """AsymmetricResBlock (3x1 first) -> (the pooled tensor, the block's output: the skip). height_pooling: stride
    2 in z too (else (2, 2, 1) in (rho, phi, z))."""

    def __init__(self, cin: int, cout: int, key: str, units: _Units, height_pooling: bool):
        super().__init__()
        self.res = AsymmetricResBlock(cin, cout, key + "bef", units, K3x1, K1x3)
        stride = (2, 2, 2) if height_pooling else (2, 2, 1)
        self.pool = sparse_conv("spconv", 3, cout, cout, 3, key, _zyx(stride), 1)

    def forward(self, x: SparseTensor) -> tuple[SparseTensor, SparseTensor]:
        skip = self.res(x)
        return self.pool(skip), skip


class UpBlock(SparseModule):
    """SubM 3^3 (c_in -> c_out) -> inverse of the pool registered as `up_key` -> + skip -> three 1x3 convs."""

    def __init__(self, cin: int, cout: int, key: str, up_key: str, units: _Units):
        super().__init__()
        self.trans = units.subm(cin, cout, K3, key + "new_up")
        self.up = sparse_conv("inverseconv", 3, cout, cout, 3, up_key)
        self.convs = SparseSequential(*[units.subm(cout, cout, K1x3, key) for _ in range(3)])

    def forward(self, x: SparseTensor, skip: SparseTensor) -> SparseTensor:
        up = self.up(self.trans(x))
        return self.convs(up.replace_feature(up.feats + skip.feats))


class ReconBlock(SparseModule):
    """DDCM: the sum of sigmoid(norm(conv)) over the 3x1x1, 1x3x1 and 1x1x3 kernels, times the input."""

    def __init__(self, channels: int, key: str, units: _Units):
        super().__init__()
        self.branches = nn.ModuleList(
            SparseSequential(units.conv(channels, channels, kernel, key), units.norm(channels), nn.Sigmoid())
            for kernel in ((3, 1, 1), (1, 3, 1), (1, 1, 3)))

    def forward(self, x: SparseTensor) -> SparseTensor:
        gate = torch.stack([branch(x).feats for branch in self.branches]).sum(0)
        return x.replace_feature(gate * x.feats)


class AsymmetricUNet(SparseModule):
    """in_channels: voxel feature width (Cylinder3D's point encoder: 16); hidden: h (32). separable: SDSC in every
    submanifold conv (LiM3D). norm_momentum: BatchNorm momentum. Input: a (b, z, phi, rho) SparseTensor; output
    [V, 4h] on its sites."""

    def __init__(self, in_channels: int = 16, hidden: int = 32, separable: bool = False, norm_momentum: float = 0.1):
        super().__init__()
        units = _Units(separable, norm_momentum)
        h = hidden
        self.context = AsymmetricResBlock(in_channels, h, "prebef", units, K1x3, K3x1)
        widths = [h, 2 * h, 4 * h, 8 * h, 16 * h]
        self.down = nn.ModuleList(DownBlock(widths[i], widths[i + 1], f"down{i + 2}", units, height_pooling=i < 2)
                                  for i in range(4))  # pools "down2" .. "down5", as Cylinder3D names them
        ups = [(16 * h, 16 * h, "down5"), (16 * h, 8 * h, "down4"), (8 * h, 4 * h, "down3"), (4 * h, 2 * h, "down2")]
        self.up = nn.ModuleList(UpBlock(cin, cout, f"up{j}", pool, units) for j, (cin, cout, pool) in enumerate(ups))
        self.recon = ReconBlock(2 * h, "reconbef", units)
        self.out_channels = 4 * h

    def forward(self, x: SparseTensor) -> SparseTensor:
        x = self.context(x)
        skips = []
        for down in self.down:
            x, skip = down(x)
            skips.append(skip)
        for up in self.up:
            x = up(x, skips.pop())
        return x.replace_feature(torch.cat([self.recon(x).feats, x.feats], 1))
