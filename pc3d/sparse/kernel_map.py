"""Kernel maps: which input site every kernel offset of every output site reads.

A map is built once per (coordinates, kernel, stride, padding, dilation) on the CPU with the
numba kernels of pc3d_ops.kernel_map, cached on the input tensor, and reused by every layer with
the same geometry (a stack of SubM layers builds its map once).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numba
import numpy as np
import torch
from pc3d_ops import kernel_map as km
from pc3d_ops import sparse_conv as sc
from pc3d_ops import voxelize as vx
from pc3d_ops.threads import use_threads

from pc3d.errors import SparseTensorError
from pc3d.sparse.checks import INT32_MAX, check_key_space, int_tuple, key_space


@dataclass(eq=False)
class KernelMap:
    """Neighbour table of one convolution geometry.

    nbr: int32 [N_out, K]; nbr[o, k] is the input row read by offset k of output o, or -1.
    Offsets are numbered row-major over the kernel (spconv's weight layout [Cout, *kernel, Cin]).
    A symmetric map (submanifold, odd kernel) is its own transpose with the offsets reversed:
    nbr_T[i, k] = nbr[i, K - 1 - k], so its transpose is never built (see `ops.py` backward).
    """

    nbr: np.ndarray
    n_in: int
    kernel_size: tuple[int, ...]
    out_coords: torch.Tensor
    out_spatial_shape: tuple[int, ...]
    in_coords: torch.Tensor
    in_spatial_shape: tuple[int, ...]
    in_stride: tuple[int, ...]
    out_stride: tuple[int, ...]
    symmetric: bool = False
    in_maps: Callable[[], dict | None] | None = field(default=None, repr=False)  # weakref: the input sites' maps
    _transposed: np.ndarray | None = field(default=None, repr=False)
    _block_pairs: dict = field(default_factory=dict, repr=False)
    _on_device: dict = field(default_factory=dict, repr=False)

    @property
    def kernel_volume(self) -> int:
        return self.nbr.shape[1]

    @property
    def n_pairs(self) -> int:
        return int((self.nbr >= 0).sum())

    def table(self, transposed: bool = False) -> np.ndarray:
        """The table [N_out, K], or its transpose [N_in, K] (input -> output), built once."""
        if not transposed:
            return self.nbr
        if self._transposed is None:
            self._transposed = km.transpose_table(self.nbr, self.n_in)
        return self._transposed

    def pairs(self, transposed: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The pairs of `table(transposed)` grouped per block of output rows and offset (what the float kernels
        read, see `pc3d_ops.sparse_conv.block_pairs`), built once; the transposed ones straight from the
        table (`transposed_block_pairs`), so a backward pass that only needs pairs never builds the transpose."""
        if transposed not in self._block_pairs:
            self._block_pairs[transposed] = (sc.transposed_block_pairs(self.nbr, self.n_in, sc.ROWS_PER_BLOCK)
                                             if transposed else sc.block_pairs(self.nbr, sc.ROWS_PER_BLOCK))
        return self._block_pairs[transposed]

    def block_pairs(self, table: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`pairs` when `table` is one of this map's own (`table()`, `table(True)`), else built afresh (a table
        without a spiking layer's silent rows)."""
        if table is self.nbr:
            return self.pairs(False)
        if table is not None and table is self._transposed:
            return self.pairs(True)
        return sc.block_pairs(table, sc.ROWS_PER_BLOCK)

    def table_on(self, device: torch.device, transposed: bool = False) -> torch.Tensor:
        """The table as a long tensor on a (non-CPU) device, cached."""
        key = (str(device), transposed)
        if key not in self._on_device:
            self._on_device[key] = torch.from_numpy(self.table(transposed)).to(device, torch.long)
        return self._on_device[key]


def sync_threads() -> None:
    """Run the numba kernels on as many threads as torch uses, and leave torch's count as it was.

    numba's OpenMP pool shares libgomp with torch; launching it (once per process) resets the
    OpenMP thread count, which is what torch.get_num_threads() reports.
    """
    n = torch.get_num_threads()
    use_threads(n)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def _tuple(value, ndim: int, name: str) -> tuple[int, ...]:
    """A conv / pool parameter as ndim ints; ConfigError naming the parameter and its allowed range
    (kernel_size, stride, dilation >= 1; padding, output_padding >= 0; all <= 2**31 - 1)."""
    return int_tuple(value, ndim, name)


def conv_output_shape(in_shape, kernel, stride, padding, dilation, transposed=False, output_padding=None):
    """spconv's rule: (in + 2p - d(k - 1) - 1) // s + 1, or its transpose.

    SparseTensorError when the output is empty or an axis passes the int32 coordinate range."""
    out = []
    for a, size in enumerate(in_shape):
        if transposed:
            extra = output_padding[a] if output_padding else 0
            out.append((size - 1) * stride[a] - 2 * padding[a] + dilation[a] * (kernel[a] - 1) + extra + 1)
        else:
            out.append((size + 2 * padding[a] - dilation[a] * (kernel[a] - 1) - 1) // stride[a] + 1)
    geometry = (f"spatial shape {tuple(in_shape)} with kernel {kernel}, stride {stride}, padding {padding}, "
                f"dilation {dilation}")
    if min(out) <= 0:
        raise SparseTensorError(f"conv on {geometry} has empty output {out}")
    if max(out) > INT32_MAX:
        raise SparseTensorError(f"{'transposed ' if transposed else ''}conv on {geometry} gives output shape "
                                f"{out}, beyond the int32 coordinate range (at most {INT32_MAX} per axis)")
    return tuple(out)


def _sorted_keys(coords: np.ndarray, extents: np.ndarray, shift: np.ndarray):
    keys = km.linear_keys(coords, extents, shift)
    if km.is_sorted_strictly(keys):
        return keys, np.arange(len(keys), dtype=np.int64)
    sorted_keys, order = km.radix_argsort(keys, key_space(extents))
    dup = km.first_duplicate(sorted_keys)
    if dup >= 0:
        row = int(order[dup])
        raise SparseTensorError(f"duplicate coordinate {coords[row].tolist()} (rows {int(order[dup - 1])} "
                                f"and {row}); merge duplicates before building a SparseTensor")
    return sorted_keys, order


def submanifold_map(x, kernel_size, dilation) -> KernelMap:
    """Map of a submanifold conv: outputs are the input sites; offset k reads o + (k - k//2) * d."""
    ndim = x.ndim
    sync_threads()
    coords = x.coords.cpu().numpy()
    radius = [(k // 2) * d for k, d in zip(kernel_size, dilation, strict=False)]
    reach = [(k - 1) * d for k, d in zip(kernel_size, dilation, strict=False)]
    extents = np.array([x.batch_size] + [s + r + 1 for s, r in zip(x.spatial_shape, reach, strict=False)], np.int64)
    shift = np.array([0] + radius, np.int64)
    check_key_space(extents, f"submanifold map of kernel {tuple(kernel_size)}, dilation {tuple(dilation)} "
                             "(the grid padded by the kernel's reach)", "a coarser grid, a smaller batch or kernel")
    keys, order = _sorted_keys(coords, extents, shift)
    offsets = np.stack(np.meshgrid(*[np.arange(k) for k in kernel_size], indexing="ij"), -1).reshape(-1, ndim)
    rel = (offsets - np.array([k // 2 for k in kernel_size])) * np.array(dilation)
    axis_weight = np.ones(ndim, np.int64)
    for a in range(ndim - 2, -1, -1):
        axis_weight[a] = axis_weight[a + 1] * extents[a + 2]
    deltas = (rel * axis_weight).sum(1).astype(np.int64)
    symmetric = all(k % 2 == 1 for k in kernel_size)
    nbr = km.submanifold_table(keys, order, deltas, symmetric, int(kernel_size[-1]))  # runs along the last axis
    return KernelMap(nbr, len(coords), tuple(kernel_size), x.coords, x.spatial_shape, x.coords,
                     x.spatial_shape, x.stride, x.stride, symmetric=symmetric)


def floored_sites(out_coords: torch.Tensor, in_coords: torch.Tensor, stride) -> torch.Tensor:
    """bool [N_out]: which output sites (batch, i...) are an input site floored to the stride."""
    stride = torch.as_tensor(stride, dtype=torch.int64, device=in_coords.device)
    floored = torch.cat([in_coords[:, :1].long(), in_coords[:, 1:].long() // stride], 1)
    hi = torch.maximum(out_coords.long().amax(0), floored.amax(0)) + 1 if len(floored) and len(out_coords) else None
    if hi is None:
        return torch.zeros(len(out_coords), dtype=torch.bool, device=out_coords.device)

    def key(c: torch.Tensor) -> torch.Tensor:
        k = c[:, 0].long()
        for d in range(1, c.shape[1]):
            k = k * hi[d] + c[:, d].long()
        return k

    return torch.isin(key(out_coords), key(floored))


def strided_map(x, kernel_size, stride, padding, dilation, transposed=False, output_padding=None,
                generative: bool = True) -> KernelMap:
    """Map of a strided (or generative transposed) conv; output sites are sorted (batch, z, y, x).

    generative (strided convs): every output site some input reaches (spconv's SparseConv), or with False only
    the input sites floored to the stride, floor(coords / stride) (MinkowskiEngine's strided conv); each kept
    site reads its whole kernel footprint either way, so its value is the generative conv's at that site. The
    generative table is built and then cut (about twice the pairs, once per map)."""
    out_shape = conv_output_shape(x.spatial_shape, kernel_size, stride, padding, dilation, transposed,
                                  output_padding)
    extents = np.array([x.batch_size, *out_shape], np.int64)
    max_key = check_key_space(extents, f"{'transposed' if transposed else 'strided'} conv output grid")
    sync_threads()
    coords = x.coords.cpu().numpy()
    chunks = 4 * numba.get_num_threads()
    pair_keys, pair_in, pair_k = km.conv_pairs(coords, x.spatial_shape, out_shape, kernel_size, stride, padding,
                                               dilation, transposed, chunks)
    kvol = int(np.prod(kernel_size))
    if vx.packed_fits(max_key, len(pair_keys)):  # one parallel stable sort of key|index words
        packed, ibits, _ = vx.sort_by_cell(pair_keys, max_key, numba.get_num_threads())
        sorted_keys, order = packed >> ibits, packed & ((1 << ibits) - 1)
    else:
        sorted_keys, order = km.radix_argsort(pair_keys, max_key)
    out_keys, nbr, dup = km.table_from_sorted_pairs(sorted_keys, order, pair_in, pair_k, kvol)
    if dup < 0:
        dup = _unreached_duplicate(coords, pair_in, np.array([x.batch_size, *x.spatial_shape], np.int64))
    if dup >= 0:
        raise SparseTensorError(f"duplicate coordinate {coords[dup].tolist()} (row {dup}); merge "
                                "duplicates before building a SparseTensor")
    out_coords = torch.from_numpy(km.keys_to_coords(out_keys, extents)).to(x.coords.device)
    if not generative:
        kept = floored_sites(out_coords, x.coords, stride)
        nbr, out_coords = np.ascontiguousarray(nbr[kept.cpu().numpy()]), out_coords[kept]  # coords may be on CUDA
    if transposed:
        out_stride = tuple(max(1, s // k) for s, k in zip(x.stride, stride, strict=False))
    else:
        out_stride = tuple(s * k for s, k in zip(x.stride, stride, strict=False))
    return KernelMap(nbr, len(coords), tuple(kernel_size), out_coords, out_shape, x.coords,
                     x.spatial_shape, x.stride, out_stride)


def _unreached_duplicate(coords: np.ndarray, pair_in: np.ndarray, extents: np.ndarray) -> int:
    """Row of a duplicated site among the inputs that reach no output (no pair shows it), or -1."""
    unreached = np.ones(len(coords), bool)
    unreached[pair_in] = False
    rows = np.flatnonzero(unreached)
    if len(rows) < 2:
        return -1
    keys = km.linear_keys(coords[rows], extents, np.zeros(len(extents), np.int64))
    if km.is_sorted_strictly(keys):
        return -1
    sorted_keys, order = km.radix_argsort(keys, key_space(extents))
    dup = km.first_duplicate(sorted_keys)
    return -1 if dup < 0 else int(rows[order[dup]])
