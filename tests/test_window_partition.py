"""pc3d.sparse.window against per-window / per-sample pure-Python references (DSVT sets, FlatFormer groups)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pc3d.sparse.window import dynamic_sets, flat_groups, num_windows, relative_to_window_centre, sort_by_window

Y_MAJOR, X_MAJOR = (1, 2, 0), (2, 1, 0)


def _window_and_local(cell, window, shift):
    return ([(c + h) // w for c, w, h in zip(cell, window, shift, strict=True)],
            [(c + h) % w for c, w, h in zip(cell, window, shift, strict=True)])


def _ordered(values, axes, serpentine):
    """Sort key of a cell: its indices along `axes`, slowest first; serpentine reverses an axis where the
    slower indices sum to an odd number."""
    key, parity = [], 0
    for a in axes:
        key.append(-values[a] if serpentine and parity % 2 else values[a])
        parity += values[a]
    return tuple(key)


def _windows(coords, window, shift, axes, serpentine=False):
    """{(batch, window key): [row, ...] sorted by position in the window}, one window at a time."""
    out: dict = {}
    for row, (b, *cell) in enumerate(coords.tolist()):
        win, local = _window_and_local(cell, window, shift)
        out.setdefault((b, _ordered(win, axes, serpentine)), []).append((_ordered(local, axes, serpentine), row))
    return {k: [r for _, r in sorted(v)] for k, v in sorted(out.items())}


def reference_sets(coords, window, shift, set_size, axes):
    rows = []
    for voxels in _windows(coords, window, shift, axes).values():
        n = len(voxels)
        s = -(-n // set_size)
        for j in range(s):
            rows.append([voxels[(j * set_size + k) * n // (s * set_size)] for k in range(set_size)])
    return rows


def reference_groups(coords, window, shift, group_size, axes):
    samples: dict = {}
    for (b, _), voxels in _windows(coords, window, shift, axes, serpentine=True).items():
        samples.setdefault(b, []).extend(voxels)
    rows = []
    for b in sorted(samples):
        tokens = samples[b]
        m, g = len(tokens), -(-len(tokens) // group_size)
        for j in range(g - 1):
            rows.append(tokens[j * group_size:(j + 1) * group_size])
        last = tokens[max(m - group_size, 0):]
        rows.append(last + [tokens[-1]] * (group_size - len(last)))
    return rows


def check_slots(slots, rows, n):
    """The table equals the reference rows; masks mark left-neighbour repeats; first = first occurrence."""
    k = slots.index.shape[1]
    assert slots.index.tolist() == rows
    want_mask = [[j == 0 or row[j] != row[j - 1] for j in range(k)] for row in rows]
    assert slots.key_mask.tolist() == want_mask
    first = {}
    for t, row in enumerate(rows):
        for j, r in enumerate(row):
            first.setdefault(r, t * k + j)
    assert slots.first.tolist() == [first[r] for r in range(n)]


@st.composite
def grids(draw, max_batch=3):
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 12)), draw(st.integers(1, 12)))
    window = tuple(draw(st.integers(1, 5)) for _ in shape)
    shift = tuple(draw(st.integers(0, w - 1)) for w in window)
    batch = draw(st.integers(1, max_batch))
    cells = draw(st.sets(st.tuples(st.integers(0, batch - 1), *(st.integers(0, s - 1) for s in shape)),
                         max_size=80))
    coords = torch.tensor(sorted(cells), dtype=torch.int32).reshape(-1, 4)
    perm = torch.from_numpy(np.random.default_rng(len(cells)).permutation(len(cells)))
    return coords[perm], shape, window, shift, batch


@settings(max_examples=150, deadline=None)
@given(grids(), st.integers(1, 7), st.sampled_from([Y_MAJOR, X_MAJOR]))
def test_dynamic_sets_equal_reference(grid, set_size, axes):
    coords, shape, window, shift, _ = grid
    slots = dynamic_sets(coords, shape, window, shift, set_size, axes)
    check_slots(slots, reference_sets(coords, window, shift, set_size, axes), len(coords))


@settings(max_examples=150, deadline=None)
@given(grids(), st.integers(1, 9), st.sampled_from([Y_MAJOR, X_MAJOR]))
def test_flat_groups_equal_reference(grid, group_size, axes):
    coords, shape, window, shift, batch = grid
    slots = flat_groups(coords, shape, window, shift, group_size, axes, batch)
    check_slots(slots, reference_groups(coords, window, shift, group_size, axes), len(coords))
    samples = coords[:, 0][slots.index]
    assert (samples == samples[:, :1]).all(), "a group reaches into another sample"


def _one_window(n: int, window=(1, 6, 6)) -> torch.Tensor:
    """n voxels of one 6 x 6 window (sample 0), shuffled."""
    cells = [(0, 0, i // 6, i % 6) for i in range(n)]
    coords = torch.tensor(cells, dtype=torch.int32)
    return coords[torch.randperm(n, generator=torch.Generator().manual_seed(n))]


@pytest.mark.parametrize("n", [1, 5, 10, 11, 21, 36])
def test_window_sizes_one_exactly_s_and_ks_plus_1(n):
    set_size = 5  # n = 1 (one voxel), 5 (exactly S), 11 and 21 (k * S + 1), 36 (a full window)
    coords = _one_window(n)
    slots = dynamic_sets(coords, (1, 6, 6), (1, 6, 6), (0, 0, 0), set_size, Y_MAJOR)
    assert slots.index.shape == (-(-n // set_size), set_size)
    assert set(slots.index.flatten().tolist()) == set(range(n))
    check_slots(slots, reference_sets(coords, (1, 6, 6), (0, 0, 0), set_size, Y_MAJOR), n)
    if n == set_size:
        assert slots.key_mask.all()


def test_one_voxel_window_masks_every_repeat():
    slots = dynamic_sets(_one_window(1), (1, 6, 6), (1, 6, 6), (0, 0, 0), 4, X_MAJOR)
    assert slots.index.tolist() == [[0, 0, 0, 0]]
    assert slots.key_mask.tolist() == [[True, False, False, False]]
    assert slots.first.tolist() == [0]


def test_empty_batches():
    empty = torch.zeros((0, 4), dtype=torch.int32)
    for slots in (dynamic_sets(empty, (1, 8, 8), (1, 4, 4), (0, 2, 2), 6, Y_MAJOR),
                  flat_groups(empty, (1, 8, 8), (1, 4, 4), (0, 2, 2), 6, X_MAJOR, 2)):
        assert slots.index.shape == (0, 6) and slots.first.shape == (0,)
    coords = torch.tensor([[2, 0, 1, 1], [2, 0, 7, 7], [0, 0, 3, 3]], dtype=torch.int32)  # sample 1 is empty
    check_slots(flat_groups(coords, (1, 8, 8), (1, 4, 4), (0, 0, 0), 2, X_MAJOR, 3),
                reference_groups(coords, (1, 4, 4), (0, 0, 0), 2, X_MAJOR), 3)


def test_shifted_windows_at_grid_edges():
    shape, window, shift = (1, 10, 10), (1, 4, 4), (0, 2, 2)
    assert num_windows(shape, window, shift) == [1, 3, 3]  # 10 cells shifted by 2 span 3 windows of 4
    corners = torch.tensor([[0, 0, 0, 0], [0, 0, 0, 9], [0, 0, 9, 0], [0, 0, 9, 9], [0, 0, 1, 1]], dtype=torch.int32)
    slots = dynamic_sets(corners, shape, window, shift, 3, Y_MAJOR)
    check_slots(slots, reference_sets(corners, window, shift, 3, Y_MAJOR), 5)
    assert slots.index.tolist() == [[0, 0, 4], [1, 1, 1], [2, 2, 2], [3, 3, 3]]  # (0, 0) and (1, 1) share a window


def test_serpentine_order_keeps_neighbours_adjacent():
    coords = torch.tensor([(0, 0, y, x) for y in range(6) for x in range(6)], dtype=torch.int32)
    order, _ = sort_by_window(coords, (1, 6, 6), (1, 3, 3), (0, 0, 0), (1, 2, 0), serpentine=True)
    cells = coords[order, 2:].long()
    steps = (cells[1:] - cells[:-1]).abs().sum(1)
    assert (steps[:8] == 1).all()  # inside the first window: a boustrophedon path
    assert cells[:3].tolist() == [[0, 0], [0, 1], [0, 2]] and cells[3:6].tolist() == [[1, 2], [1, 1], [1, 0]]
    assert cells[9:12].tolist() == [[0, 3], [0, 4], [0, 5]]  # the second window, along x


def test_group_of_a_sample_smaller_than_g_stays_inside_it():
    coords = torch.tensor([[0, 0, i, 0] for i in range(7)] + [[1, 0, 0, 0], [1, 0, 0, 1]], dtype=torch.int32)
    slots = flat_groups(coords, (1, 8, 2), (1, 4, 4), (0, 0, 0), 4, X_MAJOR, 2)
    assert (coords[slots.index[-1], 0] == 1).all()
    assert slots.key_mask[-1].tolist() == [True, True, False, False]
    assert slots.index[1].tolist() == [3, 4, 5, 6]  # sample 0's last group: its final 4 tokens


def test_offsets_from_the_window_centre_are_cell_centres():
    # in a 1 x 4 x 4 window, cell (y 0, x 0)'s centre is 1.5 cells before the window's centre along y and x;
    # cell (3, 1) is 1.5 after along y and 0.5 before along x; z (1 cell) is 0
    coords = torch.tensor([[0, 0, 0, 0], [0, 0, 3, 1], [0, 0, 5, 6]], dtype=torch.int32)
    rel = relative_to_window_centre(coords, (1, 4, 4), (0, 0, 0))
    assert rel.tolist() == [[0.0, -1.5, -1.5], [0.0, 1.5, -0.5], [0.0, -0.5, 0.5]]
    shifted = relative_to_window_centre(coords, (1, 4, 4), (0, 2, 2))  # cell 0 + 2 = position 2 of its window
    assert shifted[0].tolist() == [0.0, 0.5, 0.5]
