"""Fused gather -> GEMM -> scatter kernels of sparse convolution over a neighbour table.

Forward: ``out[o] = sum_k feats[nbr[o, k]] @ W[k]`` (per group). Each thread owns a block of
output rows, so there are no atomics and the sum order is fixed: results are bitwise
reproducible. Inside a block the offsets run in the outer loop so that one offset's weights stay
in L1 while its pairs stream through. The same kernel computes the feature gradient with the
transposed table and transposed weights.

Weight gradient: ``dW[k] = sum_o feats[nbr[o, k]]^T grad[o]``; output rows are split into a
fixed number of tasks (a function of N only, never of the thread count), each with its own
partial sum, added in task order: deterministic too.

Kernels are specialised per channel configuration: numba freezes the closure constants, so the
channel loops unroll and vectorise. Each configuration compiles once per process.
"""
from __future__ import annotations

import functools

import numba as nb
import numpy as np
from numba import prange

from . import numba_cache  # noqa: F401  (process-safe on-disk kernel cache)
from .microkernel import mac_rows

_OPTS = {"parallel": True, "fastmath": {"contract", "reassoc", "nsz", "arcp"}, "nogil": True, "boundscheck": False,
         "cache": True}
ROWS_PER_BLOCK = 256
NO_KEEP = np.ones(1, np.bool_)  # the keep argument of a vectorised kernel that does not skip
ROWS_PER_WGRAD_TASK = 4096
MAX_WGRAD_TASKS = 16


@functools.cache
def gather_gemm_scatter(groups: int, cin_g: int, cout_g: int, vectorised: bool = False, skip: bool = False):
    """Kernel(feats [N_in, G*cin_g], weight [K, G, cin_g, cout_g], nbr [N_out, K], out [N_out, G*cout_g]).

    With `vectorised` (cout_g a multiple of the vector width, see `microkernel.vector_lanes`), the
    active pairs of each offset are collected per block and multiplied a few rows at a time by the
    register-blocked micro-kernel; otherwise by plain loops that LLVM vectorises when cout_g is wide.
    The vectorised kernel takes a fifth argument, keep bool [N_in]: with `skip` it leaves out the pairs of
    input rows that are not kept (all-zero spike rows: the same sums, in the same order); without, it is not
    read (pass NO_KEEP).
    """
    if skip:
        if not vectorised:
            raise ValueError("skip needs the vectorised kernel")
        return _micro_gather_gemm_scatter(groups, cin_g, cout_g, True)
    return (_micro_gather_gemm_scatter if vectorised else _loop_gather_gemm_scatter)(groups, cin_g, cout_g)


def _micro_gather_gemm_scatter(groups: int, cin_g: int, cout_g: int, skip: bool = False):
    cout = groups * cout_g
    block = ROWS_PER_BLOCK
    rows = 8 if cout_g <= 16 else 4  # accumulators that fit the register file with the weight rows

    @nb.njit(**_OPTS)
    def kernel(feats, weight, nbr, out, keep):  # keep: read only with skip (else any bool array)
        n_out, kvol = nbr.shape
        cin = feats.shape[1]
        x = feats.reshape(-1)
        w = weight.reshape(-1)
        n_blocks = (n_out + block - 1) // block
        for blk in prange(n_blocks):
            o0 = blk * block
            o1 = min(n_out, o0 + block)
            acc = np.zeros((o1 - o0) * cout, out.dtype)
            x_offs = np.empty(block, np.int64)
            acc_offs = np.empty(block, np.int64)
            for k in range(kvol):
                n = 0
                for o in range(o0, o1):
                    i = nbr[o, k]
                    if i >= 0 and (not skip or keep[i]):
                        x_offs[n] = i * cin
                        acc_offs[n] = (o - o0) * cout
                        n += 1
                for g in range(groups):
                    w_off = (k * groups + g) * cin_g * cout_g
                    if g > 0:  # step the gathered offsets to this group's channels
                        for p in range(n):
                            x_offs[p] += cin_g
                            acc_offs[p] += cout_g
                    p = 0
                    while p + rows <= n:
                        mac_rows(rows, cout_g, acc, acc_offs, x, x_offs, p, w, w_off, cin_g)
                        p += rows
                    while p < n:
                        mac_rows(1, cout_g, acc, acc_offs, x, x_offs, p, w, w_off, cin_g)
                        p += 1
            for o in range(o0, o1):
                for c in range(cout):
                    out[o, c] = acc[(o - o0) * cout + c]

    return kernel


