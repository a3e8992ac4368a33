"""Per-channel (depthwise) sparse conv kernels: groups = channels, one input and one output channel per
group, as the SDSC U-Net's depthwise convs. Channels run across the vector lanes and the offsets outermost,
over the same pair lists and row blocks as the dense kernels (`sparse_conv.block_pairs`); every sum has a
fixed order, so results are bitwise reproducible.

bf16 features and weights come as int16 bits (`pc3d.sparse.ops.numpy_bits`): each value is widened as it is
read (`bf16.as_float`), the products are summed in float32 and the output rounded once (`bf16.element_of`),
bit for bit the float32 kernel on the widened values; no float32 copies of the arrays are made.
"""
from __future__ import annotations

import functools

import numba as nb
import numpy as np
from numba import prange, types
from numba.extending import overload

from . import numba_cache  # noqa: F401  (process-safe on-disk kernel cache)
from .aligned import zeros64
from .bf16 import as_float, element_of
from .fma import fma
from .schedule import SLOTS, balanced_tasks, first_item, new_work, next_item, runs
from .sparse_conv import ROWS_PER_BLOCK

_OPTS = {"parallel": True, "nogil": True, "boundscheck": False, "cache": True}  # no fastmath: see `fma`

SPECIALISED_DEPTHWISE = 64  # from this many channels a compile-time C is faster (10-15 % at 64-128)


def sums_for(n, out):
    """A zeroed 64-byte-aligned buffer of n sums for `out`: float32 for bf16 bits (int16), else out's dtype."""


@overload(sums_for, inline="always")
def _sums_for(n, out):
    if out.dtype == types.int16:
        return lambda n, out: zeros64(n, np.float32)
    return lambda n, out: zeros64(n, out.dtype)


def depthwise(channels: int):
    """Depthwise forward / feature gradient (groups = channels, one input and one output channel per group):
    kernel(feats [N_in, C], weight [K, C], starts, ins, outs, out [N_out, C]) over `block_pairs`:
    ``out[o, c] = sum_k feats[nbr[o, k], c] * weight[k, c]``. Channels run across the vector lanes (one
    multiply-add per pair and channel, the whole row at once), offsets outermost in a block as in the dense
    kernel; each row sums in a fixed order (offsets, then pairs): bitwise reproducible.

    From SPECIALISED_DEPTHWISE channels up C is a compile-time constant (one kernel per C); below it C is read
    from the arrays (one kernel for all): with a constant C of 16 or 32 LLVM unrolls the channel loop and
    scalarises it (C = 32 on the 0.1 m sweep: 19.4 ms against 7.8 ms), while its loop vectoriser handles a
    run-time count."""
    return _depthwise(channels) if channels >= SPECIALISED_DEPTHWISE else _depthwise(None)


@functools.cache
def _depthwise(fixed: int | None):
    @nb.njit(**_OPTS)
    def kernel(feats, weight, starts, ins, outs, out):
        n_out = out.shape[0]
        channels = out.shape[1] if fixed is None else fixed
        kvol = weight.shape[0]
        block = ROWS_PER_BLOCK
        n_blocks = (n_out + block - 1) // block
        work = new_work(n_blocks, runs(n_blocks))
        for _ in prange(SLOTS):  # runs of blocks handed out in turn (`schedule`)
            blk, end = first_item(work)
            while blk < end:
                o0 = blk * block
                o1 = min(n_out, o0 + block)
                acc = sums_for((o1 - o0) * channels, out).reshape(o1 - o0, channels)
                for k in range(kvol):
                    for q in range(starts[blk * kvol + k], starts[blk * kvol + k + 1]):
                        i, r = ins[q], outs[q]
                        for c in range(channels):
                            acc[r, c] = fma(as_float(feats[i, c]), as_float(weight[k, c]), acc[r, c])
                for o in range(o0, o1):
                    for c in range(channels):
                        out[o, c] = element_of(out, acc[o - o0, c])
                blk, end = next_item(work, blk, end)

    return kernel


def depthwise_weight_gradient(channels: int):
    """kernel(feats [N_in, C], grad [N_out, C], nbr [N_out, K], starts (the `block_pairs` starts of nbr, or of
    the table it was cut from), partial [T, K, C] (float32 for bf16 inputs)):
    ``dW[k, c] = sum_o feats[nbr[o, k], c] * grad[o, c]``. Task t takes a run of whole blocks of output rows
    holding about 1 / T of the pairs (`schedule.balanced_tasks`; T is a function of N only) and walks the table
    row by row: each gradient row is read once for all its offsets, and the task's K x C sums stay in L1 until
    they are written to its partial (1.6x the block-pair walk). Tasks are handed out one at a time. C
    compile-time or run-time as in `depthwise`."""
    return _depthwise_weight_gradient(channels if channels >= SPECIALISED_DEPTHWISE else None)


@functools.cache
def _depthwise_weight_gradient(fixed: int | None):
    @nb.njit(**_OPTS)
    def kernel(feats, grad, nbr, starts, partial):
        n_tasks, kvol = partial.shape[0], partial.shape[1]
        channels = partial.shape[2] if fixed is None else fixed
        n_out = nbr.shape[0]
        block = ROWS_PER_BLOCK
        bounds = balanced_tasks(starts, kvol, n_tasks)
        work = new_work(n_tasks, 1)
        for _ in prange(SLOTS):  # tasks handed out in turn (`schedule`)
            t, end = first_item(work)
            while t < end:
                local = zeros64(kvol * channels, partial.dtype).reshape(kvol, channels)
                for o in range(bounds[t] * block, min(n_out, bounds[t + 1] * block)):
                    for k in range(kvol):
                        i = nbr[o, k]
                        if i >= 0:
                            for c in range(channels):
                                local[k, c] = fma(as_float(feats[i, c]), as_float(grad[o, c]), local[k, c])
                for k in range(kvol):
                    for c in range(channels):
                        partial[t, k, c] += local[k, c]
                t, end = next_item(work, t, end)

    return kernel
