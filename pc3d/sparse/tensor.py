"""SparseTensor: active sites of a D-dimensional grid (D = 2, 3, 4) with a feature row each."""
from __future__ import annotations

from collections.abc import Sequence

import torch

from pc3d.errors import SparseTensorError
from pc3d.sparse.checks import check_coords, check_grid

UNIQUE_SITES = ("sites checked unique",)  # a `maps` entry: these sites have no duplicate


class MapCache(dict):
    """A tensor's kernel maps by geometry (shared by every tensor on the same sites). Weakly referable: a strided
    map points back to its input sites' cache (for the inverse conv that returns there) without a cycle."""

    __slots__ = ("__weakref__",)


class SparseTensor:
    """Features on the active sites of a batched D-dimensional grid (spconv's argument order).

    feats: [N, C] floating point. coords: int32 [N, 1 + D], batch index first, then the grid
    indices in the order of `spatial_shape` (spconv's z, y, x for 3D LiDAR grids). Coordinates are
    unique within a batch; a duplicate is an error when the first kernel map is built (or on
    `dense()`, or before the first spconv layer), never a silent merge. `stride` is the tensor's
    stride relative to the input grid.

    The engine's limits (pc3d.sparse.checks) are checked here, once: spatial_shape 1 to 4 ints in
    [1, 2**31 - 1], batch_size >= 1, batch_size x prod(spatial_shape) < 2**63, integer coords
    inside the grid (any integer dtype; checked before the cast to int32, so nothing wraps).
    `check=False` is for the engine's own tensors, whose sites are valid by construction.

    Kernel maps are cached on the tensor: `maps` is shared by every tensor with the same
    coordinates (a submanifold layer's output shares its input's), and `indice_dict` is shared
    along a whole forward chain so that inverse convs find the map of their paired strided conv by
    `indice_key`. Both are freed with the last tensor that holds them.
    """

    __slots__ = ("feats", "coords", "spatial_shape", "batch_size", "stride", "maps", "indice_dict",
                 "spconv_tensor")

    def __init__(self, feats: torch.Tensor, coords: torch.Tensor, spatial_shape: Sequence[int],
                 batch_size: int, *, stride: Sequence[int] | None = None, maps: dict | None = None,
                 indice_dict: dict | None = None, check: bool = True):
        if check:
            spatial_shape, batch_size = check_grid(spatial_shape, batch_size)
        self.spatial_shape = tuple(int(s) for s in spatial_shape)
        self.batch_size = int(batch_size)
        self.stride = tuple(int(s) for s in stride) if stride is not None else (1,) * len(self.spatial_shape)
        if check:
            feats, coords = _checked(feats, coords, self.spatial_shape, self.batch_size)
        self.feats = feats
        self.coords = coords
        self.maps = MapCache() if maps is None else maps
        self.indice_dict = {} if indice_dict is None else indice_dict
        self.spconv_tensor = None  # the spconv twin that carries spconv's own map cache

    # spconv compatibility: OpenPCDet code reads .features / .indices
    @property
    def features(self) -> torch.Tensor:
        return self.feats

    @property
    def indices(self) -> torch.Tensor:
        return self.coords

    @property
    def ndim(self) -> int:
        return len(self.spatial_shape)

    @property
    def device(self) -> torch.device:
        return self.feats.device

    def __len__(self) -> int:
        return self.coords.shape[0]

    def __repr__(self) -> str:
        return (f"SparseTensor(n={len(self)}, channels={self.feats.shape[1]}, "
                f"spatial_shape={self.spatial_shape}, batch_size={self.batch_size}, stride={self.stride})")

    def replace_feature(self, feats: torch.Tensor) -> SparseTensor:
        """Same sites (and map caches), new features [N, C']."""
        if feats.ndim != 2 or feats.shape[0] != len(self):
            raise SparseTensorError(f"replace_feature: expected [{len(self)}, C] features, got "
                                    f"{tuple(feats.shape)}")
        out = self.with_sites(feats, self.coords, self.spatial_shape, self.stride, self.maps)
        out.spconv_tensor = self.spconv_tensor
        return out

    def with_sites(self, feats, coords, spatial_shape, stride, maps=None) -> SparseTensor:
        """A tensor on other sites that keeps this chain's batch size and `indice_dict`."""
        return SparseTensor(feats, coords, spatial_shape, self.batch_size, stride=stride, maps=maps,
                            indice_dict=self.indice_dict, check=False)

    def to(self, *args, **kwargs) -> SparseTensor:
        feats = self.feats.to(*args, **kwargs)
        coords = self.coords.to(device=feats.device)
        out = SparseTensor(feats, coords, self.spatial_shape, self.batch_size, stride=self.stride,
                           indice_dict=self.indice_dict, check=False)
        if coords.device == self.coords.device:
            out.maps = self.maps
        return out

    def check_unique(self) -> None:
        """SparseTensorError naming a duplicated site, if any; checked once per set of sites (the
        answer is cached in `maps`, shared by every tensor on these sites). Kernel maps, dense()
        and the spconv backend call it; code that reads coords directly should too."""
        if self.maps.get(UNIQUE_SITES):
            return
        from pc3d.sparse.ops import check_unique

        check_unique(self)
        self.maps[UNIQUE_SITES] = True

    def dense(self, channels_first: bool = True) -> torch.Tensor:
        """Dense [B, C, *spatial_shape] (or channels last); empty sites are zero."""
        self.check_unique()
        shape = (self.batch_size, *self.spatial_shape, self.feats.shape[1])
        out = self.feats.new_zeros(shape)
        idx = self.coords.long()
        out[tuple(idx[:, a] for a in range(idx.shape[1]))] = self.feats
        if channels_first:
            out = out.movedim(-1, 1).contiguous()
        return out

    @classmethod
    def from_dense(cls, x: torch.Tensor, channels_first: bool = True) -> SparseTensor:
        """Sites where any channel of the dense [B, C, *spatial] (or [B, *spatial, C]) is non-zero."""
        if not channels_first:
            x = x.movedim(-1, 1)
        active = (x != 0).any(dim=1)
        coords = active.nonzero().to(torch.int32)
        feats = x.movedim(1, -1)[active]
        return cls(feats, coords, tuple(x.shape[2:]), x.shape[0], check=False)

    def global_pool(self, mode: str = "mean") -> torch.Tensor:
        """Per-sample pooling of the features: [batch_size, C] ('mean', 'max' or 'sum').

        An empty sample gives zeros.
        """
        batch = self.coords[:, 0].long()
        shape = (self.batch_size, self.feats.shape[1])
        index = batch[:, None].expand_as(self.feats)
        if mode == "sum":
            return self.feats.new_zeros(shape).scatter_add(0, index, self.feats)
        if mode in ("mean", "max"):
            reduce = "mean" if mode == "mean" else "amax"
            return self.feats.new_zeros(shape).scatter_reduce(0, index, self.feats, reduce,
                                                              include_self=False)
        raise SparseTensorError(f"global_pool: mode must be 'mean', 'max' or 'sum', not {mode!r}")

    def prune(self, keep: torch.Tensor) -> SparseTensor:
        """The sites where the boolean mask [N] is True (new coordinates: no map is shared)."""
        if keep.dtype != torch.bool or keep.shape != (len(self),):
            raise SparseTensorError(f"prune: expected a bool mask of shape ({len(self)},), got "
                                    f"{keep.dtype} {tuple(keep.shape)}")
        return self.with_sites(self.feats[keep], self.coords[keep], self.spatial_shape, self.stride)


