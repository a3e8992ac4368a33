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

_OPTS = {"parallel": True, "fastmath": {"contract", "reassoc", "nsz", "arcp"}, "nogil": True, "boundscheck": False,
         "cache": True}
ROWS_PER_BLOCK = 256
ROWS_PER_WGRAD_TASK = 4096
MAX_WGRAD_TASKS = 16


@functools.cache
def gather_gemm_scatter(groups: int, cin_g: int, cout_g: int):
    """Kernel(feats [N_in, G*cin_g], weight [K, G, cin_g, cout_g], nbr [N_out, K], out [N_out, G*cout_g])."""
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


def wgrad_tasks(n_out: int) -> int:
    """Number of partial weight-gradient sums: fixed by the problem size, not the machine."""
    return int(min(MAX_WGRAD_TASKS, max(1, -(-n_out // ROWS_PER_WGRAD_TASK))))


@functools.cache
def weight_gradient(groups: int, cin_g: int, cout_g: int):
    """Kernel(feats [N_in, G*cin_g], grad [N_out, G*cout_g], nbr [N_out, K], partial [T, K, G, cin_g, cout_g]).

    Per block of output rows and offset, the active pairs' input and gradient rows are gathered
    into small buffers, then reduced with the pair index innermost so that one output row of
    the weight gradient accumulates in registers.
    """
    cin = groups * cin_g
    cout = groups * cout_g
    block = ROWS_PER_BLOCK

    @nb.njit(**_OPTS)
    def kernel(feats, grad, nbr, partial):
        n_out, kvol = nbr.shape
        n_tasks = partial.shape[0]
        per_task = (n_out + n_tasks - 1) // n_tasks
        for t in prange(n_tasks):
            xs = np.empty((block, cin), feats.dtype)
            gs = np.empty((block, cout), feats.dtype)
            for b0 in range(t * per_task, min(n_out, (t + 1) * per_task), block):
                b1 = min(n_out, b0 + block, (t + 1) * per_task)
                for k in range(kvol):
                    n = 0
                    for o in range(b0, b1):
                        i = nbr[o, k]
                        if i >= 0:
                            xs[n] = feats[i]
                            gs[n] = grad[o]
                            n += 1
                    if n == 0:
                        continue
                    for g in range(groups):
                        for a in range(cin_g):
                            acc = np.zeros(cout_g, feats.dtype)
                            for p in range(n):
                                v = xs[p, g * cin_g + a]
                                for b in range(cout_g):
                                    acc[b] += v * gs[p, g * cout_g + b]
                            for b in range(cout_g):
                                partial[t, k, g, a, b] += acc[b]

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
