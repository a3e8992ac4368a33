"""Run a pc3d sparse layer through spconv with the layer's own parameters.

Each pc3d layer builds the matching spconv module once (not registered as a child, so the
state_dict is pc3d's alone) and hands it its weight and bias at every call: the two backends
share one weight layout. The spconv twin tensor rides on the pc3d SparseTensor, so spconv's own
map cache (indice_dict) is reused along a chain of spconv layers.

spconv gets the native engine's checks: the layer parameters when the pc3d layer is built, the
coordinates when the SparseTensor is built, duplicate sites once per set of sites (spconv would
merge or double-count them silently) and the output grid of every strided / transposed layer
(a forward pre-hook on the twin) before spconv runs. On CPU, spconv keys sites with int32, so a
grid of 2**31 - 1 keys or more is refused there (use the native backend).

indice_key: spconv keeps one pair list per key along a chain and reuses it for every later conv of that key,
checking only the grid's shape and the site count (a raw ValueError or AssertionError, or, on other sites of
that shape and count, the wrong pairs). The native engine builds a SubM map per set of sites and lets a later
strided conv's key replace an earlier one. So a SubM key is spconv's per kernel, dilation and set of sites: the
user's key plus ':k<kernel>:d<dilation>' on the first sites it meets on the chain, then '#1', '#2', ... on each
other set (a key reused at another level), chosen by a forward pre-hook; SubM convs on one set of sites share
one pair list, and a decoder level back on its encoder's sites finds the encoder's. Before spconv runs, a
strided conv's key taken already or an inverse conv without its strided conv's pairs is a SparseTensorError
naming the key.
"""
from __future__ import annotations

import itertools

import torch

from pc3d.errors import BackendUnavailableError, SparseTensorError
from pc3d.sparse.backend import spconv_module
from pc3d.sparse.checks import INT32_MAX, check_key_space, key_space
from pc3d.sparse.kernel_map import conv_output_shape, floored_sites
from pc3d.sparse.tensor import SparseTensor


def to_spconv(x: SparseTensor):
    spconv = spconv_module()
    twin = x.spconv_tensor
    if twin is not None and twin.indices is x.coords:
        return twin.replace_feature(x.feats)
    x.check_unique()  # spconv would merge or double-count a duplicate silently
    return spconv.SparseConvTensor(x.feats, x.coords, list(x.spatial_shape), x.batch_size)


def _check_grid(twin, args) -> None:
    """Forward pre-hook of every spconv twin: the output grid of a strided / transposed / pooling
    layer must be valid (non-empty, int32 coordinates, int64 key space) before spconv computes it,
    and on CPU, where spconv keys sites by int32 (it switches to int64 keys on CUDA only), every
    grid it hashes must have fewer than 2**31 - 1 keys: beyond, its CPU maps are wrong."""
    x = args[0]
    if x.indices.shape[0] == 0:
        raise SparseTensorError(f"spconv {type(twin).__name__}: the tensor has no sites (spconv cannot run on "
                                "an empty tensor); use backend='native', which returns an empty tensor")
    shapes = [tuple(x.spatial_shape)]
    if not (getattr(twin, "subm", False) or getattr(twin, "inverse", False)):
        transposed = bool(getattr(twin, "transposed", False))
        out_shape = conv_output_shape(shapes[0], tuple(twin.kernel_size), tuple(twin.stride),
                                      tuple(twin.padding), tuple(twin.dilation), transposed,
                                      tuple(twin.output_padding) if transposed else None)
        check_key_space((x.batch_size, *out_shape), f"spconv {type(twin).__name__} output grid")
        shapes.append(out_shape)
    if x.indices.device.type == "cpu":
        for shape in shapes:
            keys = key_space((x.batch_size, *shape))
            if keys >= INT32_MAX:
                raise SparseTensorError(
                    f"spconv {type(twin).__name__} on CPU: batch_size {x.batch_size} x grid {shape} = {keys} "
                    f"keys; spconv's CPU maps hold at most {INT32_MAX - 1} (int32 keys); use backend='native'")


