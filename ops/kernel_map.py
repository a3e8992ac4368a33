"""Kernel maps of sparse convolution as dense neighbour tables.

A kernel map of a convolution with K kernel offsets is a table ``nbr`` int32 [N_out, K]:
``nbr[o, k]`` is the input row that offset k of output o reads, or -1. Every conv map has this
form because an output site and an offset fix the input site (and, for the transposed table, an
input site and an offset fix the output site), so no pair list is ever needed.

Coordinates are linearised into int64 keys over a padded grid (every axis widened by the
largest shift a query can make), so a kernel offset is a constant added to every key and the
order of the keys is preserved: submanifold maps are then one linear merge per offset over the
sorted keys, with no hashing and no collisions.
"""
from __future__ import annotations

import numba as nb
import numpy as np
from numba import prange

from . import numba_cache  # noqa: F401  (process-safe on-disk kernel cache)

_PARALLEL = {"parallel": True, "cache": True, "nogil": True, "boundscheck": False}
_SERIAL = {"cache": True, "nogil": True, "boundscheck": False}


@nb.njit(**_PARALLEL)
def linear_keys(coords, extents, shift):
    """int64 keys of int32 coords [N, 1 + D] (batch first) on a grid of `extents` [1 + D].

    Axis a contributes ``coords[:, a] + shift[a]``; the keys preserve the lexicographic order.
    """
    n, ndim = coords.shape
    keys = np.empty(n, np.int64)
    for i in prange(n):
        key = np.int64(0)
        for a in range(ndim):
            key = key * extents[a] + (coords[i, a] + shift[a])
        keys[i] = key
    return keys


@nb.njit(**_SERIAL)
def is_sorted_strictly(keys):
    for i in range(1, keys.shape[0]):
        if keys[i] <= keys[i - 1]:
            return False
    return True


@nb.njit(**_SERIAL)
def first_duplicate(sorted_keys):
    """Index (in sorted order) of the first repeated key, or -1."""
    for i in range(1, sorted_keys.shape[0]):
        if sorted_keys[i] == sorted_keys[i - 1]:
            return i
    return -1


_TABLE_CHUNK = 4096  # output rows per task of submanifold_table (any size gives the same table)


@nb.njit(**_PARALLEL)
def submanifold_table(sorted_keys, order, deltas, symmetric, run):
    """Neighbour table [N, K] of a submanifold conv (outputs = inputs).

    sorted_keys: int64 [N] ascending; order: int64 [N] row of each sorted key; deltas: int64 [K]
    key shift of each offset, ascending. With `symmetric` (odd kernel: deltas[K-1-k] == -deltas[k]) only
    half the offsets are merged and the mirror half is filled from them.

    The offsets are merged in runs of `run` consecutive ones (the kernel's last axis: their shifts lie
    within a few keys of each other) with one merge pointer per run: per output key the pointer moves to
    the run's first target and the run's targets are then found by a short scan from there, so each run
    is one pass over the keys instead of one per offset. Rows are split into fixed chunks across threads;
    every table entry is written by one (row, offset) only: an entry and its mirror belong to two
    different (row, offset) pairs.
    """
    n = sorted_keys.shape[0]
    kvol = deltas.shape[0]
    nbr = np.full((n, kvol), -1, np.int32)
    todo = kvol // 2 if symmetric else kvol
    n_chunks = (n + _TABLE_CHUNK - 1) // _TABLE_CHUNK
    for ch in prange(n_chunks):
        lo = ch * _TABLE_CHUNK
        hi = min(n, lo + _TABLE_CHUNK)
        for r0 in range(0, todo, run):
            r1 = min(todo, r0 + run)
            first = np.searchsorted(sorted_keys, sorted_keys[lo] + deltas[r0])
            for j in range(lo, hi):
                key = sorted_keys[j]
                while first < n and sorted_keys[first] < key + deltas[r0]:
                    first += 1
                i = first
                for k in range(r0, r1):
                    target = key + deltas[k]
                    while i < n and sorted_keys[i] < target:
                        i += 1
                    if i < n and sorted_keys[i] == target:
                        out_row = order[j]
                        in_row = order[i]
                        nbr[out_row, k] = in_row
                        if symmetric:
                            nbr[in_row, kvol - 1 - k] = out_row
    if symmetric:
        centre = kvol // 2
        for j in prange(n):
            nbr[j, centre] = j
    return nbr


