"""Run a pc3d sparse layer through spconv with the layer's own parameters.

Each pc3d layer builds the matching spconv module once (not registered as a child, so the
state_dict is pc3d's alone) and hands it its weight and bias at every call: the two backends
share one weight layout. The spconv twin tensor rides on the pc3d SparseTensor, so spconv's own
map cache (indice_dict) is reused along a chain of spconv layers.
"""
from __future__ import annotations

from pc3d.errors import BackendUnavailableError
from pc3d.sparse.backend import spconv_module
from pc3d.sparse.tensor import SparseTensor


def to_spconv(x: SparseTensor):
    spconv = spconv_module()
    twin = x.spconv_tensor
    if twin is not None and twin.indices is x.coords:
        return twin.replace_feature(x.feats)
    return spconv.SparseConvTensor(x.feats, x.coords, list(x.spatial_shape), x.batch_size)


def from_spconv(y, x: SparseTensor, stride) -> SparseTensor:
    same_sites = y.indices is x.coords
    out = x.with_sites(y.features, y.indices, tuple(y.spatial_shape), stride,
                       maps=x.maps if same_sites else None)
    out.spconv_tensor = y
    return out


def build_conv(layer):
    """The spconv module equivalent to a pc3d SparseConvolution."""
    spconv = spconv_module()
    if layer.groups != 1:
        raise BackendUnavailableError("spconv 2.3 has no grouped / depthwise conv; use backend='native'")
    from spconv.core import ConvAlgo

    cls = {
        (True, False, False): "SubMConv",
        (False, False, False): "SparseConv",
        (False, True, False): "SparseConvTranspose",
        (False, False, True): "SparseInverseConv",
    }[(layer.subm, layer.transposed, layer.inverse)]
    cls = getattr(spconv, f"{cls}{layer.ndim}d")
    kwargs = {"bias": layer.bias is not None, "indice_key": layer.indice_key}
    if layer.device_type == "cpu":
        kwargs["algo"] = ConvAlgo.Native  # the only spconv algorithm with a CPU backward
    if layer.inverse:
        return cls(layer.in_channels, layer.out_channels, layer.kernel_size, **kwargs)
    return cls(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
               padding=layer.padding, dilation=layer.dilation, **kwargs)


def build_pool(layer):
    spconv = spconv_module()
    cls = getattr(spconv, f"Sparse{'Max' if layer.mode == 'max' else 'Avg'}Pool{layer.ndim}d")
    kwargs = {"indice_key": layer.indice_key} if layer.indice_key else {}
    if layer.device_type == "cpu":
        from spconv.core import ConvAlgo

        kwargs["algo"] = ConvAlgo.Native
    return cls(layer.kernel_size, stride=layer.stride, padding=layer.padding, dilation=layer.dilation,
               **kwargs)
