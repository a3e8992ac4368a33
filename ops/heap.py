"""The heap policy of a pc3d process: freed tensor memory stays in the heap for the next step.

glibc serves every allocation above its mmap threshold (128 KiB at start, raised by itself to at most
32 MiB) with a fresh anonymous mapping and unmaps it on free. A sparse network allocates the same large
feature and gradient tensors every step (45 MiB each for VoxelBackBone8x at 0.05 m), so each one is
mapped, page-faulted in 4 KiB pieces on first touch, zeroed by the kernel and unmapped again: at 0.05 m
that was a quarter of a float32 forward + backward step (1.85 s against 1.36 s with this policy, same
process, same engine), and BatchNorm and ReLU, which only stream memory, ran 4x below their speed on
warm memory.

`keep_freed_memory` raises the mmap threshold to 1 GiB and the trim threshold to 2 GiB (`mallopt`), so
large blocks come from the heap and are reused once freed. The cost: resident memory stays near the
largest step's peak instead of following live memory (the peak itself does not grow). It runs on
`import pc3d`, and not at all where the user chose glibc's policy (MALLOC_MMAP_THRESHOLD_,
MALLOC_TRIM_THRESHOLD_ or MALLOC_TOP_PAD_ set) or set PC3D_MALLOC=system, and not on a C library
without glibc's `mallopt`. Children made by fork (DataLoader workers) inherit it.

oneDNN's primitive cache. torch runs its CPU convolutions, and its bf16 matmuls under autocast, as oneDNN
primitives, cached by shape (1,024 by default). A layer whose row count changes every step (a pillar VFE over
the batch's points, attention over its voxels, a point head) adds a few primitives per step, and each cached
matmul keeps memory that grows with its rows; with the heap policy the long-lived entries also sit between the
large blocks of a step. Measured on `centerpoint_pillar_sim_waymo` (bf16, 2 threads): resident memory rose from
1.9 GB to 12 GB over 1,500 steps, and two such runs brought a 24 GiB machine to a standstill (0.05 steps/s).
`bound_primitive_cache` sets the cache to `PRIMITIVE_CACHE_CAPACITY` entries (ONEDNN_PRIMITIVE_CACHE_CAPACITY,
read by oneDNN when it makes its first primitive): enough for every fixed-shape primitive of a step
(`centerpoint_sim_kitti` runs 75 distinct ones; at 64 entries it lost ~7 % of its bf16 steps/s to re-creating
them), few enough that the varying ones are evicted. With it the same recipe levels off at 2.6 GB and
`dsvt_pillar_sim_waymo` (about 40 new matmul shapes a step) near 4.8 GB by step 500 (unbounded: 5.1 GB by step
100 and rising), both at unchanged steps/s. A value the user set (ONEDNN_ or DNNL_
prefix) is left alone; imported after torch made its first primitive, it changes nothing.

This module imports only the standard library.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1 << 30
TRIM_THRESHOLD = 1 << 31
USER_VARS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")
ENV_OPT_OUT = "PC3D_MALLOC"  # "system": leave the C library's policy alone
PRIMITIVE_CACHE_VARS = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "DNNL_PRIMITIVE_CACHE_CAPACITY")
PRIMITIVE_CACHE_CAPACITY = 128


def _mallopt():
    """glibc's mallopt, or None (not Linux, or a C library without it, e.g. musl)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.mallopt
    except (OSError, AttributeError):
        return None


def keep_freed_memory(environ=None) -> bool:
    """Apply the policy (see the module docstring); True if both thresholds were set."""
    environ = os.environ if environ is None else environ
    if environ.get(ENV_OPT_OUT, "").strip().lower() == "system" or any(v in environ for v in USER_VARS):
        return False
    mallopt = _mallopt()
    if mallopt is None:
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def bound_primitive_cache(environ=None) -> bool:
    """oneDNN's primitive cache at PRIMITIVE_CACHE_CAPACITY entries (see the module docstring), unless the
    user sized it; True if this call set it."""
    environ = os.environ if environ is None else environ
    if any(v in environ for v in PRIMITIVE_CACHE_VARS):
        return False
    environ[PRIMITIVE_CACHE_VARS[0]] = str(PRIMITIVE_CACHE_CAPACITY)
    return True
