"""Scratch arrays on 64-byte boundaries, inside numba kernels and out.

numba's `np.empty` aligns to 32 bytes and numpy's to 16, so a scratch buffer whose rows are 64 bytes (an
AVX-512 vector, an AMX tile row) could start mid cache line: then every row load or store touches two
lines. Which alignment a buffer gets depends on the heap's state, so a kernel's speed moved with what the
process had allocated before (the AMX weight gradient ran 1.5x slower after any MKL sgemm had run in the
process). torch's CPU allocator aligns to 64 bytes already; numpy's does not.
"""
from __future__ import annotations

import numba as nb
import numpy as np

from . import numba_cache  # noqa: F401  (process-safe on-disk kernel cache)

LINE = 64


@nb.njit(cache=True, nogil=True)
def empty64(n, dtype):
    """np.empty(n, dtype) starting on a 64-byte boundary (a view into a slightly larger array)."""
    raw = np.empty(n + LINE, dtype)
    skip = ((LINE - raw.ctypes.data % LINE) % LINE) // raw.itemsize
    return raw[skip:skip + n]


@nb.njit(cache=True, nogil=True)
def zeros64(n, dtype):
    """np.zeros(n, dtype) starting on a 64-byte boundary."""
    out = empty64(n, dtype)
    out[:] = 0
    return out


def host_zeros64(shape, dtype) -> np.ndarray:
    """A zeroed numpy array on a 64-byte boundary, e.g. a kernel's partial sums."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    raw = np.zeros(nbytes + LINE, np.uint8)
    skip = -raw.ctypes.data % LINE
    return raw[skip:skip + nbytes].view(dtype).reshape(shape)