@nb.njit(**_SERIAL)
def _axis_candidates(p, size_out, ksize, stride, pad, dil, transposed, out_q, out_k):
    """Per-axis (output coordinate, kernel index) pairs that input coordinate p reaches."""
    m = 0
    for k in range(ksize):
        if transposed:
            q = p * stride - pad + k * dil
        else:
            t = p + pad - k * dil
            if t < 0 or t % stride != 0:
                continue
            q = t // stride
        if 0 <= q < size_out:
            out_q[m] = q
            out_k[m] = k
            m += 1
    return m


@nb.njit(**_SERIAL)
def _axis_tables(values, n_values, out_shape, ksize, stride, pad, dil, transposed):
    """Per-axis candidates of every input coordinate, computed once per map (the integer divisions
    would otherwise run for every point). values: int64 [D, S], the coordinates of each axis that
    the tables cover (the first n_values[a] of row a); coordinate values[a, p] has table index p.
    Returns counts int64 [D, S], output coordinates and kernel indices int64 [D, S, K] with K the
    largest kernel size."""
    ndim, size = values.shape
    kmax = 1
    for a in range(ndim):
        kmax = max(kmax, ksize[a])
    counts = np.zeros((ndim, size), np.int64)
    qs = np.zeros((ndim, size, kmax), np.int64)
    ks = np.zeros((ndim, size, kmax), np.int64)
    for a in range(ndim):
        for p in range(n_values[a]):
            counts[a, p] = _axis_candidates(values[a, p], out_shape[a], ksize[a], stride[a], pad[a], dil[a],
                                            transposed, qs[a, p], ks[a, p])
    return counts, qs, ks


@nb.njit(**_PARALLEL)
def _pair_counts(coords, counts, n_chunks):
    """Pairs each input row makes (the product of its per-axis candidate counts)."""
    n, ndim1 = coords.shape
    out = np.empty(n, np.int64)
    for ch in prange(n_chunks):
        lo, hi = _chunk(n, n_chunks, ch)
        for i in range(lo, hi):
            total = np.int64(1)
            for a in range(ndim1 - 1):
                total *= counts[a, coords[i, a + 1]]
            out[i] = total
    return out


@nb.njit(**_PARALLEL)
def _fill_pairs(coords, counts, qs, ks, kstrides, out_extents, row_start, n_chunks, pair_keys, pair_in, pair_k):
    """Write each input row's (output key, input row, kernel index) pairs from row_start[i] on."""
    n, ndim1 = coords.shape
    ndim = ndim1 - 1
    for ch in prange(n_chunks):
        lo, hi = _chunk(n, n_chunks, ch)
        idx = np.zeros(ndim, np.int64)
        for i in range(lo, hi):
            total = row_start[i + 1] - row_start[i]
            pos = row_start[i]
            idx[:] = 0
            for _ in range(total):
                key = np.int64(coords[i, 0])
                kk = np.int64(0)
                for a in range(ndim):
                    p = coords[i, a + 1]
                    key = key * out_extents[a + 1] + qs[a, p, idx[a]]
                    kk += ks[a, p, idx[a]] * kstrides[a]
                pair_keys[pos] = key
                pair_in[pos] = i
                pair_k[pos] = kk
                pos += 1
                a = ndim - 1
                while a >= 0:
                    idx[a] += 1
                    if idx[a] < counts[a, coords[i, a + 1]]:
                        break
                    idx[a] = 0
                    a -= 1