def _loop_gather_gemm_scatter(groups: int, cin_g: int, cout_g: int):
    cout = groups * cout_g
    block = ROWS_PER_BLOCK

    @nb.njit(**_OPTS)
    def kernel(feats, weight, nbr, out):
        n_out, kvol = nbr.shape
        n_blocks = (n_out + block - 1) // block
        for blk in prange(n_blocks):
            o0 = blk * block
            o1 = min(n_out, o0 + block)
            acc_block = np.zeros((o1 - o0, cout), out.dtype)
            for k in range(kvol):
                for o in range(o0, o1):
                    i = nbr[o, k]
                    if i < 0:
                        continue
                    for g in range(groups):
                        acc = np.zeros(cout_g, out.dtype)
                        for a in range(cin_g):
                            v = feats[i, g * cin_g + a]
                            for b in range(cout_g):
                                acc[b] += v * weight[k, g, a, b]
                        for b in range(cout_g):
                            acc_block[o - o0, g * cout_g + b] += acc[b]
            for o in range(o0, o1):
                for c in range(cout):
                    out[o, c] = acc_block[o - o0, c]

    return kernel


@nb.njit(inline="always", boundscheck=False)
def active_pairs(nbr, k, o0, o1, ins, outs):
    """Collect the (input, output) rows of offset k among outputs [o0, o1); returns their count."""
    n = 0
    for o in range(o0, o1):
        i = nbr[o, k]
        if i >= 0:
            ins[n] = i
            outs[n] = o
            n += 1
    return n


