"""bfloat16 gather -> GEMM -> scatter on AMX tiles: bf16 features and weights, float32 sums.

The schedule of `sparse_conv_bf16` (output-stationary blocks of 256 rows, offsets outermost, no
atomics, fixed summation order: bitwise reproducible) with the multiply done 16 pairs at a time by
`amx.mac16`: the inputs of 16 active pairs are copied into a contiguous bf16 panel (tiles load
strided rows only), multiplied by the offset's VNNI weights on the tiles, and the product's rows
are added to their outputs' float32 accumulators (`amx.mac16`). Rows of a partial last panel
are computed on stale inputs and ignored (tile rows are independent).

Same inputs and outputs as `sparse_conv_bf16.gather_gemm_scatter`; cout_g must be a multiple of 16
(`amx.supports`), any cin_g. The factory refuses to build a kernel unless `amx.available()` (which
requests the OS's tile state: without it a tile instruction kills the process).
"""
from __future__ import annotations

import functools

import numba as nb
import numpy as np
from numba import prange

from .amx import TILE_ROWS, available, mac16, supports, why_not
from .sparse_conv import ROWS_PER_BLOCK
from .sparse_conv_bf16 import store_row

# No fastmath: the float32 adds of the panels into the accumulators keep their order.
_OPTS = {"parallel": True, "nogil": True, "boundscheck": False, "cache": True}


@functools.cache
def gather_gemm_scatter(groups: int, cin_g: int, cout_g: int):
    """Kernel(feats int16 [N_in, G*cin_g], w_vnni int16 [K, G, ceil(cin_g/2), cout_g, 2], nbr [N_out, K],
    out float32 or int16 [N_out, G*cout_g]).

    Loop order: blocks of 256 output rows (parallel) > offsets k > groups > the block's pairs with
    an input at k, 16 at a time (gather, one `mac16`: the whole cin_g reduction on tiles, then the add).
    Accumulation: each block sums into a zeroed float32 buffer, offset after offset in order (each
    offset's product summed on the tiles in a fixed order), then rounds once to the output dtype.
    """
    if not supports(cout_g):
        raise ValueError(f"the AMX kernel needs cout_g a multiple of 16, got {cout_g}")
    if not available():  # also asks the OS for the tile state: a tile instruction without it is SIGILL
        raise RuntimeError(f"AMX tiles are not usable here: {why_not()}")
    cout = groups * cout_g
    block = ROWS_PER_BLOCK
    depth_pad = cin_g + cin_g % 2
    w_group = depth_pad * cout_g  # VNNI elements of one (offset, group)

    @nb.njit(**_OPTS)
    def kernel(feats, w_vnni, nbr, out):
        n_out, kvol = nbr.shape
        w = w_vnni.reshape(-1)
        n_blocks = (n_out + block - 1) // block
        for blk in prange(n_blocks):
            o0 = blk * block
            o1 = min(n_out, o0 + block)
            acc = np.zeros((o1 - o0) * cout, np.float32)
            ins = np.empty(block, np.int64)
            outs = np.empty(block, np.int64)
            a = np.zeros(TILE_ROWS * depth_pad, np.int16)  # the pad column of odd depths stays zero
            c = np.empty(TILE_ROWS * cout_g, np.float32)
            for k in range(kvol):
                n = 0
                for o in range(o0, o1):
                    i = nbr[o, k]
                    if i >= 0:
                        ins[n] = i
                        outs[n] = (o - o0) * cout
                        n += 1
                for g in range(groups):
                    if g > 0:  # step the outputs' offsets to this group's channels
                        for p in range(n):
                            outs[p] += cout_g
                    w_off = (k * groups + g) * w_group
                    for p0 in range(0, n, TILE_ROWS):
                        m = min(TILE_ROWS, n - p0)
                        for r in range(m):
                            src = ins[p0 + r]
                            for d in range(cin_g):
                                a[r * depth_pad + d] = feats[src, g * cin_g + d]
                        mac16(cin_g, cout_g, a, w, w_off, c, acc, outs, p0, m)
            for o in range(o0, o1):
                store_row(acc, (o - o0) * cout, out, o, 0, cout)

    return kernel
