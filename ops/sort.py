"""Row-wise argsort of non-negative float32 keys: a stable LSD radix sort over their bits.

The bits of a non-negative float32 (sign bit 0; NaN above +inf) read as uint32 are in the same order as
the values, so sorting the integers sorts the floats. Descending order sorts the complemented bits
ascending, which keeps equal keys in index order (stable). Three passes of 11-bit digits; a pass whose
digit is the same for every key of the row is skipped (values in [0, 1] share most exponent bits).

For the Lovasz loss (`pc3d.models.losses.lovasz`): its [classes, points] error rows sorted by torch's
comparison sort took 5-7 % of a segmentation training step on 2 cores; this is ~4x faster there.
"""
from __future__ import annotations

import numba as nb
import numpy as np
from numba import prange

from . import numba_cache  # noqa: F401  (process-safe on-disk kernel cache)

DIGIT_BITS = 11
DIGITS = 1 << DIGIT_BITS


@nb.njit(parallel=True, nogil=True, boundscheck=False, cache=True)
def argsort_rows_descending(keys, order):
    """order[r] (int64 [R, P]) = the indices of keys[r] (uint32 [R, P]: bits of non-negative float32) by
    decreasing value, equal keys in index order. Rows run in parallel."""
    n_rows, n = keys.shape
    for r in prange(n_rows):
        src = np.empty(n, np.int32)
        dst = np.empty(n, np.int32)
        flipped = ~keys[r]
        for i in range(n):
            src[i] = i
        for shift in range(0, 32, DIGIT_BITS):
            start = np.zeros(DIGITS + 1, np.int64)
            for i in range(n):
                start[((flipped[i] >> shift) & (DIGITS - 1)) + 1] += 1
            if start.max() == n:  # one digit for the whole row: this pass keeps the order
                continue
            for d in range(DIGITS):
                start[d + 1] += start[d]
            for i in range(n):
                j = src[i]
                d = (flipped[j] >> shift) & (DIGITS - 1)
                dst[start[d]] = j
                start[d] += 1
            src, dst = dst, src
        for i in range(n):
            order[r, i] = src[i]
