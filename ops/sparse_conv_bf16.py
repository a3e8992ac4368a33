"""bfloat16 gather -> GEMM -> scatter kernels: bf16 features and weights, float32 sums.

The same schedule as `sparse_conv` (output-stationary blocks of 256 rows, offsets outermost,
no atomic sums, fixed summation order: bitwise reproducible), with the multiply done by
`bf16.dot_rows` (`vdpbf16ps` or its fallback). bf16 arrays are int16 views of torch bf16 tensors;
weights come in VNNI layout ([K, G, ceil(cin_g / 2), cout_g, 2], see `bf16.to_vnni`). Outputs are
float32, or bf16 rounded once from the float32 sum (to nearest even, bit for bit as torch's
`.bfloat16()`).

These kernels need cout_g a multiple of 16 (one float32 vector); other widths convert to float32
and run the float32 kernels (same products, exact in float32, and float32 sums). The weight
gradient reduces over pairs: `pair_weight_gradient` packs each (block, offset)'s pairs two deep into a
feature panel and a gradient panel with vector shuffles, once for all channel chunks, and
`bf16.dot_packed` multiplies the panels. SubM 64->64 on the benchmark sweep: 1.2x the kernel before it,
which interleaved two pairs in registers inside every channel chunk (13 times per pair at 64 channels,
each feature value loaded and packed alone), and 1.6x pc3d's float32 weight gradient. Panels copied
element by element in numba loops were slower than the float32 kernels: the copies cost more than the
products.
"""
from __future__ import annotations

import functools

import numba as nb
import numpy as np
from numba import prange

from . import numba_cache  # noqa: F401  (process-safe on-disk kernel cache)
from .aligned import zeros64
from .amx import DEPTH as INTERLEAVED_ROWS  # rows per interleave_rows call
from .amx import interleave_rows
from .bf16 import LANES, PREFETCH_CALLS, dot_packed, dot_rows, element_of
from .schedule import SLOTS, balanced_tasks, first_item, new_work, next_item, runs
from .sparse_conv import ROWS_PER_BLOCK, wgrad_rows

# No fastmath: numba adds its flags to every float instruction of the function, the inlined
# micro-kernel's included, and `reassoc` would let LLVM regroup the fallback's two products and
# break its bitwise agreement with vdpbf16ps. These kernels' own loops are integer work.
_OPTS = {"parallel": True, "nogil": True, "boundscheck": False, "cache": True}


def rows_per_call(cout_g: int) -> int:
    """Output rows per micro-kernel call: accumulators that fit the register file."""
    return 8 if cout_g <= LANES else 4


@nb.njit(inline="always", cache=True)
def store_row(acc, a0, out, o, c0, width):
    """out[o, c0 + c] = acc[a0 + c] for c < width; bf16 (int16) outputs rounded (`bf16.element_of`, branch-free:
    the loop vectorises)."""
    for c in range(width):
        out[o, c0 + c] = element_of(out, acc[a0 + c])


@functools.cache
def gather_gemm_scatter(cout_g: int, native: bool):
    """Kernel(feats int16 [N_in, G*cin_g], w_vnni int16 [K, G, ceil(cin_g/2), cout_g, 2], starts, ins, outs
    (the map's pairs per block and offset, `sparse_conv.block_pairs`), out float32 or int16 [N_out, G*cout_g]).
    Specialised on cout_g (the register tile) alone, as the float32 kernels are: G and cin_g come from the
    arrays, and the reduction over cin_g is a loop of the micro-kernel either way.

    Loop order: blocks of 256 output rows (runs of them handed to the threads, `schedule`) > offsets k >
    groups > pairs of the block with an input at k, `rows_per_call` at a time, each multiplied over the
    whole cin_g reduction in registers (pairs of channels per step). Accumulation: each block sums into a zeroed float32
    buffer, offset after offset in order, then rounds once to the output dtype.
    """
    if cout_g % LANES:
        raise ValueError(f"the bf16 kernel needs cout_g a multiple of {LANES}, got {cout_g}")
    block = ROWS_PER_BLOCK
    rows = rows_per_call(cout_g)
    nat = int(native)

    @nb.njit(**_OPTS)
    def kernel(feats, w_vnni, starts, ins, outs, out):
        n_out, cout = out.shape
        kvol, groups = w_vnni.shape[0], w_vnni.shape[1]
        w_group = w_vnni.shape[2] * 2 * cout_g  # VNNI elements of one (offset, group): cin_g rounded up to even
        cin = feats.shape[1]
        cin_g = cin // groups
        x = feats.reshape(-1)
        w = w_vnni.reshape(-1)
        n_blocks = (n_out + block - 1) // block
        work = new_work(n_blocks, runs(n_blocks))
        for _ in prange(SLOTS):  # runs of blocks handed out in turn (`schedule`)
            blk, end = first_item(work)
            while blk < end:
                o0 = blk * block
                o1 = min(n_out, o0 + block)
                acc = zeros64((o1 - o0) * cout, np.float32)
                x_offs = np.zeros(block + PREFETCH_CALLS * rows, np.int64)  # spare entries: dot_rows prefetches ahead
                acc_offs = np.empty(block, np.int64)
                for k in range(kvol):
                    n = 0
                    for q in range(starts[blk * kvol + k], starts[blk * kvol + k + 1]):
                        x_offs[n] = ins[q] * cin
                        acc_offs[n] = outs[q] * cout
                        n += 1
                    for g in range(groups):
                        if g > 0:  # step the gathered offsets to this group's channels
                            for p in range(n):
                                x_offs[p] += cin_g
                                acc_offs[p] += cout_g
                        w_off = (k * groups + g) * w_group
                        p = 0
                        while p + rows <= n:
                            dot_rows(nat, rows, cout_g, acc, acc_offs, x, x_offs, p, w, w_off, cin_g)
                            p += rows
                        while p < n:
                            dot_rows(nat, 1, cout_g, acc, acc_offs, x, x_offs, p, w, w_off, cin_g)
                            p += 1
                for o in range(o0, o1):
                    store_row(acc, (o - o0) * cout, out, o, 0, cout)
                blk, end = next_item(work, blk, end)

    return kernel


