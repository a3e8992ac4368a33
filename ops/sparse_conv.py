"""Fused gather -> GEMM -> scatter kernels of sparse convolution over a neighbour table.

Forward: ``out[o] = sum_k feats[nbr[o, k]] @ W[k]`` (per group). Blocks of 256 output rows are
handed to the threads in runs of neighbouring blocks (`schedule`: a block's work follows the density
of the cloud, and a static split made a conv 14 % slower than an even one at 0.1 m). A block belongs
to one thread, so its sums need no atomics and keep a fixed order: results are bitwise reproducible.
Inside a block the offsets run in the outer loop so that one offset's weights stay in L1 while its
pairs stream through. The same kernel computes the feature gradient with the transposed table and
transposed weights.

Weight gradient: ``dW[k] = sum_o feats[nbr[o, k]]^T grad[o]``; the blocks are split into a fixed
number of tasks of about equal pairs (`schedule.balanced_tasks`, a function of the map only, never
of the thread count), each with its own partial sum, added in task order: deterministic too.

Each compile costs 3-5 s, which a fresh checkout pays for every kernel a model or a test suite touches,
so kernels are specialised only where the code needs a constant: the register-blocked weight gradient on
the output width (`cout_g`, its register tile), and the register-blocked forward on it up to 64 channels
(a constant weight stride is faster there) and wherever whole vectors do not cover it (the masked last
vector needs a constant width); the other wider forwards share one kernel tiled at run time (`mac_rows`).
Everything else, the group count and the input width included, is read from the arrays' shapes (the
reduction is a loop either way). Every width runs on vectors: a width the vector lanes do not divide (7, 20)
ends in a masked vector (`microkernel.row_lanes`), so there is no scalar path.
"""
from __future__ import annotations

import functools

import numba as nb
import numpy as np
from numba import prange

from . import numba_cache  # noqa: F401  (process-safe on-disk kernel cache)
from .aligned import zeros64
from .microkernel import PREFETCH_CALLS, VECTOR_BYTES, mac_pairs, mac_rows, row_vectors, vector_lanes
from .schedule import SLOTS, balanced_tasks, first_item, new_work, next_item, runs

_OPTS = {"parallel": True, "nogil": True, "boundscheck": False, "cache": True}  # no fastmath: see `fma`
ROWS_PER_BLOCK = 256
NO_KEEP = np.ones(1, np.bool_)  # the keep argument of a forward kernel that does not skip
ROWS_PER_WGRAD_TASK = 4096
MAX_WGRAD_TASKS = 16


@functools.cache
def gather_gemm_scatter(cout_g: int, skip: bool = False):
    """The forward kernel of one output width per group (weight [K, G, cin_g, cout_g]: G and cin_g any):
    kernel(feats [N_in, G*cin_g], weight, starts, ins, outs, out [N_out, G*cout_g], keep) over the table's pairs
    grouped per block of output rows and offset (`block_pairs`); each group is multiplied a few rows at a time
    by the register-blocked micro-kernel. One kernel per width up to KEYED_COLS or not a multiple of 16, one for
    all the other wider ones. With `skip` it leaves out the pairs whose input row is not kept (all-zero spike
    rows: the same sums, in the same order); without, keep is not read (pass NO_KEEP).
    """
    return _micro_gather_gemm_scatter(cout_g if cout_g <= KEYED_COLS or cout_g % RUNTIME_COLS else 0, skip)


@nb.njit(parallel=True, nogil=True, boundscheck=False, cache=True)
def block_pairs(nbr, block):
    """The pairs of a table [N_out, K] grouped by (block of `block` output rows, offset), each group in
    output order: starts int64 [n_blocks * K + 1] (group b * K + k is ins / outs[starts[g]:starts[g + 1]]),
    ins int32 [P] (input row), outs int32 [P] (output row minus the block's first).

    Built once per map (`KernelMap.block_pairs`): the kernels then read P pairs instead of scanning the
    N_out * K entries of the table, most of them empty, on every call. Two passes over the table, both
    branch-free: count each group's pairs, then collect a block's pairs into per-offset scratch rows
    (every entry is written, the fill only advances past the valid ones) and copy them out."""
    n_out, kvol = nbr.shape
    n_blocks = (n_out + block - 1) // block
    counts = np.zeros(n_blocks * kvol + 1, np.int64)
    for b in prange(n_blocks):
        count = np.zeros(kvol, np.int64)
        for o in range(b * block, min(n_out, (b + 1) * block)):
            for k in range(kvol):
                count[k] += nbr[o, k] >= 0
        counts[b * kvol + 1:(b + 1) * kvol + 1] = count
    starts = np.cumsum(counts)
    ins = np.empty(starts[-1], np.int32)
    outs = np.empty(starts[-1], np.int32)
    for b in prange(n_blocks):
        scratch_ins = np.empty(kvol * block, np.int32)  # offset k's pairs at [k * block, k * block + fill[k])
        scratch_outs = np.empty(kvol * block, np.int32)
        fill = np.zeros(kvol, np.int64)
        o0 = b * block
        for o in range(o0, min(n_out, o0 + block)):
            for k in range(kvol):
                i = nbr[o, k]
                p = k * block + fill[k]
                scratch_ins[p] = i
                scratch_outs[p] = o - o0
                fill[k] += i >= 0
        for k in range(kvol):
            s = starts[b * kvol + k]
            ins[s:s + fill[k]] = scratch_ins[k * block:k * block + fill[k]]
            outs[s:s + fill[k]] = scratch_outs[k * block:k * block + fill[k]]
    return starts, ins, outs