@nb.njit(**_SERIAL)
def _chunk(n, n_chunks, c):
    size = (n + n_chunks - 1) // n_chunks
    return min(n, c * size), min(n, (c + 1) * size)


def conv_pairs(coords, in_shape, out_shape, ksize, stride, pad, dil, transposed, n_chunks=8):
    """All (output key, input row, kernel index) pairs of a strided or transposed conv.

    coords: int32 [N, 1 + D] inside in_shape. Returns int64 arrays in input-row order; output keys
    linearise (batch, output coordinate) over the output grid.
    """
    ndim = len(out_shape)
    in_shape, ksize, stride, pad, dil, out_shape = (np.asarray(v, np.int64)
                                                    for v in (in_shape, ksize, stride, pad, dil, out_shape))
    kstrides = np.ones(ndim, np.int64)
    for a in range(ndim - 2, -1, -1):
        kstrides[a] = kstrides[a + 1] * ksize[a + 1]
    out_extents = np.concatenate([[0], out_shape]).astype(np.int64)
    index, values, n_values = _table_index(coords, in_shape)
    counts, qs, ks = _axis_tables(values, n_values, out_shape, ksize, stride, pad, dil, transposed)
    row_start = np.zeros(len(coords) + 1, np.int64)
    np.cumsum(_pair_counts(index, counts, n_chunks), out=row_start[1:])
    total = int(row_start[-1])
    pair_keys = np.empty(total, np.int64)
    pair_in = np.empty(total, np.int64)
    pair_k = np.empty(total, np.int64)
    _fill_pairs(index, counts, qs, ks, kstrides, out_extents, row_start, n_chunks, pair_keys, pair_in, pair_k)
    return pair_keys, pair_in, pair_k


def _table_index(coords, in_shape):
    """(coords indexing the per-axis tables, the coordinate of each table entry [D, S], entries per
    axis [D]). The tables cover every coordinate of an axis, so the coords index them directly,
    unless an axis is much longer than there are points (a huge grid): then they cover only the
    coordinates present and the coords are replaced by their ranks, so memory stays O(N)."""
    ndim = len(in_shape)
    size = int(in_shape.max())
    if size <= max(1 << 16, 2 * len(coords)):
        return coords, np.broadcast_to(np.arange(size, dtype=np.int64), (ndim, size)).copy(), in_shape
    index = coords.copy()
    present = []
    for a in range(ndim):
        vals, index[:, a + 1] = np.unique(coords[:, a + 1], return_inverse=True)
        present.append(vals)
    n_values = np.array([len(v) for v in present], np.int64)
    values = np.zeros((ndim, max(1, int(n_values.max()))), np.int64)
    for a, vals in enumerate(present):
        values[a, :len(vals)] = vals
    return index, values, n_values


_PAIR_CHUNK = 16384  # sorted pairs per task of table_from_sorted_pairs (about; a chunk ends where an output does)