@functools.cache
def pair_weight_gradient(cin_g: int, cout_g: int, native: bool):
    """Weight-gradient kernel(feats int16 [N_in, G*cin_g], grad int16 [N_out, G*cout_g], starts, ins, outs
    (`sparse_conv.block_pairs`), partial float32 [T, K, G, cin_g, cout_g]): partial[t] += dW[k] = sum_o
    feats[nbr[o, k]]^T grad[o] over task t's blocks, as `sparse_conv.pair_weight_gradient` does in float32
    (same tasks and blocks; the caller zeroes partial and adds it in task order). Needs cout_g a multiple of 16.

    Per (block, offset, group) the block's pairs are packed once, two pairs deep, into a feature panel
    [pairs / 2, cin_g] and a gradient panel [pairs / 2, cout_g] (`amx.interleave_rows`: vector loads and
    one shuffle per two rows; an odd last pair gets a zero partner); `bf16.dot_packed` then reduces the
    panels a few feature channels at a time, the accumulators in registers. A table row has at most one
    pair per offset, so a block's pairs fit panels of ROWS_PER_BLOCK / 2 rows."""
    if cout_g % LANES:
        raise ValueError(f"the bf16 weight gradient needs cout_g a multiple of {LANES}, got {cout_g}")
    block = ROWS_PER_BLOCK
    rows = packed_rows(cin_g, cout_g)
    last = cin_g % rows
    nat = int(native)

    @nb.njit(**_OPTS)
    def kernel(feats, grad, starts, ins, outs, partial):
        n_tasks, kvol, groups = partial.shape[0], partial.shape[1], partial.shape[2]
        cin, cout = feats.shape[1], grad.shape[1]
        x = feats.reshape(-1)
        gr = grad.reshape(-1)
        acc = partial.reshape(-1)
        bounds = balanced_tasks(starts, kvol, n_tasks)
        work = new_work(n_tasks, 1)
        for _ in prange(SLOTS):  # tasks handed out in turn (`schedule`)
            t, end = first_item(work)
            while t < end:
                x_panel = zeros64(block * cin_g, np.int16)  # int16 pairs, read as int32 by dot_packed
                g_panel = zeros64(block * cout_g, np.int16)
                xp, gp = x_panel.view(np.int32), g_panel.view(np.int32)
                for blk in range(bounds[t], bounds[t + 1]):
                    for k in range(kvol):
                        s0 = starts[blk * kvol + k]
                        n = starts[blk * kvol + k + 1] - s0
                        if n == 0:
                            continue
                        for g in range(groups):
                            g_base = blk * block * cout + g * cout_g  # outs are block-relative
                            for q in range(0, n, INTERLEAVED_ROWS):
                                m = min(INTERLEAVED_ROWS, n - q)
                                interleave_rows(cin_g, x_panel, q * cin_g, x, ins, s0 + q, m, cin, g * cin_g)
                                interleave_rows(cout_g, g_panel, q * cout_g, gr, outs, s0 + q, m, cout, g_base)
                            base = ((t * kvol + k) * groups + g) * cin_g * cout_g
                            steps = (n + 1) // 2
                            r = 0
                            while r + rows <= cin_g:
                                dot_packed(nat, rows, cout_g, acc, base + r * cout_g, xp, r, cin_g, gp, steps)
                                r += rows
                            dot_packed(nat, last, cout_g, acc, base + r * cout_g, xp, r, cin_g, gp, steps)
                t, end = next_item(work, t, end)

    return kernel


def packed_rows(cin_g: int, cout_g: int) -> int:
    """Feature channels per `dot_packed` call: at most what the registers hold (`wgrad_rows`), and a divisor
    of cin_g where one is at least two thirds of that (64 channels: 4 calls of 16 beat 13 calls of 5)."""
    most = min(cin_g, wgrad_rows(cout_g, LANES))
    for rows in range(most, 0, -1):
        if cin_g % rows == 0 and 3 * rows >= 2 * most:
            return rows
    return most