_TRANSPOSE_CHUNKS = 16  # row chunks of transposed_block_pairs: a fixed split, so a fixed pair order


@nb.njit(parallel=True, nogil=True, boundscheck=False, cache=True)
def transposed_block_pairs(nbr, n_in, block):
    """`block_pairs` of the transposed table (t[nbr[o, k], k] = o, rows N_in) read straight from nbr, so the
    transposed table is never built: groups are (block of `block` input rows, offset), ins are the output
    rows o, outs the input row minus the block's first.

    Each input row appears at most once per group (a conv reads input i at offset k from one output at
    most), so a kernel's per-row sums do not depend on the order inside a group; that order is fixed: by
    chunk of nbr's rows (a split of N_out only), then row. Two passes over nbr: per-chunk group counts,
    then each chunk writes its pairs at its own running positions."""
    n_out, kvol = nbr.shape
    n_blocks = (n_in + block - 1) // block
    n_groups = n_blocks * kvol
    chunks = _TRANSPOSE_CHUNKS
    pos = np.zeros((chunks, n_groups), np.int64)
    for c in prange(chunks):
        for o in range(c * n_out // chunks, (c + 1) * n_out // chunks):
            for k in range(kvol):
                i = nbr[o, k]
                if i >= 0:
                    pos[c, (i // block) * kvol + k] += 1
    starts = np.empty(n_groups + 1, np.int64)
    starts[0] = 0
    for g in range(n_groups):
        total = 0
        for c in range(chunks):
            total += pos[c, g]
        starts[g + 1] = starts[g] + total
    for g in prange(n_groups):  # counts -> each chunk's first position in the group
        p = starts[g]
        for c in range(chunks):
            count = pos[c, g]
            pos[c, g] = p
            p += count
    ins = np.empty(starts[n_groups], np.int32)
    outs = np.empty(starts[n_groups], np.int32)
    for c in prange(chunks):
        for o in range(c * n_out // chunks, (c + 1) * n_out // chunks):
            for k in range(kvol):
                i = nbr[o, k]
                if i >= 0:
                    b = i // block
                    g = b * kvol + k
                    p = pos[c, g]
                    ins[p] = o
                    outs[p] = i - b * block
                    pos[c, g] = p + 1
    return starts, ins, outs


KEYED_COLS = 64  # forward widths up to this (float32: 4 vectors) get a kernel of their own
RUNTIME_COLS = 16  # wider forwards share the run-time tiled kernel where whole float32 vectors cover them


@functools.cache
def _micro_gather_gemm_scatter(cols: int, skip: bool):
    """The register-blocked forward: `cols` > 0 compiles it for that output width, a row tile spanning it
    (rows x `row_vectors(cols)` accumulators); cols = 0 for the wider multiples of RUNTIME_COLS, read from the
    weight and covered by tiles of 4 vectors (`mac_rows` with a run-time width). The widths models use most (16-64)
    are keyed: their weight rows then have a constant stride, 5-25 % faster than the run-time tiling,
    which is in turn 1.3-1.7x faster at 128 (4 x 8 accumulators spill) and saves a 3-5 s compile per width
    (measured 2026-12-03, SubM k3 forward on the 0.1 m sweep, float32)."""
    block = ROWS_PER_BLOCK
    keyed = cols > 0
    # float32 vectors per tile (float64 takes as many tiles as its 8-lane vectors need): a keyed width in one
    # tile, of whole, half or masked vectors (`row_lanes`)
    vectors = row_vectors(cols, 4) if keyed else 4
    rows = 8 if 0 < cols <= 16 else 4 if vectors <= 5 else 2  # accumulators that fit beside the weight row

    @nb.njit(**_OPTS)
    def kernel(feats, weight, starts, ins, outs, out, keep):  # keep: read only with skip (else any bool array)
        n_out, cout = out.shape
        kvol, groups, cin_g, cout_g = weight.shape
        cin = feats.shape[1]
        x = feats.reshape(-1)
        w = weight.reshape(-1)
        n_blocks = (n_out + block - 1) // block
        work = new_work(n_blocks, runs(n_blocks))
        for _ in prange(SLOTS):  # runs of blocks handed out in turn (`schedule`)
            blk, end = first_item(work)
            while blk < end:
                o0 = blk * block
                o1 = min(n_out, o0 + block)
                acc = zeros64((o1 - o0) * cout, out.dtype)  # 64-byte rows start on cache lines
                x_offs = np.zeros(block + PREFETCH_CALLS * rows, np.int64)  # spare entries: mac_rows prefetches
                acc_offs = np.empty(block, np.int64)
                for k in range(kvol):
                    n = 0
                    for q in range(starts[blk * kvol + k], starts[blk * kvol + k + 1]):
                        i = ins[q]  # branch-free: the slot is always written, counted when kept
                        x_offs[n] = i * cin
                        acc_offs[n] = outs[q] * cout
                        n += keep[i] if skip else 1
                    for g in range(groups):
                        w_off = (k * groups + g) * cin_g * cout_g
                        if g > 0:  # step the gathered offsets to this group's channels
                            for p in range(n):
                                x_offs[p] += cin_g
                                acc_offs[p] += cout_g
                        p = 0
                        if keyed:  # cols: a compile-time width
                            while p + rows <= n:
                                mac_rows(rows, vectors, acc, acc_offs, x, x_offs, p, w, w_off, cols, cin_g)
                                p += rows
                            if rows > 4 and p + 4 <= n:  # the rest (< rows) in halving steps
                                mac_rows(4, vectors, acc, acc_offs, x, x_offs, p, w, w_off, cols, cin_g)
                                p += 4
                            if p + 2 <= n:
                                mac_rows(2, vectors, acc, acc_offs, x, x_offs, p, w, w_off, cols, cin_g)
                                p += 2
                            if p < n:
                                mac_rows(1, vectors, acc, acc_offs, x, x_offs, p, w, w_off, cols, cin_g)
                        else:  # cout_g: a run-time width
                            while p + 4 <= n:
                                mac_rows(4, vectors, acc, acc_offs, x, x_offs, p, w, w_off, cout_g, cin_g)
                                p += 4
                            if p + 2 <= n:
                                mac_rows(2, vectors, acc, acc_offs, x, x_offs, p, w, w_off, cout_g, cin_g)
                                p += 2
                            if p < n:
                                mac_rows(1, vectors, acc, acc_offs, x, x_offs, p, w, w_off, cout_g, cin_g)
                for o in range(o0, o1):
                    for c in range(cout):
                        out[o, c] = acc[(o - o0) * cout + c]
                blk, end = next_item(work, blk, end)

    return kernel


def wgrad_tasks(n_out: int) -> int:
    """Number of partial weight-gradient sums: fixed by the problem size, not the machine."""
    return int(min(MAX_WGRAD_TASKS, max(1, -(-n_out // ROWS_PER_WGRAD_TASK))))


def wgrad_rows(cout_g: int, lanes: int) -> int:
    """Feature channels per `mac_pairs` call: rows x v accumulators plus v gradient vectors fit the 32 vector
    registers, v the vectors of a row (`lanes` wide, or halves of them, the last one possibly masked: `row_lanes`)."""
    return max(1, min(8, 20 // row_vectors(cout_g, VECTOR_BYTES // lanes)))


@functools.cache
def pair_weight_gradient(cout_g: int, dtype: str):
    """Weight-gradient kernel(feats [N_in, G*cin_g], grad [N_out, G*cout_g], starts, ins, outs (`block_pairs`),
    partial [T, K, G, cin_g, cout_g]) for any cout_g (its vectors of `dtype`, its name, given by `row_lanes`), G
    and cin_g from the arrays: partial[t] += dW[k] = sum_o feats[nbr[o, k]]^T grad[o] over task t's blocks (T =
    `wgrad_tasks(N_out)`; the caller zeroes partial and sums it in task order).

    Per block of 256 output rows and offset, the block's pairs (read from `block_pairs`, built once per
    map) are reduced by `mac_pairs` a few feature channels at a time: the accumulators of
    [rows, cout_g] stay in registers over the pairs, each pair's gradient row is loaded once per channel
    group and its features are broadcast from their rows; no panels are copied. Tasks are runs of blocks
    of about equal pairs (`schedule.balanced_tasks`; their number fixed by N_out). Sums: each (block, offset,
    group) in registers, pairs in order, then added to the task's partial, blocks in order: a two-level sum,
    float32 error growing with a block's pairs, not a task's.
    """
    block = ROWS_PER_BLOCK
    rows = wgrad_rows(cout_g, vector_lanes(dtype))

    @nb.njit(**_OPTS)
    def kernel(feats, grad, starts, ins, outs, partial):
        n_tasks, kvol, groups, cin_g = partial.shape[0], partial.shape[1], partial.shape[2], partial.shape[3]
        cin, cout = feats.shape[1], grad.shape[1]
        x = feats.reshape(-1)
        gr = grad.reshape(-1)
        acc = partial.reshape(-1)
        bounds = balanced_tasks(starts, kvol, n_tasks)
        work = new_work(n_tasks, 1)
        for _ in prange(SLOTS):  # tasks handed out in turn (`schedule`)
            t, end = first_item(work)
            while t < end:
                for blk in range(bounds[t], bounds[t + 1]):
                    for k in range(kvol):
                        s0 = starts[blk * kvol + k]
                        n = starts[blk * kvol + k + 1] - s0
                        if n == 0:
                            continue
                        for g in range(groups):
                            base = ((t * kvol + k) * groups + g) * cin_g * cout_g
                            g_base = blk * block * cout + g * cout_g
                            r = 0
                            while r + rows <= cin_g:
                                mac_pairs(rows, cout_g, acc, base + r * cout_g, x, ins, g * cin_g + r, gr, outs, g_base,
                                          s0, n, cin, cout)
                                r += rows
                            if rows > 4 and r + 4 <= cin_g:  # the rest (< rows channels) in halving steps
                                mac_pairs(4, cout_g, acc, base + r * cout_g, x, ins, g * cin_g + r, gr, outs, g_base,
                                          s0, n, cin, cout)
                                r += 4
                            if rows > 2 and r + 2 <= cin_g:
                                mac_pairs(2, cout_g, acc, base + r * cout_g, x, ins, g * cin_g + r, gr, outs, g_base,
                                          s0, n, cin, cout)
                                r += 2
                            if r < cin_g:
                                mac_pairs(1, cout_g, acc, base + r * cout_g, x, ins, g * cin_g + r, gr, outs, g_base,
                                          s0, n, cin, cout)
                t, end = next_item(work, t, end)

    return kernel


@nb.njit(parallel=True, nogil=True, boundscheck=False)
def max_pool(feats, nbr, out, argmax):
    """out[o, c] = max_k feats[nbr[o, k], c] (NaN when any is NaN); argmax holds the winning input row (-1: none)."""
    n_out, kvol = nbr.shape
    n_ch = feats.shape[1]
    for o in prange(n_out):
        for c in range(n_ch):
            best = -np.inf
            arg = -1
            for k in range(kvol):
                i = nbr[o, k]
                # NaN wins and stays (as torch's max pool): a value beats a non-NaN best when it is not <= it
                if i >= 0 and (arg < 0 or (best == best and not feats[i, c] <= best)):
                    best = feats[i, c]
                    arg = i
            out[o, c] = best if arg >= 0 else 0.0
            argmax[o, c] = arg


@nb.njit(parallel=True, nogil=True, boundscheck=False, cache=True)
def nonzero_rows(bits):
    """bool [N]: rows of a float array [N, C], given as its integer bits (int16 / int32 / int64 of the same
    width), with a bit set. +0.0 is bits 0; a -0.0 row counts as non-zero (kept: correct, only not skipped).
    An OR over the row rather than a search for the first non-zero: it vectorises, and a silent row (the
    case that matters) is read to its end either way."""
    n, c = bits.shape
    out = np.empty(n, np.bool_)
    for i in prange(n):
        acc = bits[i, 0] & 0
        for j in range(c):
            acc |= bits[i, j]
        out[i] = acc != 0
    return out


@nb.njit(parallel=True, nogil=True, boundscheck=False, cache=True)
def drop_inputs(nbr, keep):
    """A copy of the table [N_out, K] with every entry whose input row is not kept set to -1 (no pair).

    A conv over it skips those rows: with keep = "the row has a non-zero value", the sums are those of
    the full table (a zero row adds exact zeros), in the same order, minus the work."""
    n_out, kvol = nbr.shape
    out = np.empty_like(nbr)
    for o in prange(n_out):
        for k in range(kvol):
            i = nbr[o, k]
            out[o, k] = i if i >= 0 and keep[i] else -1
    return out