def wgrad_tasks(n_out: int) -> int:
    """Number of partial weight-gradient sums: fixed by the problem size, not the machine."""
    return int(min(MAX_WGRAD_TASKS, max(1, -(-n_out // ROWS_PER_WGRAD_TASK))))


@functools.cache
def weight_gradient(groups: int, cin_g: int, cout_g: int, vectorised: bool = False):
    """Kernel(feats [N_in, G*cin_g], grad [N_out, G*cout_g], nbr [N_out, K], partial [T, K, G, cin_g, cout_g]).

    With `vectorised` (cout_g one vector wide: the loops below run scalar there), each block's pairs
    of one offset are gathered into contiguous [cin_g, n] and [n, cout_g] panels and multiplied by
    the micro-kernel. From two vectors up the loops below are faster: they need no panels.
    """
    return (_micro_weight_gradient if vectorised else _loop_weight_gradient)(groups, cin_g, cout_g)


def _micro_weight_gradient(groups: int, cin_g: int, cout_g: int):
    block = ROWS_PER_BLOCK
    rows = 8 if cout_g <= 16 else 4

    @nb.njit(**_OPTS)
    def kernel(feats, grad, nbr, partial):
        n_out, kvol = nbr.shape
        n_tasks = partial.shape[0]
        per_task = (n_out + n_tasks - 1) // n_tasks
        acc = partial.reshape(-1)
        for t in prange(n_tasks):
            ins = np.empty(block, np.int64)
            outs = np.empty(block, np.int64)
            x_panel = np.empty(cin_g * block, feats.dtype)  # [cin_g, n]: row a holds feature a of each pair
            g_panel = np.empty(block * cout_g, feats.dtype)  # [n, cout_g]
            x_offs = np.empty(cin_g, np.int64)
            acc_offs = np.empty(cin_g, np.int64)
            task_end = min(n_out, (t + 1) * per_task)
            for b0 in range(t * per_task, task_end, block):
                b1 = min(task_end, b0 + block)
                for k in range(kvol):
                    n = active_pairs(nbr, k, b0, b1, ins, outs)
                    if n == 0:
                        continue
                    for g in range(groups):
                        for p in range(n):
                            for a in range(cin_g):
                                x_panel[a * n + p] = feats[ins[p], g * cin_g + a]
                            for b in range(cout_g):
                                g_panel[p * cout_g + b] = grad[outs[p], g * cout_g + b]
                        base = ((t * kvol + k) * groups + g) * cin_g * cout_g
                        for a in range(cin_g):
                            x_offs[a] = a * n
                            acc_offs[a] = base + a * cout_g
                        r = 0
                        while r + rows <= cin_g:
                            mac_rows(rows, cout_g, acc, acc_offs, x_panel, x_offs, r, g_panel, 0, n)
                            r += rows
                        while r < cin_g:
                            mac_rows(1, cout_g, acc, acc_offs, x_panel, x_offs, r, g_panel, 0, n)
                            r += 1

    return kernel


def _loop_weight_gradient(groups: int, cin_g: int, cout_g: int):
    """Per block of output rows and offset, the active pairs are taken four at a time: one load and
    store of a weight-gradient row serves four rank-1 updates, and the offset's gradient block
    stays in L1. Each (block, offset) sums into a zeroed local buffer that is then added to the
    task's partial: a two-level sum, so float32 error grows with the block's pairs, not the task's.
    """
    block = ROWS_PER_BLOCK

    @nb.njit(**_OPTS)
    def kernel(feats, grad, nbr, partial):
        n_out, kvol = nbr.shape
        n_tasks = partial.shape[0]
        per_task = (n_out + n_tasks - 1) // n_tasks
        for t in prange(n_tasks):
            ins = np.empty(block, np.int64)
            outs = np.empty(block, np.int64)
            local = np.empty((groups, cin_g, cout_g), partial.dtype)
            task_end = min(n_out, (t + 1) * per_task)
            for b0 in range(t * per_task, task_end, block):
                b1 = min(task_end, b0 + block)
                for k in range(kvol):
                    n = active_pairs(nbr, k, b0, b1, ins, outs)
                    if n == 0:
                        continue
                    local[:] = 0
                    p = 0
                    while p + 4 <= n:
                        i0, i1, i2, i3 = ins[p], ins[p + 1], ins[p + 2], ins[p + 3]
                        o0, o1, o2, o3 = outs[p], outs[p + 1], outs[p + 2], outs[p + 3]
                        for g in range(groups):
                            for a in range(cin_g):
                                c = g * cin_g + a
                                v0, v1, v2, v3 = feats[i0, c], feats[i1, c], feats[i2, c], feats[i3, c]
                                for b in range(cout_g):
                                    d = g * cout_g + b
                                    local[g, a, b] += ((v0 * grad[o0, d] + v1 * grad[o1, d])
                                                     + (v2 * grad[o2, d] + v3 * grad[o3, d]))
                        p += 4
                    while p < n:
                        i0, o0 = ins[p], outs[p]
                        for g in range(groups):
                            for a in range(cin_g):
                                v0 = feats[i0, g * cin_g + a]
                                for b in range(cout_g):
                                    local[g, a, b] += v0 * grad[o0, g * cout_g + b]
                        p += 1
                    for g in range(groups):
                        for a in range(cin_g):
                            for b in range(cout_g):
                                partial[t, k, g, a, b] += local[g, a, b]

    return kernel


@nb.njit(parallel=True, nogil=True, boundscheck=False)
def max_pool(feats, nbr, out, argmax):
    """out[o, c] = max_k feats[nbr[o, k], c]; argmax holds the winning input row (-1: none)."""
    n_out, kvol = nbr.shape
    n_ch = feats.shape[1]
    for o in prange(n_out):
        for c in range(n_ch):
            best = -np.inf
            arg = -1
            for k in range(kvol):
                i = nbr[o, k]
                if i >= 0 and (arg < 0 or feats[i, c] > best):
                    best = feats[i, c]
                    arg = i
            out[o, c] = best if arg >= 0 else 0.0
            argmax[o, c] = arg


@nb.njit(parallel=True, nogil=True, boundscheck=False, cache=True)
def nonzero_rows(x):
    """bool [N]: rows of x [N, C] with a non-zero entry (floats, or bf16 as int16 bits: +0 is bits 0)."""
    n, c = x.shape
    out = np.zeros(n, np.bool_)
    for i in prange(n):
        for j in range(c):
            if x[i, j] != 0:
                out[i] = True
                break
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
