"""bfloat16 gather -> GEMM -> scatter on AMX tiles: bf16 features and weights, float32 sums.

The schedule of `sparse_conv_bf16` (output-stationary blocks of 256 rows, offsets outermost, no
atomics, fixed summation order: bitwise reproducible) with the multiply done 16 pairs at a time on
tiles: the inputs of 16 active pairs are copied into a contiguous bf16 panel (tiles load strided
rows only), multiplied by the offset's VNNI weights (`amx.tile_product`, float32 panel out), and
the product's rows are added to their outputs' float32 accumulators (`amx.add_rows`). Rows of a
partial last panel are computed on stale inputs and ignored (tile rows are independent).

Same inputs and outputs as `sparse_conv_bf16.gather_gemm_scatter`; cout_g must be a multiple of 16
(`amx.supports`), any cin_g. The factory refuses to build a kernel unless `amx.available()` (which
requests the OS's tile state: without it a tile instruction kills the process).
"""
from __future__ import annotations

import functools

import numba as nb
import numpy as np
from numba import prange

from . import numba_cache  # noqa: F401  (process-safe on-disk kernel cache)
from .aligned import empty64, zeros64
from .amx import (
    DEPTH,
    TILE_ROWS,
    add_rows,
    available,
    gather_rows,
    interleave_rows,
    supports,
    tile_product,
    tile_product_add,
    transpose_rows,
    why_not,
)
from .sparse_conv import ROWS_PER_BLOCK
from .sparse_conv_bf16 import store_row

# No fastmath: the float32 adds of the panels into the accumulators keep their order.
_OPTS = {"parallel": True, "nogil": True, "boundscheck": False, "cache": True}


