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

from .amx import TILE_ROWS, add_rows, available, gather_rows, supports, tile_product, why_not
from .sparse_conv import ROWS_PER_BLOCK
from .sparse_conv_bf16 import store_row

# No fastmath: the float32 adds of the panels into the accumulators keep their order.
_OPTS = {"parallel": True, "nogil": True, "boundscheck": False, "cache": True}


@functools.cache
def gather_gemm_scatter(groups: int, cin_g: int, cout_g: int):
    """Kernel(feats int16 [N_in, G*cin_g], w_vnni int16 [K, G, ceil(cin_g/2), cout_g, 2], nbr [N_out, K],
    out float32 or int16 [N_out, G*cout_g]).

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
    cout = groups * cout_g
    block = ROWS_PER_BLOCK
    depth_pad = cin_g + cin_g % 2
    w_group = depth_pad * cout_g  # VNNI elements of one (offset, group)
    a_panel = TILE_ROWS * depth_pad
    c_panel = TILE_ROWS * cout_g

    @nb.njit(**_OPTS)
    def kernel(feats, w_vnni, nbr, out):
        n_out, kvol = nbr.shape
        cin = feats.shape[1]
        x = feats.reshape(-1)
        w = w_vnni.reshape(-1)
        n_blocks = (n_out + block - 1) // block
        max_chunks = kvol * groups * (block // TILE_ROWS)
        for blk in prange(n_blocks):
            o0 = blk * block
            o1 = min(n_out, o0 + block)
            acc = np.zeros((o1 - o0) * cout, np.float32)
            # the pairs of each offset k: ins / rows[k * block + p], p < count[k]; one pass over the
            # block's table rows, branch-free (every entry is written, the active ones kept)
            ins = np.empty(kvol * block, np.int32)
            rows = np.empty(kvol * block, np.int32)
            count = np.zeros(kvol, np.int64)
            for o in range(o0, o1):
                for k in range(kvol):
                    i = nbr[o, k]
                    p = count[k]
                    ins[k * block + p] = i
                    rows[k * block + p] = o - o0
                    count[k] = p + (i >= 0)
            chunk_k = np.empty(max_chunks, np.int64)
            chunk_g = np.empty(max_chunks, np.int64)
            chunk_p = np.empty(max_chunks, np.int64)  # first pair, k * block + p0
            n_chunks = 0
            for k in range(kvol):
                for g in range(groups):
                    for p0 in range(0, count[k], TILE_ROWS):
                        chunk_k[n_chunks] = k
                        chunk_g[n_chunks] = g
                        chunk_p[n_chunks] = k * block + p0
                        n_chunks += 1
            a = np.zeros(2 * a_panel, np.int16)  # two panels; the pad column of odd depths stays zero
            c = np.empty(2 * c_panel, np.float32)
            for q in range(-1, n_chunks + 1):
                if 0 <= q < n_chunks:  # this chunk's product (gathered in the previous step)
                    buf = q & 1
                    w_off = (chunk_k[q] * groups + chunk_g[q]) * w_group
                    tile_product(cin_g, cout_g, a, buf * a_panel, w, w_off, c, buf * c_panel)
                if q + 1 < n_chunks:  # gather the next chunk
                    nxt = q + 1
                    buf = nxt & 1
                    first, g = chunk_p[nxt], chunk_g[nxt]
                    m = min(TILE_ROWS, count[chunk_k[nxt]] - (first - chunk_k[nxt] * block))
                    gather_rows(cin_g, a, buf * a_panel, x, ins, first, m, cin, g * cin_g)
                if q >= 1:  # add the previous chunk's product to its outputs
                    prev = q - 1
                    first = chunk_p[prev]
                    m = min(TILE_ROWS, count[chunk_k[prev]] - (first - chunk_k[prev] * block))
                    add_rows(cout_g, c, (prev & 1) * c_panel, acc, rows, first, m, cout, chunk_g[prev] * cout_g)
            for o in range(o0, o1):
                store_row(acc, (o - o0) * cout, out, o, 0, cout)

    return kernel
