"""Sparse U-Nets for semantic segmentation (MinkUNet / Pointcept SpUNet style), dense or depthwise separable,
in 2, 3 or 4 dimensions (`ndim`; 4D: space-time, MOS).

    stem     SubM stem_kernel^ndim in -> channels[0] -> residual block       stride 1
    enc i    down down_kernel^ndim stride 2 (indice_key down{i}) -> enc_depths[i] residual blocks   stride 2^(i+1)
    dec i    up: inverse of down{i} -> cat(skip of stride 2^i) -> dec_depths[i] residual blocks
    out      features [V, out_channels] on the input sites (stride 1)

channels: [stem, enc 1, ..., enc S]; dec_channels: [dec S-1 ... dec 0] output width of each decoder
stage (deepest first); the network's `out_channels` is dec_channels[-1]. stem_kernel (3) and down_kernel
(2; an odd kernel pads by (k - 1) // 2 so every input site has an output) size the stem and the strided /
inverse convs (SCTN: 7 and 3). down_sites: the strided convs' output sites, "all" that an input reaches
(spconv's; an odd kernel dilates the cloud, 7.7k -> 15k voxels on an SCTN cloud) or "floor", the input sites
floored to the stride (MinkowskiEngine's, as SCTN was built; a 2^ndim kernel gives these either way).
separable=True builds every
3^ndim and 2^ndim conv after the stem as a Sparse Depthwise Separable Convolution (Less is More's unit): the
same stage list with far fewer parameters (LiM3D itself separates only the SubM convs of a Cylinder3D network).

Backbone convention (every pc3d 3D backbone): `forward(x) -> SparseTensor`;
`forward_features(x) -> (SparseTensor, dict[str, SparseTensor])` adds the multi-scale tensors, here
"enc{i}" and "dec{i}" at stride 2^i.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

from torch import nn

from pc3d.errors import ConfigError
from pc3d.models.backbones3d.blocks import Act, Norm, ResidualBlock, batch_norm, post_act_block
from pc3d.models.backbones3d.dsconv import DSResidualBlock, ds_act_block
from pc3d.sparse import SparseModule, SparseSequential, SparseTensor, cat_features


class SparseUNet(SparseModule):
    """Encoder-decoder over a voxel SparseTensor; returns a SparseTensor on the input sites.

    in_channels: input feature width (3 + C: the voxel mean of x, y, z and the feature columns).
    channels: [stem, enc 1 .. enc S] widths; enc_depths: residual blocks per encoder stage (S);
    dec_channels / dec_depths: per decoder stage, deepest first (S each). separable: SDSC blocks.
    ndim: 2, 3 or 4 (the input's spatial dimensions); act, norm: factories as in blocks.py (a SparseModule
    norm such as SparseInstanceNorm works). stem_kernel, down_kernel: see the module docstring.
    norm_momentum: of the default BatchNorm (ignored when `norm` is given; short CPU runs use 0.1: 0.01
    lets the running statistics trail the weights, and evaluation-mode outputs drift from the training ones).
    block, resample, stem: other units for the same stage list (the spiking U-Net's): block(in, out,
    indice_key=...) a residual block, resample(in, out, indice_key=..., stride=..., conv_type=...) the strided
    and inverse convs, stem(in_channels, channels[0]) the stem (None: the residual / SDSC defaults); dec_block:
    the decoder's blocks (None: `block`), the first of each stage reading cat(up, skip).
    down_sites: "all" or "floor" (see the module docstring; "floor" with the dense default resample only).
    stem_blocks: residual blocks after the stem conv of the default stem (Pointcept's SpUNet: 0).
    """

    def __init__(self, in_channels: int = 4, channels: Sequence[int] = (32, 64, 128, 256),
                 enc_depths: Sequence[int] = (2, 2, 2), dec_channels: Sequence[int] = (128, 96, 96),
                 dec_depths: Sequence[int] = (2, 2, 2), separable: bool = False, norm_momentum: float = 0.01,
                 ndim: int = 3, act: Act = nn.ReLU, norm: Norm | None = None, stem_kernel: int = 3,
                 down_kernel: int = 2, block: Callable[..., SparseModule] | None = None,
                 resample: Callable[..., SparseModule] | None = None,
                 stem: Callable[[int, int], SparseModule] | None = None, down_sites: str = "all",
                 dec_block: Callable[..., SparseModule] | None = None, stem_blocks: int = 1):
        super().__init__()
        stages = len(channels) - 1
        if down_sites not in ("all", "floor"):
            raise ConfigError(f"down_sites must be 'all' or 'floor', got {down_sites!r}")
        if down_sites == "floor" and (separable or resample is not None):
            raise ConfigError("down_sites='floor' is built for the dense strided convs (separable=False, no resample)")
        floored = {"generative": False} if down_sites == "floor" else {}
        if not (len(enc_depths) == len(dec_channels) == len(dec_depths) == stages) or stages < 1:
            raise ValueError("need len(channels) - 1 = len(enc_depths) = len(dec_channels) = len(dec_depths) >= 1, "
                             f"got {len(channels)}, {len(enc_depths)}, {len(dec_channels)}, {len(dec_depths)}")
        parts = {"ndim": ndim, "act": act, "norm": norm or batch_norm(norm_momentum)}
        block = block or partial(DSResidualBlock if separable else ResidualBlock, **parts)
        resample = resample or partial(ds_act_block if separable else post_act_block, kernel_size=down_kernel,
                                       padding=(down_kernel - 1) // 2, **parts)
        self.stem = stem(in_channels, channels[0]) if stem else SparseSequential(
            post_act_block(in_channels, channels[0], stem_kernel, indice_key="subm0", **parts),
            *[block(channels[0], channels[0], indice_key="subm0") for _ in range(stem_blocks)])
        self.down, self.enc = nn.ModuleList(), nn.ModuleList()
        for i in range(stages):
            self.down.append(resample(channels[i], channels[i + 1], indice_key=f"down{i}", stride=2,
                                     conv_type="spconv", **floored))
            self.enc.append(SparseSequential(*[block(channels[i + 1], channels[i + 1], indice_key=f"subm{i + 1}")
                                               for _ in range(enc_depths[i])]))
        dec_block = dec_block or block
        self.up, self.dec = nn.ModuleList(), nn.ModuleList()
        width = channels[-1]
        for j in range(stages):  # deepest first: decoder stage j restores the sites of down{stages - 1 - j}
            i = stages - 1 - j
            self.up.append(resample(width, dec_channels[j], indice_key=f"down{i}",
                                   conv_type="inverseconv"))
            blocks = [dec_block(dec_channels[j] + channels[i], dec_channels[j], indice_key=f"subm{i}")]
            blocks += [dec_block(dec_channels[j], dec_channels[j], indice_key=f"subm{i}")
                       for _ in range(dec_depths[j] - 1)]
            self.dec.append(SparseSequential(*blocks))
            width = dec_channels[j]
        self.out_channels = width

    def forward(self, x: SparseTensor) -> SparseTensor:
        return self.forward_features(x)[0]

    def forward_features(self, x: SparseTensor) -> tuple[SparseTensor, dict[str, SparseTensor]]:
        """The output and every stage's: "enc{i}" / "dec{i}" at stride 2^i (dec0 is the output)."""
        return unet_forward(self, x)


def unet_forward(unet: nn.Module, x: SparseTensor) -> tuple[SparseTensor, dict[str, SparseTensor]]:
    """The U-Net pass of a module with stem, down / enc (encoder, shallow first) and up / dec (decoder,
    deepest first; each up restores the sites of its down): the output and every stage's tensor,
    "enc{i}" / "dec{i}" at stride 2^i (dec0 is the output)."""
    x = unet.stem(x)
    skips = [x]
    for down, enc in zip(unet.down, unet.enc, strict=True):
        x = enc(down(x))
        skips.append(x)
    scales = {f"enc{i}": s for i, s in enumerate(skips)}
    skips.pop()
    for up, dec in zip(unet.up, unet.dec, strict=True):
        x = dec(cat_features([up(x), skips.pop()]))
        scales[f"dec{len(skips)}"] = x
    return x, scales