def cat_features(tensors: Sequence[SparseTensor]) -> SparseTensor:
    """Concatenate the features of tensors on the same sites (the U-Net skip connection)."""
    first = tensors[0]
    for t in tensors[1:]:
        same = t.coords is first.coords or (
            t.coords.shape == first.coords.shape and torch.equal(t.coords, first.coords))
        if not same or t.spatial_shape != first.spatial_shape:
            raise SparseTensorError("cat_features: tensors must share their coordinates; got "
                                    f"{len(first)} and {len(t)} sites on {first.spatial_shape} and "
                                    f"{t.spatial_shape}")
    return first.replace_feature(torch.cat([t.feats for t in tensors], dim=1))


def site_rows(coords: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """int64 [N]: the row of `ref` [M, 1 + D] (unique sites) holding each site of coords [N, 1 + D], -1 where none;
    on coords' device."""
    if not len(coords) or not len(ref):
        return torch.full((len(coords),), -1, dtype=torch.int64, device=coords.device)
    coords, ref = coords.long(), ref.long().to(coords.device)
    extents = torch.maximum(coords.amax(0), ref.amax(0)) + 1

    def keys(c: torch.Tensor) -> torch.Tensor:
        key = c[:, 0].clone()
        for axis in range(1, c.shape[1]):
            key = key * extents[axis] + c[:, axis]
        return key

    ref_keys, order = torch.sort(keys(ref))
    wanted = keys(coords)
    pos = torch.searchsorted(ref_keys, wanted).clamp(max=len(ref_keys) - 1)
    return torch.where(ref_keys[pos] == wanted, order[pos], torch.full_like(pos, -1))


def add_at_sites(dst: SparseTensor, src: SparseTensor) -> SparseTensor:
    """dst's features plus src's at the sites they share, on dst's sites with src's spatial shape (the skip
    connection of a generative neck: a transposed conv's output holds every site of the encoder level it
    returns to). SparseTensorError when a site of src is not one of dst's."""
    if dst.feats.shape[1] != src.feats.shape[1] or dst.batch_size != src.batch_size:
        raise SparseTensorError(f"add_at_sites: {dst} and {src} differ in channels or batch size")
    if not len(src.coords):
        return dst.with_sites(dst.feats, dst.coords, src.spatial_shape, dst.stride)
    rows = site_rows(src.coords, dst.coords)
    missing = int((rows < 0).sum())
    if missing:
        raise SparseTensorError(f"add_at_sites: {missing} sites of {src} are not sites of {dst}")
    feats = dst.feats.index_add(0, rows, src.feats.to(dst.feats.dtype))
    return dst.with_sites(feats, dst.coords, src.spatial_shape, dst.stride)


def _checked(feats, coords, spatial_shape, batch_size):
    if not isinstance(feats, torch.Tensor) or not isinstance(coords, torch.Tensor):
        raise SparseTensorError("SparseTensor: feats and coords must be torch tensors")
    if coords.device != feats.device:
        raise SparseTensorError(f"SparseTensor: feats on {feats.device} but coords on {coords.device}")
    coords = check_coords(coords, spatial_shape, batch_size)
    if feats.ndim != 2 or feats.shape[0] != coords.shape[0]:
        raise SparseTensorError(f"SparseTensor: feats must be [N, C] with N = {coords.shape[0]} "
                                f"coordinates, got {tuple(feats.shape)}")
    if not feats.dtype.is_floating_point:
        raise SparseTensorError(f"SparseTensor: feats must be floating point, got {feats.dtype}")
    return feats, coords
