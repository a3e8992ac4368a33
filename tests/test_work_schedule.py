"""pc3d_ops.schedule: items handed out one at a time, and weight-gradient tasks balanced by pairs."""
from __future__ import annotations

import numba as nb
import numpy as np
import pytest
from numba import prange
from pc3d_ops import sparse_conv as kernels
from pc3d_ops.schedule import SLOTS, balanced_tasks, first_item, new_work, next_item, runs


@nb.njit(parallel=True, cache=False)
def _record(n_items, cost, step):
    """How often each item was taken, the slot that took it, and the work array (read by the caller: numba does
    not see `take` write it, and may move a read of it in here ahead of the loop); items of uneven cost."""
    taken = np.zeros(n_items, np.int64)
    slot_of = np.full(n_items, -1, np.int64)
    work = new_work(n_items, step)
    for s in prange(SLOTS):
        item, end = first_item(work)
        while item < end:
            total = 0.0
            for j in range(cost[item]):
                total += np.sqrt(j)
            taken[item] += 1 + 0 * int(total < 0)
            slot_of[item] = s
            item, end = next_item(work, item, end)
    return taken, slot_of, work


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("n_items", [1_000, 37, 1])
def test_every_item_is_taken_once_in_runs(threads, n_items):
    before = nb.get_num_threads()
    nb.set_num_threads(min(threads, nb.config.NUMBA_NUM_THREADS))
    try:
        cost = np.random.default_rng(0).integers(0, 20_000, n_items)
        step = runs(n_items)
        taken, slot_of, work = _record(n_items, cost, step)
    finally:
        nb.set_num_threads(before)
    assert (taken == 1).all() and (slot_of >= 0).all()
    n_runs = -(-n_items // step)
    assert work[0] == (n_runs + SLOTS) * step  # each slot's last take finds the items gone
    # a run is consecutive items taken by one slot
    starts = np.arange(0, n_items, step)
    for first in starts:
        assert len(set(slot_of[first:first + step].tolist())) == 1


def test_runs():
    assert [runs(n) for n in (0, 1, 63, 64, 200, 491)] == [1, 1, 1, 1, 3, 7]


def test_no_items():
    taken, _, work = _record(0, np.zeros(0, np.int64), 1)
    assert len(taken) == 0 and work.tolist() == [SLOTS, 1, 0]


def _starts(pairs_per_block: list[int], kvol: int) -> np.ndarray:
    """Pair-list starts with each block's pairs spread over its kvol offsets."""
    per_group = []
    for p in pairs_per_block:
        split = np.full(kvol, p // kvol)
        split[: p % kvol] += 1
        per_group.extend(split)
    return np.concatenate([[0], np.cumsum(per_group)]).astype(np.int64)


def test_balanced_tasks_by_hand():
    # 6 blocks of 10, 10, 40, 10, 10, 20 pairs (100), 2 tasks: the first block starting at or past 50 pairs
    # opens task 1 (block 3 starts at 60)
    starts = _starts([10, 10, 40, 10, 10, 20], kvol=3)
    assert balanced_tasks(starts, 3, 2).tolist() == [0, 3, 6]
    # 4 tasks: targets 25, 50, 75 -> blocks starting at 60 (3), 60 (3), 80 (5)
    assert balanced_tasks(starts, 3, 4).tolist() == [0, 3, 3, 5, 6]
    # no pairs at all: every task starts at block 0 except the closing bound
    assert balanced_tasks(_starts([0, 0], 3), 3, 2).tolist() == [0, 0, 2]


def test_balanced_tasks_split_a_real_map_evenly():
    """On a cloud whose blocks' pairs vary 3x, every task's pairs are within one block of the mean."""
    rng = np.random.default_rng(1)
    n, kvol = 20_000, 27
    nbr = np.full((n, kvol), -1, np.int32)
    density = np.where(np.arange(n) < n // 2, 0.15, 0.45)  # the second half of the rows three times as dense
    hit = rng.random((n, kvol)) < density[:, None]
    nbr[hit] = rng.integers(0, n, hit.sum())
    starts, _, _ = kernels.block_pairs(nbr, kernels.ROWS_PER_BLOCK)
    block_pairs = np.diff(starts[::kvol])
    n_tasks = kernels.wgrad_tasks(n)
    bounds = balanced_tasks(starts, kvol, n_tasks)
    assert bounds[0] == 0 and bounds[-1] == len(block_pairs) and (np.diff(bounds) >= 0).all()
    task_pairs = np.array([block_pairs[bounds[t]:bounds[t + 1]].sum() for t in range(n_tasks)])
    assert task_pairs.sum() == hit.sum()
    assert np.abs(task_pairs - hit.sum() / n_tasks).max() <= block_pairs.max()
    equal_blocks = np.array_split(block_pairs, n_tasks)  # the split by block count, for contrast
    assert max(map(np.sum, equal_blocks)) > task_pairs.max()