@functools.cache
def gather_gemm_scatter(cin_g: int, cout_g: int):
    """Kernel(feats int16 [N_in, G*cin_g], w_vnni int16 [K, G, ceil(cin_g/2), cout_g, 2], starts, ins, outs
    (the map's pairs per block and offset, `sparse_conv.block_pairs`), out float32 or int16 [N_out, G*cout_g]).
    Specialised on cin_g and cout_g (the tile shapes); G comes from the arrays.

    Loop order: blocks of 256 output rows (parallel) > chunks in order of offset k > group > the
    block's pairs with an input at k, 16 at a time. Each chunk is gathered one step ahead and added
    one step behind its tile product (two panels each), so tiles never wait for the vector stores
    just made and vector loads never wait for the tile stores (neither is forwarded).
    Accumulation: each block sums into a zeroed float32 buffer, chunk after chunk in order (so each
    output row gets its offsets' products in offset order, each summed on the tiles in a fixed
    order), then rounds once to the output dtype.
    """
    if not supports(cout_g):
        raise ValueError(f"the AMX kernel needs cout_g a multiple of 16, got {cout_g}")
    if not available():  # also asks the OS for the tile state: a tile instruction without it is SIGILL
        raise RuntimeError(f"AMX tiles are not usable here: {why_not()}")
    block = ROWS_PER_BLOCK
    depth_pad = cin_g + cin_g % 2
    w_group = depth_pad * cout_g  # VNNI elements of one (offset, group)
    a_panel = TILE_ROWS * depth_pad
    c_panel = TILE_ROWS * cout_g

    @nb.njit(**_OPTS)
    def kernel(feats, w_vnni, starts, ins, outs, out):
        n_out, cout = out.shape
        kvol, groups = w_vnni.shape[0], w_vnni.shape[1]
        cin = feats.shape[1]
        x = feats.reshape(-1)
        w = w_vnni.reshape(-1)
        n_blocks = (n_out + block - 1) // block
        max_chunks = kvol * groups * (block // TILE_ROWS)
        for blk in prange(n_blocks):
            o0 = blk * block
            o1 = min(n_out, o0 + block)
            acc = zeros64((o1 - o0) * cout, np.float32)
            # chunks of up to 16 pairs of one (offset, group), in offset order: the block's pairs of offset k
            # are ins / outs[starts[blk * kvol + k]:starts[blk * kvol + k + 1]] (sparse_conv.block_pairs)
            chunk_k = np.empty(max_chunks, np.int64)
            chunk_g = np.empty(max_chunks, np.int64)
            chunk_p = np.empty(max_chunks, np.int64)  # its first pair
            chunk_m = np.empty(max_chunks, np.int64)  # its pairs
            n_chunks = 0
            for k in range(kvol):
                s0, s1 = starts[blk * kvol + k], starts[blk * kvol + k + 1]
                for g in range(groups):
                    for p0 in range(s0, s1, TILE_ROWS):
                        chunk_k[n_chunks] = k
                        chunk_g[n_chunks] = g
                        chunk_p[n_chunks] = p0
                        chunk_m[n_chunks] = min(TILE_ROWS, s1 - p0)
                        n_chunks += 1
            a = zeros64(2 * a_panel, np.int16)  # two panels; the pad column of odd depths stays zero
            c = empty64(2 * c_panel, np.float32)
            for q in range(-1, n_chunks + 1):
                if 0 <= q < n_chunks:  # this chunk's product (gathered in the previous step)
                    buf = q & 1
                    w_off = (chunk_k[q] * groups + chunk_g[q]) * w_group
                    tile_product(TILE_ROWS, cin_g, cout_g, a, buf * a_panel, w, w_off, c, buf * c_panel)
                if q + 1 < n_chunks:  # gather the next chunk
                    nxt = q + 1
                    gather_rows(cin_g, a, (nxt & 1) * a_panel, x, ins, chunk_p[nxt], chunk_m[nxt], cin,
                                chunk_g[nxt] * cin_g)
                if q >= 1:  # add the previous chunk's product to its outputs
                    prev = q - 1
                    add_rows(cout_g, c, (prev & 1) * c_panel, acc, outs, chunk_p[prev], chunk_m[prev], cout,
                             chunk_g[prev] * cout_g)
            for o in range(o0, o1):
                store_row(acc, (o - o0) * cout, out, o, 0, cout)

    return kernel


def wgrad_supports(cin_g: int, cout_g: int) -> bool:
    """Widths the AMX weight gradient covers: cin_g in whole 32 x 32 transposes, cout_g in whole tiles."""
    return cin_g % DEPTH == 0 and supports(cout_g)


@functools.cache
def weight_gradient(cin_g: int, cout_g: int):
    """Kernel(feats int16 [N_in, G*cin_g], grad int16 [N_out, G*cout_g], starts, ins, outs (the map's pairs per
    block and offset, `sparse_conv.block_pairs`), partial float32 [T, K, G, cin_g, cout_g]): partial[t] += the
    dW[k] = sum_o feats[nbr[o, k]]^T grad[o] of task t's blocks, bf16 products, float32 sums (G from the
    arrays). Tasks are contiguous runs of blocks, their number T fixed by N_out (`sparse_conv.wgrad_tasks`);
    the caller zeroes partial and sums it in task order.

    Work items are a task's (block, offset k, group g) with pairs, in that order. An item puts its n pairs,
    32 at a time, into a transposed feature panel [cin_g, n_pad] (`transpose_rows`) and a VNNI gradient
    panel [n_pad / 2, cout_g, 2] (`interleave_rows`), n_pad = n rounded up to 32 with zeros in both;
    `tile_product_add` then reduces over the pairs on the tiles, starting from and storing to
    partial[t, k, g]. Each item's panels are built one item ahead, in the other of two buffers, so tile
    loads never wait for the vector stores just made (they are not forwarded). Accumulation: each
    partial[t, k, g] takes its blocks in order, each block's pairs on the tiles in a fixed order.
    """
    if not wgrad_supports(cin_g, cout_g):
        raise ValueError(f"the AMX weight gradient needs cin_g % 32 == 0 and cout_g % 16 == 0, got {cin_g}, {cout_g}")
    if not available():
        raise RuntimeError(f"AMX tiles are not usable here: {why_not()}")
    block = ROWS_PER_BLOCK
    size = cin_g * cout_g
    a_panel = cin_g * block  # [cin_g, n_pad] of one item
    b_panel = block * cout_g  # [n_pad / 2, cout_g, 2] of one item

    @nb.njit(**_OPTS)
    def kernel(feats, grad, starts, ins, outs, partial):
        n_tasks, kvol, groups = partial.shape[0], partial.shape[1], partial.shape[2]
        cin, cout = feats.shape[1], grad.shape[1]
        x = feats.reshape(-1)
        gr = grad.reshape(-1)
        acc = partial.reshape(-1)
        n_blocks = (len(starts) - 1) // kvol
        per_task = (n_blocks + n_tasks - 1) // n_tasks
        for t in prange(n_tasks):
            blk0, blk1 = t * per_task, min(n_blocks, (t + 1) * per_task)
            items = np.empty(max(0, blk1 - blk0) * kvol * groups, np.int64)  # (block * kvol + k) * groups + g
            n_items = 0
            for bk in range(blk0 * kvol, blk1 * kvol):
                if starts[bk + 1] > starts[bk]:
                    for g in range(groups):
                        items[n_items] = bk * groups + g
                        n_items += 1
            a = empty64(2 * a_panel, np.int16)
            b = empty64(2 * b_panel, np.int16)
            for q in range(-1, n_items):
                if q + 1 < n_items:  # build the next item's panels in the other buffer
                    bk, g = items[q + 1] // groups, items[q + 1] % groups
                    s0, n = starts[bk], starts[bk + 1] - starts[bk]
                    n_pad = (n + DEPTH - 1) // DEPTH * DEPTH
                    a0, b0 = ((q + 1) & 1) * a_panel, ((q + 1) & 1) * b_panel
                    g_col = (bk // kvol) * block * cout + g * cout_g  # outs count from the block's first row
                    for j0 in range(0, n, DEPTH):
                        m = min(DEPTH, n - j0)
                        transpose_rows(cin_g, a, a0 + j0, n_pad, x, ins, s0 + j0, m, cin, g * cin_g)
                        interleave_rows(cout_g, b, b0 + j0 * cout_g, gr, outs, s0 + j0, m, cout, g_col)
                if q >= 0:  # this item's product onto the task's partial[k, g]
                    bk, g = items[q] // groups, items[q] % groups
                    n_pad = (starts[bk + 1] - starts[bk] + DEPTH - 1) // DEPTH * DEPTH
                    a0, b0 = (q & 1) * a_panel, (q & 1) * b_panel
                    base = ((t * kvol + bk % kvol) * groups + g) * size
                    tile_product_add(cin_g, block, cout_g, a, a0, b, b0, acc, base, n_pad)

    return kernel
