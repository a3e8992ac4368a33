"""Work handed out to numba's threads as they ask for it: balanced loops whatever the work per item.

numba's `omp` threading layer (pc3d's, `threads.py`) splits a `prange` loop statically: with T threads,
thread t runs the t-th contiguous 1/T of the iterations, whatever `numba.parallel_chunksize` says (that
setting reaches the `workqueue` and `tbb` layers only; checked with numba 0.68.1 by recording
`numba.get_thread_id()` per iteration). A sparse conv's blocks of output rows are contiguous in the sort
order of the sites, and their work (the map's pairs) follows the density of the cloud: on the benchmark
sweep at 0.1 m the first half of the blocks holds 43 % of the pairs, so every conv took 14 % longer than an
even split would (one thread idled for a quarter of it). A loop that takes its items from a shared counter
instead balances itself, and a thread that loses its core to another process delays it by one run of items,
not by its half.

Items go in runs of consecutive ones (`runs`: about n / 64 at a time), so a thread still walks
neighbouring blocks in turn: neighbouring blocks of a conv gather mostly the same input rows, and handing out
single blocks alternately to two threads measured slower than the static split for the memory-bound
depthwise conv. Pattern (each thread's first slot pulls runs until none are left; its other slots find
none)::

    work = new_work(n_items, runs(n_items))
    for _ in prange(SLOTS):
        item, end = first_item(work)
        while item < end:
            ...  # work on item
            item, end = next_item(work, item, end)

SLOTS is a constant, not `numba.get_num_threads()`: calling that inside a kernel keeps numba from caching
it. numba's parfor pass does not see `take` write the counter (it only counts assignments and setitems as
writes), so the work array comes from `new_work` and is never read inside the kernel after the loop.
Results stay deterministic when each item's output depends on the item alone (a block's rows, a task's
partial sum), which is how every caller is written: only which thread runs an item varies.
Callers: the float, bf16 and depthwise conv kernels (`sparse_conv`, `sparse_conv_bf16`, `depthwise`); the AMX
kernels keep the static split until they can be measured on an AMX host.
"""
from __future__ import annotations

import numba as nb
import numpy as np
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from . import numba_cache  # noqa: F401  (process-safe on-disk kernel cache)

SLOTS = 256  # prange iterations of a shared-counter loop: at least the threads numba runs
TAKES = 64  # a loop over many items hands them out in about this many runs of consecutive items


@nb.njit(cache=True, nogil=True)
def new_work(n_items, step):
    """The shared state of a loop over n_items handed out in runs of `step` (`runs` for the usual length):
    int64 [counter, step, n_items]. Made outside the kernel: an `np.zeros` inside a parallel kernel is a
    parallel loop of its own, and numba's parfor pass may move that zero-fill past a later prange that reaches
    the array only through an intrinsic (it sees no use there): numba 0.68.1 did, and the threads counted
    from whatever the fresh memory held (seen as a loop that ran no item, or read a count of 0 after it)."""
    work = np.zeros(3, np.int64)
    work[1] = max(1, step)
    work[2] = n_items
    return work


@nb.njit(inline="always", cache=True)
def runs(n_items):
    """The usual run length of a loop of n_items: about n_items / TAKES, at least 1."""
    return max(1, n_items // TAKES)


@intrinsic
def take(typingctx, work):
    """take(work): the value of work[0] (the counter of a `new_work` array shared by the threads), and
    work[0] += work[1] (its run length), as one atomic step."""
    if not (isinstance(work, types.Array) and work.dtype == types.int64):
        return None
    sig = types.int64(work)

    def codegen(context, builder, signature, args):
        data = cgutils.create_struct_proxy(signature.args[0])(context, builder, value=args[0]).data
        step = builder.load(builder.gep(data, [context.get_constant(types.intp, 1)]))
        return builder.atomic_rmw("add", data, step, "monotonic")

    return sig, codegen


@nb.njit(inline="always", cache=True)
def next_item(work, item, end):
    """The item after `item` of a loop handed out in runs (`new_work`), and the end of its run: item + 1 inside
    the run, else the first item of a fresh run; (n_items, n_items) when none are left."""
    item += 1
    if item < end:
        return item, end
    n_items = work[2]
    first = take(work)
    if first >= n_items:
        return n_items, n_items
    return first, min(n_items, first + work[1])


@nb.njit(inline="always", cache=True)
def first_item(work):
    """The first item a thread gets from a loop handed out in runs (`next_item`), and the end of its run."""
    return next_item(work, -1, 0)


@nb.njit(cache=True, nogil=True)
def balanced_tasks(starts, kvol, n_tasks):
    """Task bounds int64 [n_tasks + 1] over the blocks of a map's pair lists (`sparse_conv.block_pairs`: block
    b's pairs are starts[b * kvol] to starts[(b + 1) * kvol]): task t is blocks bounds[t] to bounds[t + 1], and
    each task holds about 1 / n_tasks of the pairs (the first block whose pairs start at or past t / n_tasks
    of them opens task t). A function of the map alone, so a weight gradient summed per task is the same on
    any machine."""
    n_blocks = (len(starts) - 1) // kvol
    bounds = np.empty(n_tasks + 1, np.int64)
    first, total = starts[0], starts[len(starts) - 1] - starts[0]
    b = 0
    for t in range(n_tasks):
        target = first + total * t // n_tasks
        while b < n_blocks and starts[b * kvol] < target:
            b += 1
        bounds[t] = b
    bounds[n_tasks] = n_blocks
    return bounds
