"""Sparse convolution modules (submanifold, strided, transposed, inverse; grouped), D = 2, 3, 4.

One N-d class, `SparseConvolution`, with thin aliases named as in spconv (`SubMConv3d`,
`SparseConv3d`, `SparseConvTranspose3d`, `SparseInverseConv3d`, ...). The weight has spconv 2.x's
layout [Cout, *kernel, Cin / groups], so a state_dict loads under either backend.

Output sites follow spconv: submanifold keeps the input sites; a strided conv's output o reads
input o * stride - padding + k * dilation and exists where any of those is active; a transposed
conv writes p * stride - padding + k * dilation; an inverse conv runs the map of the strided conv
registered under the same `indice_key` backwards and restores its input sites.
"""
from __future__ import annotations

import math
import weakref

import torch
from torch import nn

from pc3d.errors import ConfigError, SparseTensorError
from pc3d.sparse import backend as _backend
from pc3d.sparse.checks import check_channels
from pc3d.sparse.kernel_map import KernelMap, _tuple, strided_map, submanifold_map
from pc3d.sparse.ops import compute_dtype, sparse_conv
from pc3d.sparse.tensor import MapCache, SparseTensor


class SparseModule(nn.Module):
    """Marker base: a module whose forward takes and returns a SparseTensor."""


def cached_map(x: SparseTensor, key: tuple, build) -> KernelMap:
    """The map of `key` on x's coordinates, built on first use."""
    kmap = x.maps.get(key)
    if kmap is None:
        kmap = x.maps[key] = build()
    return kmap