def _same_sites(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a is b or (a.shape == b.shape and a.device == b.device and torch.equal(a, b))


def _subm_site_key(twin, args) -> None:
    """Forward pre-hook of a SubM twin with an indice_key: sets the spconv key of this input's sites (module doc),
    the first of the twin's keys that is free or holds a SubM pair list of these sites."""
    x, base = args[0], twin.pc3d_subm_key
    for n in itertools.count():
        key = f"{base}#{n}" if n else base
        datas = x.indice_dict.get(key)
        if datas is None or (datas.is_subm and list(datas.spatial_shape) == list(x.spatial_shape)
                             and _same_sites(datas.indices, x.indices)):
            twin.indice_key = key
            return


def _check_indice_key(twin, args) -> None:
    """Forward pre-hook of a strided / transposed / inverse conv twin with an indice_key: the pairs spconv would
    reuse under the key must be this input's (module doc), else a SparseTensorError naming the key, as the
    native engine would."""
    x, name = args[0], twin.indice_key
    datas = x.indice_dict.get(name)
    if twin.inverse:  # the native engine's own messages
        if datas is None or datas.is_subm or not _same_sites(datas.out_indices, x.indices):
            raise SparseTensorError(f"inverse conv: no strided conv with indice_key {name!r} produced these sites")
        if tuple(datas.ksize) != tuple(twin.kernel_size):
            raise SparseTensorError(f"inverse conv kernel {tuple(twin.kernel_size)} differs from its paired conv's "
                                    f"{tuple(datas.ksize)} (indice_key {name!r})")
        return
    if datas is not None:
        raise SparseTensorError(
            f"indice_key {name!r}: a second strided / transposed conv takes the key of an earlier one on this chain; "
            "spconv keeps one map per key (and cannot replace it): give each strided conv its own indice_key")


def from_spconv(y, x: SparseTensor, stride) -> SparseTensor:
    same_sites = y.indices is x.coords
    out = x.with_sites(y.features, y.indices, tuple(y.spatial_shape), stride,
                       maps=x.maps if same_sites else None)
    out.spconv_tensor = y
    return out


def keep_floored(y, x: SparseTensor, stride, conv_stride, indice_key: str | None) -> SparseTensor:
    """A generative=False strided conv on spconv: spconv computes every reachable site; keep the input sites
    floored to the stride (the same values: each site reads its whole footprint either way). The full output
    is remembered under the indice_key, for the inverse conv that restores the input sites."""
    kept = floored_sites(y.indices, x.coords, conv_stride)
    if indice_key:
        x.indice_dict[("spconv floored", indice_key)] = (y, kept)
    return x.with_sites(y.features[kept], y.indices[kept], tuple(y.spatial_shape), stride)


def floored_input(x: SparseTensor, indice_key: str | None):
    """The spconv tensor an inverse conv runs on: x itself, or when its paired strided conv kept the floored
    sites only, spconv's full output with x's rows in place and zeros elsewhere (zeros add nothing)."""
    full = x.indice_dict.get(("spconv floored", indice_key))
    if full is None:
        return to_spconv(x)
    y, kept = full
    if int(kept.sum()) != len(x.coords):
        raise SparseTensorError(f"inverse conv: the floored sites of indice_key {indice_key!r} hold {int(kept.sum())} "
                                f"rows, the tensor {len(x.coords)}")
    feats = x.feats.new_zeros(len(kept), x.feats.shape[1])
    feats[kept.to(feats.device)] = x.feats
    return y.replace_feature(feats)


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
    key = layer.indice_key
    if layer.subm and key:  # spconv keeps one pair list per subm key: a key per kernel and dilation, as pc3d's maps
        key = f"{key}:k{'x'.join(map(str, layer.kernel_size))}:d{'x'.join(map(str, layer.dilation))}"
    kwargs = {"bias": layer.bias is not None, "indice_key": key}
    if layer.device_type == "cpu":
        kwargs["algo"] = ConvAlgo.Native  # the only spconv algorithm with a CPU backward
    if layer.transposed and any(d != 1 for d in layer.dilation):
        raise BackendUnavailableError("spconv 2.3 sizes a dilated transposed conv's output grid without the dilation "
                                      "(a smaller grid, output sites lost); use backend='native'")
    if layer.inverse:
        twin = cls(layer.in_channels, layer.out_channels, layer.kernel_size, **kwargs)
    elif layer.transposed:  # spconv's SparseConvTranspose*d drop output_padding: the base class takes it
        from spconv.pytorch.conv import SparseConvolution

        twin = SparseConvolution(layer.ndim, layer.in_channels, layer.out_channels, layer.kernel_size,
                                 layer.stride, layer.padding, layer.dilation, 1, transposed=True,
                                 output_padding=layer.output_padding, **kwargs)
    else:
        twin = cls(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                   padding=layer.padding, dilation=layer.dilation, **kwargs)
    # spconv runs 1x1 kernels as one mm with weight.view(Cin, Cout), not the [Cout, 1.., Cin] layout
    # of its other kernels (and of pc3d): the general path keeps one layout for every kernel size
    twin.conv1x1 = False
    twin.register_forward_pre_hook(_check_grid)
    if layer.subm and key:
        twin.pc3d_subm_key = key  # the key of the first sites; the hook sets the key of each input's
        twin.register_forward_pre_hook(_subm_site_key)
    elif key:
        twin.register_forward_pre_hook(_check_indice_key)
    return twin


def build_pool(layer):
    spconv = spconv_module()
    cls = getattr(spconv, f"Sparse{'Max' if layer.mode == 'max' else 'Avg'}Pool{layer.ndim}d")
    kwargs = {"indice_key": layer.indice_key} if layer.indice_key else {}
    if layer.device_type == "cpu":
        from spconv.core import ConvAlgo

        kwargs["algo"] = ConvAlgo.Native
    twin = cls(layer.kernel_size, stride=layer.stride, padding=layer.padding, dilation=layer.dilation,
               **kwargs)
    twin.register_forward_pre_hook(_check_grid)
    if layer.indice_key:
        twin.register_forward_pre_hook(_check_pool_key)
    return twin


def _check_pool_key(twin, args) -> None:
    """Forward pre-hook of a pool twin with an indice_key: spconv keeps one map per key and raises its own
    ValueError for a second one; the same SparseTensorError naming the key as for a strided conv (module doc)."""
    if twin.indice_key in args[0].indice_dict:
        raise SparseTensorError(
            f"indice_key {twin.indice_key!r}: a pool takes the key of an earlier strided conv or pool on this chain; "
            "spconv keeps one map per key (and cannot replace it): give each its own indice_key")
