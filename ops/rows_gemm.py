"""GEMMs over feature rows [N, C] float32: a 1x1 (pointwise) conv, forward and both gradients.

    forward          out[n, :] = x[n, :] @ w           x [N, depth], w [depth, cols] -> out [N, cols]
    weight gradient  dW = a^T b                         a [N, rows_a], b [N, cols]     -> [rows_a, cols]

They are the engine's register-blocked micro-kernels (`microkernel.mac_rows` / `mac_pairs`) on rows that
need no gather. Why not torch's `mm`: an SDSC U-Net's pointwise convs are tall and skinny
([80k, 64] x [64, 96]), and on them torch's CPU GEMM ran at 56-62 GFLOP/s inside a training step (half
this machine's square float32 GEMM), the largest share (40 %) of the step; these run forward + both gradients
1.0-1.6x faster on the same shapes (`tools/bench.py sparse`, pointwise rows). `cols` must be a multiple
of the vector width (16 float32) and at most MAX_COLS (the accumulators of one row and the weight row
then fit the 32 vector registers).

Deterministic: each output row of the forward sums over `depth` in order; the weight gradient splits the
rows into a fixed number of tasks (a function of N only, never of the thread count), each summing its rows
in order into its own partial, and the caller adds the partials in task order.
"""
from __future__ import annotations

import functools

import numba as nb
import numpy as np
from numba import prange

from . import numba_cache  # noqa: F401  (process-safe on-disk kernel cache)
from .microkernel import PREFETCH_CALLS, mac_pairs, mac_rows
from .sparse_conv import ROWS_PER_BLOCK, wgrad_rows, wgrad_tasks

_OPTS = {"parallel": True, "nogil": True, "boundscheck": False, "cache": True}  # no fastmath: see `fma`
LANES = 16  # float32 per 64-byte vector
MAX_COLS = 160  # at 224 (one row per call) torch's GEMM is as fast
__all__ = ["LANES", "MAX_COLS", "matmul", "supports", "weight_gradient", "wgrad_tasks"]


def supports(cols: int) -> bool:
    """Whether the kernels take an output width of `cols` float32."""
    return 0 < cols <= MAX_COLS and cols % LANES == 0


def _rows_per_call(cols: int) -> int:
    """Rows whose cols / 16 accumulators each, plus one weight row, fit about 30 vector registers."""
    vectors = cols // LANES
    return max(1, min(8, (30 - vectors) // vectors))


@functools.cache
def matmul(cols: int):
    """kernel(x [N, depth], w [depth, cols], out [N, cols]): out = x @ w (out is overwritten).

    Each thread takes blocks of ROWS_PER_BLOCK rows; a block's rows are zeroed and accumulated in place,
    `rows` at a time with their cols / 16 accumulators in registers over the whole depth."""
    if not supports(cols):
        raise ValueError(f"rows_gemm.matmul needs cols a multiple of {LANES} up to {MAX_COLS}, got {cols}")
    rows = _rows_per_call(cols)
    vectors = cols // LANES  # one tile spans the row: the weight row is loaded once per depth step
    block = ROWS_PER_BLOCK

    @nb.njit(**_OPTS)
    def kernel(x2, w2, out2):
        n, depth = x2.shape
        x, w, out = x2.reshape(-1), w2.reshape(-1), out2.reshape(-1)
        for blk in prange((n + block - 1) // block):
            o0 = blk * block
            m = min(n, o0 + block) - o0
            x_offs = np.zeros(block + PREFETCH_CALLS * rows, np.int64)  # spare entries: mac_rows prefetches
            out_offs = np.empty(block, np.int64)
            for r in range(m):
                x_offs[r] = (o0 + r) * depth
                out_offs[r] = (o0 + r) * cols
            out[o0 * cols:(o0 + m) * cols] = 0
            p = 0
            while p + rows <= m:
                mac_rows(rows, vectors, out, out_offs, x, x_offs, p, w, 0, cols, depth)
                p += rows
            while p < m:
                mac_rows(1, vectors, out, out_offs, x, x_offs, p, w, 0, cols, depth)
                p += 1

    return kernel


@functools.cache
def weight_gradient(cols: int):
    """kernel(a [N, rows_a], b [N, cols], index [N] int64 = arange(N), partial [T, rows_a, cols]):
    partial[t] += a[rows of t]^T b[rows of t], T = `wgrad_tasks(N)` (the caller zeroes partial and adds it
    up in task order). A few columns of `a` at a time are reduced by `mac_pairs` over a block of rows,
    their [r, cols] sums in registers; rows_a is read from the arrays (one kernel per cols)."""
    if not supports(cols):
        raise ValueError(f"rows_gemm.weight_gradient needs cols a multiple of {LANES} up to {MAX_COLS}, got {cols}")
    block = ROWS_PER_BLOCK
    rows = wgrad_rows(cols, LANES)

    @nb.njit(**_OPTS)
    def kernel(a2, b2, index, partial):
        n_tasks, rows_a = partial.shape[0], partial.shape[1]
        n = a2.shape[0]
        a, b, acc = a2.reshape(-1), b2.reshape(-1), partial.reshape(-1)
        n_blocks = (n + block - 1) // block
        per_task = (n_blocks + n_tasks - 1) // n_tasks
        for t in prange(n_tasks):
            for blk in range(t * per_task, min(n_blocks, (t + 1) * per_task)):
                p = blk * block
                m = min(n, p + block) - p
                base = t * rows_a * cols
                r = 0
                while r + rows <= rows_a:
                    mac_pairs(rows, cols, acc, base + r * cols, a, index, r, b, index, 0, p, m, rows_a, cols)
                    r += rows
                if rows > 4 and r + 4 <= rows_a:  # the rest (< rows columns of a) in halving steps
                    mac_pairs(4, cols, acc, base + r * cols, a, index, r, b, index, 0, p, m, rows_a, cols)
                    r += 4
                if rows > 2 and r + 2 <= rows_a:
                    mac_pairs(2, cols, acc, base + r * cols, a, index, r, b, index, 0, p, m, rows_a, cols)
                    r += 2
                if r < rows_a:
                    mac_pairs(1, cols, acc, base + r * cols, a, index, r, b, index, 0, p, m, rows_a, cols)

    return kernel