class SparseConvolution(SparseModule):
    def __init__(self, ndim: int, in_channels: int, out_channels: int, kernel_size=3, stride=1,
                 padding=0, dilation=1, groups: int = 1, bias: bool = True, subm: bool = False,
                 output_padding=0, transposed: bool = False, inverse: bool = False,
                 indice_key: str | None = None, backend: str | None = None, algo=None, generative: bool = True):
        super().__init__()
        check_channels(in_channels, out_channels, groups)
        if inverse and not indice_key:
            raise ConfigError("an inverse conv needs the indice_key of its paired strided conv")
        self.ndim, self.in_channels, self.out_channels, self.groups = ndim, in_channels, out_channels, groups
        self.kernel_size = _tuple(kernel_size, ndim, "kernel_size")
        self.stride = _tuple(stride, ndim, "stride")
        self.padding = _tuple(padding, ndim, "padding")
        self.dilation = _tuple(dilation, ndim, "dilation")
        self.output_padding = _tuple(output_padding, ndim, "output_padding")
        if subm and self.stride != (1,) * ndim:
            raise ConfigError(f"a submanifold conv keeps its input sites: stride must be 1, got {stride!r}")
        self.subm, self.transposed, self.inverse = subm, transposed, inverse
        self.generative = generative
        if not generative:
            check_floored_sites(self)
        self.skip_zero_rows = False  # native engine: leave all-zero input rows out of the work (spiking inputs)
        self.indice_key, self.backend = indice_key, backend
        self.device_type = "cpu"
        self.weight = nn.Parameter(torch.empty(out_channels, *self.kernel_size, in_channels // groups))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self._spconv = {}
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight.view(self.out_channels, -1), a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight[0].numel()
            nn.init.uniform_(self.bias, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))

    def extra_repr(self) -> str:
        kind = ("subm" if self.subm else "inverse" if self.inverse else "transposed" if self.transposed
                else "strided" if self.generative else "strided (floored sites)")
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, kind={kind}, "
                f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
                f"groups={self.groups}, bias={self.bias is not None}, indice_key={self.indice_key}")

    def forward(self, x: SparseTensor) -> SparseTensor:
        if not isinstance(x, SparseTensor):
            raise SparseTensorError(f"{type(self).__name__} expects a SparseTensor, got {type(x).__name__}")
        if x.ndim != self.ndim:
            raise SparseTensorError(f"{type(self).__name__} is {self.ndim}-D but the tensor is {x.ndim}-D")
        if x.feats.shape[1] != self.in_channels:
            raise SparseTensorError(f"{type(self).__name__} expects {self.in_channels} channels, got "
                                    f"{x.feats.shape[1]}")
        self.device_type = x.device.type
        if _backend.resolve(self.backend, x.device.type, grouped=self.groups != 1) == "spconv":
            return self._forward_spconv(x)
        kmap, inverse = self.kernel_map(x)
        # a bf16 conv with a bias on CPU: the bias (rounded to bf16, as autocast casts it) joins the float32 sums
        # before the one rounding to bf16, as in torch's own bf16 conv; elsewhere it is added in the output dtype
        wide = (self.bias is not None and x.device.type == "cpu"
                and compute_dtype(x.feats, self.weight) == torch.bfloat16)
        feats = sparse_conv(x.feats, self.weight, kmap, self.groups, inverse, self.skip_zero_rows,
                            torch.float32 if wide else None)
        if wide:
            feats = (feats + self.bias.to(torch.bfloat16).float()).to(torch.bfloat16)
        elif self.bias is not None:  # in the features' dtype: a bf16 conv under autocast stays bf16
            feats = feats + self.bias.to(feats.dtype)
        if self.subm:  # the same sites: their maps, and spconv's twin for the layers that run there
            return x.replace_feature(feats)
        if inverse:  # back on the paired conv's input sites, with the maps built there (a U-Net's encoder level)
            maps = kmap.in_maps() if kmap.in_maps is not None else None  # None: that cache is gone, build anew
            return x.with_sites(feats, kmap.in_coords, kmap.in_spatial_shape, kmap.in_stride, maps=maps)
        return x.with_sites(feats, kmap.out_coords, kmap.out_spatial_shape, kmap.out_stride)

    def kernel_map(self, x: SparseTensor) -> tuple[KernelMap, bool]:
        """(the map this conv runs over x, whether it runs it backwards); built once per tensor and key."""
        if self.subm:
            key = ("subm", self.kernel_size, self.dilation)
            kmap = cached_map(x, key, lambda: submanifold_map(x, self.kernel_size, self.dilation))
            if self.indice_key:
                x.indice_dict.setdefault(self.indice_key, kmap)
            return kmap, False
        if self.inverse:
            kmap = x.indice_dict.get(self.indice_key)
            if kmap is not None and kmap.in_coords is kmap.out_coords:  # a SubM map: it has no other sites to go to
                raise SparseTensorError(f"inverse conv: indice_key {self.indice_key!r} names a submanifold conv's "
                                        "map; an inverse conv needs the key of the strided conv it undoes")
            if kmap is None or kmap.out_coords is not x.coords:
                raise SparseTensorError(f"inverse conv: no strided conv with indice_key "
                                        f"{self.indice_key!r} produced these sites")
            if kmap.kernel_size != self.kernel_size:
                raise SparseTensorError(f"inverse conv kernel {self.kernel_size} differs from its paired "
                                        f"conv's {kmap.kernel_size} (indice_key {self.indice_key!r})")
            return kmap, True
        key = ("transposed" if self.transposed else "conv", self.kernel_size, self.stride, self.padding,
               self.dilation, self.output_padding if self.transposed else None, self.generative)
        kmap = cached_map(x, key, lambda: strided_map(x, self.kernel_size, self.stride, self.padding,
                                                      self.dilation, self.transposed, self.output_padding,
                                                      self.generative))
        if isinstance(x.maps, MapCache):  # the input sites' map cache, for the inverse conv that returns there
            kmap.in_maps = weakref.ref(x.maps)
        if self.indice_key:
            x.indice_dict[self.indice_key] = kmap
        return kmap, False

    def _forward_spconv(self, x: SparseTensor) -> SparseTensor:
        from pc3d.sparse import spconv_backend

        twin = self._spconv.get(x.device.type)
        if twin is None:
            twin = self._spconv[x.device.type] = spconv_backend.build_conv(self).to(x.device)
        twin.weight = self.weight
        twin.bias = self.bias
        y = twin(spconv_backend.floored_input(x, self.indice_key) if self.inverse else spconv_backend.to_spconv(x))
        if self.subm:
            stride = x.stride
        elif self.inverse:
            stride = x.indice_dict.get(("spconv input stride", self.indice_key), x.stride)
        elif self.transposed:
            stride = tuple(max(1, s // k) for s, k in zip(x.stride, self.stride, strict=False))
        else:
            stride = tuple(s * k for s, k in zip(x.stride, self.stride, strict=False))
            if self.indice_key:
                x.indice_dict[("spconv input stride", self.indice_key)] = x.stride
            if not self.generative:
                return spconv_backend.keep_floored(y, x, stride, self.stride, self.indice_key)
        return spconv_backend.from_spconv(y, x, stride)


def check_floored_sites(conv: SparseConvolution) -> None:
    """generative=False needs a strided conv whose footprint holds every input of its floored site: for each
    remainder r < stride, r + padding is a multiple of the dilation below kernel x dilation (k3 s2 p1: yes)."""
    if conv.subm or conv.transposed or conv.inverse:
        raise ConfigError("generative=False is for strided convs (submanifold, transposed and inverse convs "
                          "have their sites already)")
    for k, s, p, d in zip(conv.kernel_size, conv.stride, conv.padding, conv.dilation, strict=True):
        if any((r + p) % d or (r + p) // d >= k for r in range(s)):
            raise ConfigError(f"generative=False: kernel {conv.kernel_size}, stride {conv.stride}, padding "
                              f"{conv.padding}, dilation {conv.dilation} leave some input outside its floored "
                              "site's footprint (need padding + stride <= kernel at dilation 1)")


def _alias(name: str, ndim: int, **fixed):
    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, indice_key=None, backend=None, algo=None, output_padding=0, **options):
        SparseConvolution.__init__(self, ndim, in_channels, out_channels, kernel_size, stride, padding,
                                   dilation, groups, bias, indice_key=indice_key, backend=backend,
                                   output_padding=output_padding, **fixed, **options)

    return type(name, (SparseConvolution,), {"__init__": __init__, "__module__": __name__,
                                             "__doc__": f"{ndim}-D {name} (see SparseConvolution)."})


SubMConv2d = _alias("SubMConv2d", 2, subm=True)
SubMConv3d = _alias("SubMConv3d", 3, subm=True)
SubMConv4d = _alias("SubMConv4d", 4, subm=True)
SparseConv2d = _alias("SparseConv2d", 2)
SparseConv3d = _alias("SparseConv3d", 3)
SparseConv4d = _alias("SparseConv4d", 4)
SparseConvTranspose2d = _alias("SparseConvTranspose2d", 2, transposed=True)
SparseConvTranspose3d = _alias("SparseConvTranspose3d", 3, transposed=True)
SparseConvTranspose4d = _alias("SparseConvTranspose4d", 4, transposed=True)
SparseInverseConv2d = _alias("SparseInverseConv2d", 2, inverse=True)
SparseInverseConv3d = _alias("SparseInverseConv3d", 3, inverse=True)
SparseInverseConv4d = _alias("SparseInverseConv4d", 4, inverse=True)