@nb.njit(**_PARALLEL)
def table_from_sorted_pairs(sorted_keys, order, pair_in, pair_k, kvol):
    """Unique output keys, the [N_out, K] table and the input row of a duplicate site (or -1).

    sorted_keys: the pairs' output keys ascending; order: the pair behind each. A duplicate input
    site shows as two pairs with the same output and offset; the one reported is the first in sorted
    order. The pairs are cut into chunks that end where an output's pairs end (so every output row is
    written by one task), counted, then filled: the same table whatever the thread count.
    """
    total = sorted_keys.shape[0]
    n_chunks = max(1, (total + _PAIR_CHUNK - 1) // _PAIR_CHUNK)
    bounds = np.empty(n_chunks + 1, np.int64)
    for c in range(n_chunks + 1):
        p = min(total, c * _PAIR_CHUNK)
        while 0 < p < total and sorted_keys[p] == sorted_keys[p - 1]:
            p += 1
        bounds[c] = p
    firsts = np.zeros(n_chunks + 1, np.int64)  # output rows before each chunk
    for c in prange(n_chunks):
        count = 0
        for p in range(bounds[c], bounds[c + 1]):
            count += p == 0 or sorted_keys[p] != sorted_keys[p - 1]
        firsts[c + 1] = count
    firsts = np.cumsum(firsts)
    n_out = firsts[n_chunks]
    out_keys = np.empty(n_out, np.int64)
    nbr = np.empty((n_out, kvol), np.int32)
    dups = np.full(n_chunks, -1, np.int64)
    for c in prange(n_chunks):
        nbr[firsts[c]:firsts[c + 1]] = -1
        o = firsts[c] - 1
        dup = -1
        for p in range(bounds[c], bounds[c + 1]):
            j = order[p]
            if p == 0 or sorted_keys[p] != sorted_keys[p - 1]:
                o += 1
                out_keys[o] = sorted_keys[p]
            k = pair_k[j]
            if nbr[o, k] >= 0 and dup < 0:
                dup = pair_in[j]
            nbr[o, k] = pair_in[j]
        dups[c] = dup
    for c in range(n_chunks):
        if dups[c] >= 0:
            return out_keys, nbr, dups[c]
    return out_keys, nbr, -1


@nb.njit(**_PARALLEL)
def keys_to_coords(keys, extents):
    """Inverse of linear_keys with zero shift: int32 coords [N, len(extents)]."""
    n = keys.shape[0]
    ndim = extents.shape[0]
    coords = np.empty((n, ndim), np.int32)
    for i in prange(n):
        key = keys[i]
        for a in range(ndim - 1, 0, -1):
            coords[i, a] = key % extents[a]
            key //= extents[a]
        coords[i, 0] = key
    return coords


@nb.njit(**_PARALLEL)
def transpose_table(nbr, n_in):
    """Table [N_in, K] of the reverse direction: ``t[nbr[o, k], k] = o``.

    A conv map reads input i at offset k from one output at most (the output site is the input site
    minus the offset), so each entry of t is written once and the rows can be split across threads:
    one pass over nbr in memory order (an offset-parallel loop read it K times, 5.7x slower at 0.1 m)."""
    n_out, kvol = nbr.shape
    t = np.full((n_in, kvol), -1, np.int32)
    for o in prange(n_out):
        for k in range(kvol):
            i = nbr[o, k]
            if i >= 0:
                t[i, k] = o
    return t


@nb.njit(**_PARALLEL)
def flip_offsets(nbr):
    """The table with its offset axis reversed (the transpose of a symmetric submanifold map)."""
    n, kvol = nbr.shape
    t = np.empty_like(nbr)
    for o in prange(n):
        for k in range(kvol):
            t[o, k] = nbr[o, kvol - 1 - k]
    return t


_RADIX_BITS = 11
_RADIX = 1 << _RADIX_BITS


@nb.njit(**_SERIAL)
def radix_argsort(keys, max_key):
    """Stable LSD radix sort of non-negative int64 keys: (sorted keys, int64 order)."""
    n = keys.shape[0]
    cur_k = keys.copy()
    cur_i = np.arange(n)
    nxt_k = np.empty_like(cur_k)
    nxt_i = np.empty_like(cur_i)
    shift = 0
    # max_key < 2**63 (the callers check the key space); shift < 63 keeps the loop finite anyway
    while shift == 0 or (shift < 63 and (max_key >> shift) > 0):
        start = np.zeros(_RADIX + 1, np.int64)
        for i in range(n):
            start[((cur_k[i] >> shift) & (_RADIX - 1)) + 1] += 1
        for d in range(_RADIX):
            start[d + 1] += start[d]
        for i in range(n):
            d = (cur_k[i] >> shift) & (_RADIX - 1)
            pos = start[d]
            start[d] = pos + 1
            nxt_k[pos] = cur_k[i]
            nxt_i[pos] = cur_i[i]
        cur_k, nxt_k = nxt_k, cur_k
        cur_i, nxt_i = nxt_i, cur_i
        shift += _RADIX_BITS
    return cur_k, cur_i
