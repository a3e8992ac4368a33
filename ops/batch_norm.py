"""Batch normalisation of feature rows [N, C] float32 or bf16 in two memory passes each way.

torch's CPU batch norm on [N, C] reads and writes the features about 3.5 times in forward and 7.5 times
in backward (measured against a copy of the same array); these kernels read x once for the statistics
and once to normalise, and read x and the gradient twice in backward. Statistics are summed in float64
in fixed chunks of `CHUNK` rows, the chunk sums added in chunk order: the result does not depend on the
thread count, and two runs are bitwise equal.

A ReLU that follows the norm can be fused (`relu=True` kernels): applied as the output is written, and in
backward the gradient is masked where the forward's output, recomputed from x in the same float32
operations, was not positive.

bf16 arrays are int16 views (`pc3d.sparse.ops.numpy_bits`): each value is widened to float32 as it is read
and the outputs are rounded once (`bf16.as_float`, `bf16.element_of`); the arithmetic is the float32 path's.

Conventions: mean and biased variance over the N rows (as torch's training-mode batch norm);
x_hat = (x - mean) * invstd, y = x_hat * weight + bias. Backward:
dx = weight * invstd * (dy - mean(dy) - x_hat * mean(dy * x_hat)).
"""
from __future__ import annotations

import functools

import numba as nb
import numpy as np
from numba import prange

from . import numba_cache  # noqa: F401  (process-safe on-disk kernel cache)
from .bf16 import as_float, element_of

_PARALLEL = {"parallel": True, "cache": True, "nogil": True, "boundscheck": False, "fastmath": False}
_SERIAL = {"cache": True, "nogil": True, "boundscheck": False}
CHUNK = 1024  # rows per partial sum: fixed, so the summation order is fixed


@nb.njit(**_SERIAL)
def _add_chunks(part):
    """The two per-chunk sums [n_chunks, 2, C] added in chunk order: float64 [C] each."""
    s1 = np.zeros(part.shape[2])
    s2 = np.zeros(part.shape[2])
    for k in range(part.shape[0]):
        s1 += part[k, 0]
        s2 += part[k, 1]
    return s1, s2


@nb.njit(**_PARALLEL)
def moments(x):
    """Per-channel mean and biased variance of x [N, C] (N >= 1), both float64 [C].

    Sums of (x - x[0]) and its square per chunk: shifting by a sample keeps E[d^2] - E[d]^2 from
    cancelling when the mean is large against the spread."""
    n, c = x.shape
    n_chunks = (n + CHUNK - 1) // CHUNK
    part = np.zeros((n_chunks, 2, c))
    shift = np.empty(c)
    for j in range(c):
        shift[j] = as_float(x[0, j])
    for k in prange(n_chunks):
        s1 = np.zeros(c)
        s2 = np.zeros(c)
        for i in range(k * CHUNK, min(n, (k + 1) * CHUNK)):
            for j in range(c):
                d = np.float64(as_float(x[i, j])) - shift[j]
                s1[j] += d
                s2[j] += d * d
        part[k, 0] = s1
        part[k, 1] = s2
    s1, s2 = _add_chunks(part)
    m = s1 / n
    var = np.maximum(s2 / n - m * m, 0.0)
    return m + shift, var


def normalize(relu: bool = False):
    """kernel(x, mean, scale, bias, out): out = (x - mean) * scale + bias per channel, then max(., 0) with
    relu (the ReLU that follows the norm, fused: no second pass); x, out [N, C] float32 or bf16 bits, the rest
    float32 [C]."""
    return _normalize(relu)


@functools.cache
def _normalize(relu: bool):
    @nb.njit(**_PARALLEL)
    def kernel(x, mean, scale, bias, out):
        n, c = x.shape
        n_chunks = (n + CHUNK - 1) // CHUNK
        for k in prange(n_chunks):
            for i in range(k * CHUNK, min(n, (k + 1) * CHUNK)):
                for j in range(c):
                    y = (as_float(x[i, j]) - mean[j]) * scale[j] + bias[j]
                    out[i, j] = element_of(out, max(y, np.float32(0.0)) if relu else y)

    return kernel


def grad_sums(relu: bool = False):
    """kernel(grad, x, mean, mean32, scale, bias): sum(dy) and sum(dy * (x - mean)) per channel, float64 [C]
    each. With relu, dy is the gradient above the fused ReLU, zeroed where the forward's output
    (x - mean32) * scale + bias (float32, recomputed exactly as `normalize` did) is not positive."""
    return _grad_sums(relu)


@functools.cache
def _grad_sums(relu: bool):
    @nb.njit(**_PARALLEL)
    def kernel(grad, x, mean, mean32, scale, bias):
        n, c = x.shape
        n_chunks = (n + CHUNK - 1) // CHUNK
        part = np.zeros((n_chunks, 2, c))
        for k in prange(n_chunks):
            s1 = np.zeros(c)
            s2 = np.zeros(c)
            for i in range(k * CHUNK, min(n, (k + 1) * CHUNK)):
                for j in range(c):
                    xf = as_float(x[i, j])
                    g = np.float64(as_float(grad[i, j]))
                    if relu and (xf - mean32[j]) * scale[j] + bias[j] <= np.float32(0.0):
                        g = 0.0
                    s1[j] += g
                    s2[j] += g * (np.float64(xf) - mean[j])
            part[k, 0] = s1
            part[k, 1] = s2
        return _add_chunks(part)

    return kernel


def input_grad(relu: bool = False):
    """kernel(grad, x, mean, a, b, shift, scale, bias, out): out = dy * a + (x - mean) * b + shift per channel
    (the batch-norm feature gradient with the per-channel factors computed by the caller); with relu, dy is
    masked as in `grad_sums` (mean, scale, bias: the forward's float32 [C]); [N, C] float32 or bf16-bits arrays,
    float32 [C] factors."""
    return _input_grad(relu)


@functools.cache
def _input_grad(relu: bool):
    @nb.njit(**_PARALLEL)
    def kernel(grad, x, mean, a, b, shift, scale, bias, out):
        n, c = x.shape
        n_chunks = (n + CHUNK - 1) // CHUNK
        for k in prange(n_chunks):
            for i in range(k * CHUNK, min(n, (k + 1) * CHUNK)):
                for j in range(c):
                    g = as_float(grad[i, j])
                    d = as_float(x[i, j]) - mean[j]
                    if relu and d * scale[j] + bias[j] <= np.float32(0.0):
                        g = np.float32(0.0)
                    out[i, j] = element_of(out, g * a[j] + d * b[j] + shift[j])

    return kernel
